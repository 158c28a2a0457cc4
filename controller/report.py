"""Render a simulation run directory into a single self-contained ``report.html``.

Public API::

    render_report(run_dir) -> Path     # writes run_dir/report.html and returns its path
    ReportError                        # ValueError subclass; one-line "file: problem" message

Inputs (written by the simulator): ``summary.json``, ``timeseries.csv``, ``latency_hist.csv``
and ``config.toml``.  All plots are PNGs rendered with matplotlib's Agg canvas and embedded as
base64 ``data:`` URIs; CSS is inline; the page references no external address.

Long runs are downsampled for plotting to at most ``MAX_PLOT_POINTS`` bins (sums for counts
and costs, time-weighted means for rates and instance counts, max for p99); headline numbers
come from ``summary.json`` and the decisions table from the full-resolution time series.
"""
from __future__ import annotations

import base64
import html
import json
import math
import os
import re
import string
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd

from controller import report_plots

__all__ = ["ReportError", "render_report"]

MAX_PLOT_POINTS = 2000
MAX_DECISION_ROWS = 200
TEMPLATE_PATH = Path(__file__).with_name("report_template.html")

SUMMARY_NUMERIC = (
    "requests", "cost_usd", "iaas_usd", "faas_usd", "slo_ms", "slo_attainment_target",
    "slo_attainment", "p50_ms", "p95_ms", "p99_ms", "p999_ms", "faas_fraction", "dropped",
    "throttled", "cold_starts", "instance_hours", "launches", "wall_s", "duration_s", "mean_rps",
    "seed", "start_s",
)
SUMMARY_STRINGS = ("policy", "trace", "config_file", "spillway_version")
# Latency statistics are undefined for a run with no requests; allow null/NaN for these.
SUMMARY_NULLABLE = {"slo_attainment", "p50_ms", "p95_ms", "p99_ms", "p999_ms", "faas_fraction"}
PATHS = ("instance", "function_warm", "function_cold")

TS_COUNT_COLS = (
    "interval_s", "arrivals", "offered_rps", "capacity_rps", "instances_pending",
    "instances_ready", "instances_draining", "served_instance", "served_function_warm",
    "served_function_cold", "dropped", "throttled", "iaas_usd", "faas_usd", "slo_miss",
)
TS_REQUIRED = ("t_s", *TS_COUNT_COLS, "p50_ms", "p99_ms", "reason")
TS_NULLABLE = ("p50_ms", "p99_ms")
KIND_RE = re.compile(r"^n_(?P<type>.+)_(?P<market>[^_]+)$")
HIST_REQUIRED = ("lo_ms", "hi_ms", *PATHS)

# Aggregation when downsampling: sums for per-interval counts and costs, time-weighted means
# for rates and instance counts (gauges), max for p99.
_SUM_COLS = ("interval_s", "arrivals", "served_instance", "served_function_warm",
             "served_function_cold", "dropped", "throttled", "iaas_usd", "faas_usd", "slo_miss")
_GAUGE_COLS = ("offered_rps", "capacity_rps", "instances_pending", "instances_ready",
               "instances_draining")


class ReportError(ValueError):
    """An input of the run directory is missing or malformed (message: "<file>: <problem>")."""


def _err(path: Path, problem: str) -> ReportError:
    return ReportError(f"{path}: {' '.join(str(problem).split())}")


def _short(value, n: int = 40) -> str:
    s = repr(value)
    return s if len(s) <= n else s[: n - 3] + "..."


# --------------------------------------------------------------------------------- loading


def _load_summary(path: Path) -> dict:
    if not path.is_file():
        raise _err(path, "not found (is this a run directory?)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise _err(path, f"not UTF-8 text ({e.reason})") from None
    except json.JSONDecodeError as e:
        raise _err(path, f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    if not isinstance(data, dict):
        raise _err(path, f"expected a JSON object, got {type(data).__name__}")
    required = (*SUMMARY_STRINGS, *SUMMARY_NUMERIC, "trace_notes", "latency_by_path")
    missing = [k for k in required if k not in data]
    if missing:
        raise _err(path, f"missing required key(s): {', '.join(missing)}")
    for k in SUMMARY_STRINGS:
        if not isinstance(data[k], str):
            raise _err(path, f"key {k!r} must be a string, got {_short(data[k])}")
    for k in SUMMARY_NUMERIC:
        v = data[k]
        if v is None and k in SUMMARY_NULLABLE:
            data[k] = math.nan
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise _err(path, f"key {k!r} must be a number, got {_short(v)}")
        if not math.isfinite(v) and k not in SUMMARY_NULLABLE:
            raise _err(path, f"key {k!r} must be finite, got {v}")
    notes = data["trace_notes"]
    if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
        raise _err(path, "key 'trace_notes' must be a list of strings")
    lbp = data["latency_by_path"]
    if not isinstance(lbp, dict):
        raise _err(path, "key 'latency_by_path' must be an object")
    for name, stats in lbp.items():
        if not isinstance(stats, dict):
            raise _err(path, f"latency_by_path[{name!r}] must be an object")
        for k in ("requests", "p50_ms", "p99_ms"):
            v = stats.get(k)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise _err(path, f"latency_by_path[{name!r}][{k!r}] must be a number, "
                                 f"got {_short(v)}")
    return data


def _read_csv(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    """Read a CSV as strings and check the header; numeric conversion is done by the caller."""
    if not path.is_file():
        raise _err(path, "not found")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    except pd.errors.EmptyDataError:
        raise _err(path, "file is empty (no header)") from None
    except UnicodeDecodeError as e:
        raise _err(path, f"not UTF-8 text ({e.reason})") from None
    except (pd.errors.ParserError, ValueError) as e:
        raise _err(path, f"cannot parse CSV: {str(e).strip().splitlines()[-1]}") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise _err(path, f"missing column(s): {', '.join(missing)}")
    if df.columns.duplicated().any():
        dup = sorted(set(df.columns[df.columns.duplicated()]))
        raise _err(path, f"duplicate column(s): {', '.join(dup)}")
    if len(df) == 0:
        raise _err(path, "no data rows")
    return df


def _numeric(path: Path, df: pd.DataFrame, col: str, nullable: bool) -> pd.Series:
    raw = df[col].astype(str).str.strip()
    blank = raw.eq("") | raw.str.lower().isin(("nan", "na", "null", "none"))
    vals = pd.to_numeric(raw.where(~blank, "nan"), errors="coerce").astype("float64")
    bad = vals.isna() & ~blank
    if not nullable:
        bad |= blank
    if col != "hi_ms":  # an open-ended (inf) last histogram bin is fine
        bad |= np.isinf(vals)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        what = "empty value" if blank.iloc[i] else f"{_short(df[col].iloc[i])} is not a finite number"
        raise _err(path, f"line {i + 2}, column {col!r}: {what}")
    return vals


def _load_timeseries(path: Path) -> tuple[pd.DataFrame, list[tuple[str, str, str]]]:
    raw = _read_csv(path, TS_REQUIRED)
    kinds: list[tuple[str, str, str]] = []
    for c in raw.columns:
        m = KIND_RE.match(c)
        if m:
            kinds.append((c, m["type"], m["market"]))
    kinds.sort(key=lambda k: (k[1], k[2] != "on-demand", k[2]))
    out = {"t_s": _numeric(path, raw, "t_s", nullable=False)}
    for c in TS_COUNT_COLS:
        out[c] = _numeric(path, raw, c, nullable=False)
    for c, _, _ in kinds:
        out[c] = _numeric(path, raw, c, nullable=False)
    for c in TS_NULLABLE:
        out[c] = _numeric(path, raw, c, nullable=True)
    ts = pd.DataFrame(out)
    ts["reason"] = raw["reason"].astype(str).to_numpy(dtype=object)
    t = ts["t_s"].to_numpy()
    if len(t) > 1 and (np.diff(t) < 0).any():
        i = int(np.flatnonzero(np.diff(t) < 0)[0]) + 1
        raise _err(path, f"line {i + 2}: t_s goes backwards ({t[i - 1]:g} -> {t[i]:g})")
    neg = (ts[list(TS_COUNT_COLS)] < 0).any(axis=1).to_numpy()
    if neg.any():
        i = int(np.flatnonzero(neg)[0])
        col = next(c for c in TS_COUNT_COLS if ts[c].iloc[i] < 0)
        raise _err(path, f"line {i + 2}, column {col!r}: negative value {ts[col].iloc[i]:g}")
    ts["elapsed_s"] = ts["t_s"] - ts["t_s"].iloc[0]
    return ts, kinds


def _load_hist(path: Path) -> pd.DataFrame:
    raw = _read_csv(path, HIST_REQUIRED)
    hist = pd.DataFrame({c: _numeric(path, raw, c, nullable=False) for c in HIST_REQUIRED})
    lo, hi = hist["lo_ms"].to_numpy(), hist["hi_ms"].to_numpy()
    if (hi <= lo).any():
        i = int(np.flatnonzero(hi <= lo)[0])
        raise _err(path, f"line {i + 2}: hi_ms ({hi[i]:g}) must exceed lo_ms ({lo[i]:g})")
    if len(lo) > 1 and (np.diff(lo) <= 0).any():
        i = int(np.flatnonzero(np.diff(lo) <= 0)[0]) + 1
        raise _err(path, f"line {i + 2}: bins must be sorted by increasing lo_ms")
    for c in PATHS:
        if (hist[c] < 0).any():
            i = int(np.flatnonzero(hist[c].to_numpy() < 0)[0])
            raise _err(path, f"line {i + 2}, column {c!r}: negative count")
    return hist


def _load_config(path: Path) -> str:
    if not path.is_file():
        raise _err(path, "not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise _err(path, f"not UTF-8 text ({e.reason})") from None
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise _err(path, f"invalid TOML: {e}") from None
    return text


# ---------------------------------------------------------------------------- downsampling


def downsample(ts: pd.DataFrame, kinds: list[tuple[str, str, str]],
               max_points: int = MAX_PLOT_POINTS) -> pd.DataFrame:
    """Aggregate consecutive intervals into at most ``max_points`` bins for plotting.

    Counts and costs are summed, rates and instance counts are time-weighted means, p99 is the
    max and p50 the arrival-weighted mean over the bin.  An ``offered_rps_max`` column keeps
    the per-bin peak of the offered load.  Returns ``ts`` unchanged if it is small enough.
    """
    n = len(ts)
    if n <= max_points:
        return ts
    group = (np.arange(n) * max_points) // n
    dt = ts["interval_s"].to_numpy(float)
    w = pd.DataFrame({"g": group, "dt": dt})
    gauges = [*_GAUGE_COLS, *(c for c, _, _ in kinds)]
    for c in gauges:
        w[c] = ts[c].to_numpy(float) * dt
    arr = ts["arrivals"].to_numpy(float)
    p50 = ts["p50_ms"].to_numpy(float)
    has50 = np.isfinite(p50) & (arr > 0)
    w["p50_w"] = np.where(has50, p50 * arr, 0.0)
    w["p50_n"] = np.where(has50, arr, 0.0)
    sums = w.groupby("g", sort=True).sum()
    g = ts.assign(g=group).groupby("g", sort=True)
    out = pd.DataFrame({"t_s": g["t_s"].first(), "elapsed_s": g["elapsed_s"].first()})
    for c in _SUM_COLS:
        out[c] = g[c].sum()
    dts = sums["dt"].to_numpy()
    safe = np.where(dts > 0, dts, 1.0)
    for c in gauges:
        mean = g[c].mean().to_numpy()  # fallback for zero-length bins
        out[c] = np.where(dts > 0, sums[c].to_numpy() / safe, mean)
    out["offered_rps_max"] = g["offered_rps"].max()
    out["p99_ms"] = g["p99_ms"].max()  # NaN-skipping; NaN only when the whole bin is empty
    with np.errstate(invalid="ignore", divide="ignore"):
        out["p50_ms"] = np.where(sums["p50_n"] > 0, sums["p50_w"] / sums["p50_n"].where(
            sums["p50_n"] > 0, 1.0), g["p50_ms"].median())
    return out.reset_index(drop=True)


# ------------------------------------------------------------------------------ formatting


def _usd(x: float) -> str:
    if not math.isfinite(x):
        return "—"
    if abs(x) >= 100:
        return f"${x:,.0f}" if abs(x) >= 100_000 else f"${x:,.2f}"
    if abs(x) >= 1 or x == 0:
        return f"${x:,.2f}"
    return f"${x:.4f}"


def _ms(x: float) -> str:
    if x is None or not math.isfinite(x):
        return "—"
    return f"{x:,.0f} ms" if x >= 100 else f"{x:.3g} ms"


def _pct(x: float, digits: int = 2) -> str:
    if x is None or not math.isfinite(x):
        return "—"
    return f"{100 * x:.{digits}f}%"


def _int(x) -> str:
    return f"{int(x):,}"


def _duration(s: float) -> str:
    s = float(s)
    if s >= 86400:
        return f"{s / 86400:.2f} d"
    if s >= 3600:
        return f"{s / 3600:.2f} h"
    if s >= 60:
        return f"{s / 60:.1f} min"
    return f"{s:.1f} s"


def _clock(s: float) -> str:
    s = int(round(s))
    d, rem = divmod(s, 86400)
    h, rem = divmod(rem, 3600)
    m, sec = divmod(rem, 60)
    return (f"{d}d " if d else "") + f"{h:02d}:{m:02d}:{sec:02d}"


def _e(x) -> str:
    return html.escape(str(x), quote=True)


def _card(label: str, value: str, sub: str = "", cls: str = "") -> str:
    sub_html = f'<div class="sub">{sub}</div>' if sub else ""
    return (f'<div class="card {cls}"><div class="label">{_e(label)}</div>'
            f'<div class="value">{value}</div>{sub_html}</div>')


def _cards(s: dict) -> str:
    cards = []
    cards.append(_card("Total cost", _e(_usd(s["cost_usd"])),
                       f"IaaS {_e(_usd(s['iaas_usd']))} · FaaS {_e(_usd(s['faas_usd']))}"))
    per_m = s["cost_usd"] / s["requests"] * 1e6 if s["requests"] > 0 else math.nan
    cards.append(_card("Cost per million requests", _e(_usd(per_m)),
                       f"{_e(_int(s['requests']))} requests"))
    att, target = s["slo_attainment"], s["slo_attainment_target"]
    met = math.isfinite(att) and att >= target
    cards.append(_card("SLO attainment", _e(_pct(att, 3)),
                       f"target {_e(_pct(target, 3))} · {'met' if met else 'MISSED'}",
                       "good" if met else "bad"))
    p99, slo = s["p99_ms"], s["slo_ms"]
    p99_ok = math.isfinite(p99) and p99 <= slo
    cards.append(_card("p99 latency", _e(_ms(p99)),
                       f"SLO {_e(_ms(slo))} · p50 {_e(_ms(s['p50_ms']))} · "
                       f"p99.9 {_e(_ms(s['p999_ms']))}",
                       "good" if p99_ok else "bad"))
    cards.append(_card("Function share", _e(_pct(s["faas_fraction"], 1)),
                       f"{_e(_int(s['cold_starts']))} cold starts"))
    lost_cls = "bad" if s["dropped"] > 0 else ("warn" if s["throttled"] > 0 else "good")
    cards.append(_card("Dropped", _e(_int(s["dropped"])),
                       f"{_e(_int(s['throttled']))} throttled", lost_cls))
    cards.append(_card("Instance-hours", _e(f"{s['instance_hours']:,.1f}"),
                       f"over {_e(_duration(s['duration_s']))}"))
    mean_rps = f"{s['mean_rps']:,.1f}"
    cards.append(_card("Launches", _e(_int(s["launches"])), f"mean load {_e(mean_rps)} req/s"))
    return "\n".join(cards)


_NUMBER_RE = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def reason_kind(reason: str) -> str:
    """A reason with its numbers masked: "scale out 3 -> 5" and "scale out 5 -> 6" are one kind."""
    return _NUMBER_RE.sub("#", reason)


def _decisions(ts: pd.DataFrame) -> tuple[str, str]:
    """Rows where the decision's reason changes, ignoring changes in numbers only.

    Reasons typically embed the current forecast ("1178 req/s ... -> 1"), so an exact
    comparison would list nearly every interval; masking the numbers keeps one row per
    change of what the controller is doing, with how long that lasted.
    """
    reason = ts["reason"].to_numpy(dtype=object)
    kinds = np.array([reason_kind(r) for r in reason], dtype=object)
    changed = np.ones(len(reason), dtype=bool)
    changed[1:] = kinds[1:] != kinds[:-1]
    idx = np.flatnonzero(changed)
    total = len(idx)
    n_exact = int(1 + (reason[1:] != reason[:-1]).sum()) if len(reason) else 0
    shown = idx[:MAX_DECISION_ROWS]
    t_end = float(ts["elapsed_s"].iloc[-1] + ts["interval_s"].iloc[-1])
    starts = ts["elapsed_s"].to_numpy(float)
    until = np.append(starts[idx[1:]], t_end)
    rows = []
    cols = ("elapsed_s", "instances_ready", "instances_pending", "instances_draining",
            "offered_rps", "capacity_rps")
    vals = {c: ts[c].to_numpy() for c in cols}
    for k, i in enumerate(shown):
        r = reason[i] if reason[i] != "" else "(no reason)"
        rows.append(
            "<tr>"
            f"<td class=num>{_e(_clock(vals['elapsed_s'][i]))}</td>"
            f"<td class=num>{_e(_duration(until[k] - starts[i]))}</td>"
            f"<td class=num>{int(vals['instances_ready'][i])}</td>"
            f"<td class=num>{int(vals['instances_pending'][i])}</td>"
            f"<td class=num>{int(vals['instances_draining'][i])}</td>"
            f"<td class=num>{vals['offered_rps'][i]:,.1f}</td>"
            f"<td class=num>{vals['capacity_rps'][i]:,.1f}</td>"
            f"<td class=reason>{_e(r)}</td></tr>")
    note = (f"{total:,} change(s) of the kind of decision over {len(ts):,} intervals "
            f"({n_exact:,} counting changes in numbers only).")
    if total > len(shown):
        note += (f" <strong>Truncated:</strong> showing the first {len(shown):,}; "
                 f"{total - len(shown):,} more are in timeseries.csv.")
    return "\n".join(rows), note


def _share(n: float, total: float) -> str:
    if not total:
        return "—"
    f = n / total
    return "<0.1%" if 0 < f < 0.001 else _pct(f, 1)


def _path_table(s: dict, hist: pd.DataFrame) -> str:
    lbp = s["latency_by_path"]
    names = [p for p in PATHS if p in lbp] + sorted(k for k in lbp if k not in PATHS)
    total_req = sum((lbp[p].get("requests") or 0) for p in names)
    slo = s["slo_ms"]
    # Share of each path's requests within the SLO, from the histogram (bins entirely <= SLO).
    rows = []
    for p in names:
        st = lbp[p]
        n = st.get("requests") or 0
        p50 = st.get("p50_ms")
        p99 = st.get("p99_ms")
        p50 = math.nan if p50 is None else float(p50)
        p99 = math.nan if p99 is None else float(p99)
        within = "—"
        if p in hist.columns and hist[p].sum() > 0:
            ok = hist.loc[hist["hi_ms"] <= slo, p].sum()
            within = _pct(ok / hist[p].sum(), 2)
        cls = "bad" if math.isfinite(p99) and p99 > slo else ""
        rows.append(
            f"<tr><td>{_e(p.replace('_', ' '))}</td>"
            f"<td class=num>{_int(n)}</td>"
            f"<td class=num>{_e(_share(n, total_req))}</td>"
            f"<td class=num>{_e(_ms(p50))}</td>"
            f"<td class='num {cls}'>{_e(_ms(p99))}</td>"
            f"<td class=num>{_e(within)}</td></tr>")
    return "\n".join(rows)


def _img(png: bytes, alt: str) -> str:
    b64 = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{b64}" alt="{_e(alt)}">'


# ---------------------------------------------------------------------------------- render


def render_report(run_dir: str | os.PathLike) -> Path:
    """Read the run directory and write ``run_dir/report.html``; return its path.

    Raises ``ReportError`` (a ``ValueError``) with a one-line ``"<file>: <problem>"`` message
    when an input is missing or malformed.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise _err(run, "no such directory (is this a run directory?)")
    summary = _load_summary(run / "summary.json")
    ts, kinds = _load_timeseries(run / "timeseries.csv")
    hist = _load_hist(run / "latency_hist.csv")
    config_text = _load_config(run / "config.toml")

    plot_ts = downsample(ts, kinds)
    span = float(ts["elapsed_s"].iloc[-1] + ts["interval_s"].iloc[-1])
    tx = report_plots.time_axis(span)
    slo = float(summary["slo_ms"])
    images = {
        "img_load": _img(report_plots.plot_load(plot_ts, tx), "offered load vs capacity"),
        "img_cost": _img(report_plots.plot_cost(plot_ts, tx), "cumulative cost"),
        "img_latency": _img(report_plots.plot_latency_time(plot_ts, tx, slo),
                            "per-interval latency"),
        "img_cdf": _img(report_plots.plot_latency_cdf(
            hist, slo, summary["slo_attainment_target"]), "latency CDF by path"),
        "img_fleet": _img(report_plots.plot_fleet(plot_ts, tx, kinds), "fleet composition"),
    }
    decision_rows, decision_note = _decisions(ts)
    notes = summary["trace_notes"]
    notes_html = ("<ul class=notes>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>"
                  if notes else "<p class=muted>No trace notes.</p>")
    downsample_note = (f"Plots aggregate {len(ts):,} intervals into {len(plot_ts):,} bins "
                       "(sums for counts and costs, time-weighted means for rates and "
                       "instance counts, max for p99)." if len(plot_ts) < len(ts) else
                       f"{len(ts):,} controller intervals.")
    start = summary["start_s"]
    meta = [
        f"trace <b>{_e(summary['trace'])}</b>",
        f"{_e(_duration(summary['duration_s']))} from t={start:g} s",
        f"{_e(_int(summary['requests']))} requests",
        f"seed {_e(_int(summary['seed']))}",
        f"config {_e(summary['config_file'])}",
        f"simulated in {summary['wall_s']:.1f} s",
        f"spillway {_e(summary['spillway_version'])}",
    ]
    fields = {
        "title": _e(f"Spillway run: {summary['policy']} on {summary['trace']}"),
        "policy": _e(summary["policy"]),
        "trace": _e(summary["trace"]),
        "meta": " · ".join(meta),
        "cards": _cards(summary),
        "trace_notes": notes_html,
        "downsample_note": _e(downsample_note),
        "decision_rows": decision_rows,
        "decision_note": decision_note,
        "path_rows": _path_table(summary, hist),
        "slo_ms": _e(_ms(slo)),
        "config_file": _e(summary["config_file"]),
        "config_text": _e(config_text),
        "run_dir": _e(str(run)),
        **images,
    }
    page = string.Template(TEMPLATE_PATH.read_text(encoding="utf-8")).substitute(fields)
    out = run / "report.html"
    tmp = run / ".report.html.tmp"
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, out)
    return out
