"""Traces -> forecaster series (req/s per step, NaN where masked) and train/test splits.

``step_series(trace, step_s)`` turns any trace into the series a forecaster sees: the mean
rate in req/s of each consecutive ``step_s`` window from t=0, with a step set to NaN when any
part of it overlaps a masked interval (a half-masked step reads low because masked spans are
stored as zeros, so it is not a usable actual either). A partial last step is dropped.

``train_test_split(series, ...)`` cuts it into a training prefix and a held-out test suffix.
Each multi-day trace has a default split (``DEFAULT_SPLITS``) with the reason for it, and a
default step (``DEFAULT_STEP_S``) matching the trace's resolution.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DAY_S = 86400.0


@dataclass(frozen=True)
class Split:
    """How to cut a trace: ``train_days`` of wall time from t=0 (or ``train_until_s``)."""
    train_days: float | None = None
    train_until_s: float | None = None
    reason: str = ""

    def train_end(self, n_steps: int, step_s: float) -> int:
        until = self.train_until_s if self.train_until_s is not None else self.train_days * DAY_S
        return int(min(n_steps, math.floor(until / step_s + 1e-9)))


# Per-trace default splits. Train = first part, test = the rest (held out, never seen at fit).
DEFAULT_SPLITS: dict[str, Split] = {
    "twitter": Split(train_days=14.0, reason=(
        "22 days: two full weeks to learn daily + weekly shape, ~8 days held out (includes a "
        "full week of days-of-week)")),
    "nasa": Split(train_until_s=2381545.0, reason=(
        "July 1995 log (t < 2,381,545 s, the splice point) trains, the August log tests: the "
        "splice drops 3.4 days of wall time, so no window straddles it and no seasonal "
        "lag crosses into the other month; August also holds the 37.7 h outage (masked)")),
    "wikipedia": Split(train_days=21.0, reason=(
        "31 days hourly: three full weeks train (weekly cycle seen 3x), last 10 days test "
        "(about 1.4 weeks)")),
    "default": Split(train_days=21.0, reason="alias of wikipedia"),
    "servegen-m-large": Split(train_days=10.0, reason=(
        "14 days of 10-min rates: 10 days train (1,440 steps), 4 days test")),
    "servegen-m-mid": Split(train_days=10.0, reason=(
        "14 days of 10-min rates: 10 days train, 4 days test (the 14 h gap on day 4 is "
        "masked and sits in the training part)")),
    "servegen-m-small": Split(train_days=10.0, reason=(
        "14 days of 10-min rates: 10 days train, 4 days test")),
}

# Natural step per trace: the raw resolution when it is coarse, else one minute.
DEFAULT_STEP_S: dict[str, float] = {
    "twitter": 60.0,
    "nasa": 60.0,
    "wikipedia": 3600.0,
    "default": 3600.0,
    "servegen-m-large": 600.0,
    "servegen-m-mid": 600.0,
    "servegen-m-small": 600.0,
}

MULTI_DAY_TRACES: tuple[str, ...] = (
    "twitter", "nasa", "wikipedia", "servegen-m-large", "servegen-m-mid", "servegen-m-small",
)


def default_step_s(trace_name: str, trace=None) -> float:
    """The default forecasting step for a trace: the table above, else max(60 s, trace bin)."""
    key = str(trace_name).strip().lower()
    if key in DEFAULT_STEP_S:
        return DEFAULT_STEP_S[key]
    bin_s = getattr(trace, "bin_s", None) if trace is not None else None
    return float(max(60.0, bin_s or 60.0))


PEAK_WINDOW_S = 1.0   # the peak within a step is the highest rate over any whole second of it


def step_series(trace, step_s: float, target: str = "peak") -> np.ndarray:
    """req/s per ``step_s`` step from t=0; NaN for steps overlapping a masked interval.

    ``target="peak"`` (what the planner needs: capacity must cover the busiest moment of a
    step) gives the highest 1-second rate within each step, where the trace resolves seconds
    (Twitter, NASA, per-request traces); a coarser trace (Wikipedia hourly, ServeGen 10-minute
    rates) has no sub-step information, so its peak is its step mean. E.g. a minute of Twitter
    with 3,816 requests has a mean of 63.6 req/s and a 1-second peak near 90 req/s.
    ``target="mean"`` gives the mean rate of each step. Only full steps are returned.
    """
    step_s = float(step_s)
    if not math.isfinite(step_s) or step_s <= 0:
        raise ValueError(f"step_s must be positive, got {step_s}")
    if target not in ("peak", "mean"):
        raise ValueError(f"target must be 'peak' or 'mean', got {target!r}")
    n = int(math.floor(trace.duration_s / step_s + 1e-9))
    if n < 1:
        raise ValueError(f"{trace.name}: duration {trace.duration_s:g} s is shorter than one step "
                         f"of {step_s:g} s")
    sub = int(round(step_s / PEAK_WINDOW_S))
    resolves_seconds = trace.bin_s is None or trace.bin_s <= PEAK_WINDOW_S
    if target == "peak" and resolves_seconds and sub > 1 and abs(sub * PEAK_WINDOW_S - step_s) < 1e-9:
        edges = np.arange(n * sub + 1, dtype=np.float64) * PEAK_WINDOW_S
        per_second = np.asarray(trace.counts_in(edges), dtype=np.float64) / PEAK_WINDOW_S
        rates = per_second.reshape(n, sub).max(axis=1)
    else:
        edges = np.arange(n + 1, dtype=np.float64) * step_s
        rates = np.asarray(trace.counts_in(edges), dtype=np.float64) / step_s
    for a, b in getattr(trace, "masked", ()):
        i0 = int(math.floor(a / step_s + 1e-9))
        i1 = int(math.ceil(b / step_s - 1e-9))
        if i1 > i0:
            rates[max(0, i0):min(n, i1)] = np.nan
    return rates


def split_for(trace_name: str) -> Split | None:
    return DEFAULT_SPLITS.get(str(trace_name).strip().lower())


def train_test_split(series: np.ndarray, train_fraction: float | None = None,
                     train_days: float | None = None, step_s: float | None = None,
                     trace_name: str | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """Returns (train, test, train_end) with ``train = series[:train_end]``.

    Precedence: ``train_days`` (needs ``step_s``), then ``train_fraction``, then the default
    split of ``trace_name`` (needs ``step_s``), then 70 %. Both parts are kept non-empty.
    """
    series = np.asarray(series, dtype=np.float64)
    n = series.size
    if n < 2:
        raise ValueError("series needs at least 2 steps to split")
    if train_days is not None:
        if step_s is None:
            raise ValueError("train_days needs step_s")
        end = Split(train_days=float(train_days)).train_end(n, float(step_s))
    elif train_fraction is not None:
        if not 0.0 < float(train_fraction) < 1.0:
            raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
        end = int(round(n * float(train_fraction)))
    elif trace_name is not None and split_for(trace_name) is not None and step_s is not None:
        end = split_for(trace_name).train_end(n, float(step_s))
    else:
        end = int(round(n * 0.7))
    end = min(max(end, 1), n - 1)
    return series[:end], series[end:], end


def splits_table() -> list[dict]:
    """The default splits as rows (trace, step_s, train, reason) for docs and reports."""
    rows = []
    for name, sp in DEFAULT_SPLITS.items():
        if name == "default":
            continue
        train = (f"first {sp.train_days:g} days" if sp.train_days is not None
                 else f"t < {sp.train_until_s:,.0f} s")
        rows.append({"trace": name, "step_s": DEFAULT_STEP_S.get(name), "train": train,
                     "reason": sp.reason})
    return rows
