"""Summary statistics and a rate plot for one trace (used by `spillway traces show`).

Statistics follow ../shared/traces/SOURCES.md so numbers can be checked against it:
1-min peak/mean = largest 1-minute rate / mean; diurnal ratio = hourly means grouped by
(hour index mod 24), max / min. A partial last minute or hour is left out of both (a 16 s
tail would otherwise count as a full minute).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from traces.model import Trace

MINUTE_S = 60.0
HOUR_S = 3600.0
DAY_S = 86400.0


def _full_window_rates(trace: Trace, window_s: float) -> np.ndarray:
    rates = trace.rate_series(window_s)
    n_full = int(trace.duration_s // window_s + 1e-9)
    return rates[:n_full] if n_full > 0 else rates


def diurnal_ratio(trace: Trace) -> float | None:
    """max/min of mean hourly rate by hour-of-day; None if under 2 days or a zero hour mean."""
    if trace.duration_s < 2 * DAY_S:
        return None
    hourly = _full_window_rates(trace, HOUR_S)
    hour_of_day = np.arange(hourly.size) % 24
    means = np.bincount(hour_of_day, weights=hourly, minlength=24) / np.bincount(hour_of_day, minlength=24)
    return float(means.max() / means.min()) if means.min() > 0 else None


def summarize(trace: Trace) -> dict:
    per_min = _full_window_rates(trace, MINUTE_S)
    mean_rps = trace.mean_rps()
    mean_min = float(per_min.mean())
    ratio = diurnal_ratio(trace)
    return {
        "name": trace.name,
        "source": trace.source,
        "licence": trace.licence,
        "start": trace.start,
        "duration_s": trace.duration_s,
        "kind": "counts" if trace.counts is not None else "per-request",
        "resolution_s": trace.bin_s,
        "counts_are_rates": trace.counts_are_rates,
        "requests": trace.expected_requests(),
        "mean_rps": mean_rps,
        "peak_1min_rps": float(per_min.max()),
        "peak_to_mean_1min": float(per_min.max() / mean_min) if mean_min > 0 else None,
        "cv_1min": float(per_min.std() / mean_min) if mean_min > 0 else None,
        "p99_1min_rps": float(np.percentile(per_min, 99)),
        "diurnal_ratio": ratio,
        "masked_s": trace.masked_s(),
        "masked_intervals": len(trace.masked),
        "notes": list(trace.notes),
    }


def _auto_bin_s(duration_s: float) -> float:
    # Aim for a few hundred to a few thousand points: 1 day at 1 min = 1,440 points;
    # 22 days at 10 min = 3,168; 58 days hourly = 1,405.
    if duration_s <= 2 * DAY_S:
        return MINUTE_S
    if duration_s <= 30 * DAY_S:
        return 600.0
    return HOUR_S


def plot_rate(trace: Trace, png_path, bin_s: float | None = None) -> Path:
    """Rate over time as a PNG; masked intervals shaded. Returns the path written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bin_s = float(bin_s) if bin_s else _auto_bin_s(trace.duration_s)
    rates = trace.rate_series(bin_s)
    edges = np.minimum(np.arange(rates.size + 1) * bin_s, trace.duration_s)
    if trace.duration_s > 2 * DAY_S:
        unit, scale = "days", DAY_S
    elif trace.duration_s > 2 * HOUR_S:
        unit, scale = "hours", HOUR_S
    else:
        unit, scale = "minutes", MINUTE_S
    fig, ax = plt.subplots(figsize=(11, 3.8), dpi=110)
    ax.stairs(rates, edges / scale, color="tab:blue", linewidth=0.8, label=f"rate per {bin_s:g} s")
    for i, (a, b) in enumerate(trace.masked):
        ax.axvspan(a / scale, b / scale, color="tab:red", alpha=0.2, linewidth=0,
                   label="masked (data gap)" if i == 0 else None)
    ax.axhline(trace.mean_rps(), color="gray", linestyle="--", linewidth=0.8, label="mean")
    ax.set_xlabel(f"time since start ({unit})" + (f", t=0 at {trace.start}" if trace.start else ""))
    ax.set_ylabel("requests per second (req/s)")
    ax.set_title(f"{trace.name}: mean {trace.mean_rps():,.4g} req/s over {_fmt_duration(trace.duration_s)}")
    ax.set_xlim(0, trace.duration_s / scale)
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path)
    plt.close(fig)
    return png_path


def _fmt_duration(s: float) -> str:
    if s >= 2 * DAY_S:
        return f"{s / DAY_S:.1f} days"
    if s >= 2 * HOUR_S:
        return f"{s / HOUR_S:.1f} h"
    return f"{s / MINUTE_S:.0f} min" if s >= 120 else f"{math.ceil(s)} s"
