"""Rolling-origin backtests of forecasters, band plots, and the all-models x all-traces table.

CLI semantics (for the lead wiring ``spillway forecast ...``)
------------------------------------------------------------
``spillway forecast backtest --trace NAME --model NAME --horizon 10m --step 1m
  [--train-days D | --train-fraction F] [--max-origins N] [--refit-every 1d] [--out DIR]``

  1. ``trace = traces.registry.load_trace(NAME)``; ``step_s`` = ``--step`` (default:
     ``series.default_step_s(NAME, trace)``: 60 s for Twitter/NASA, 600 s for ServeGen, 3600 s
     for Wikipedia); ``series = series.step_series(trace, step_s, target)`` (NaN on masked
     steps; target "peak": the highest 1-second rate of each step, the default, or "mean").
  2. ``train_end`` = ``series.train_test_split(series, train_fraction, train_days, step_s,
     trace_name=NAME)[2]`` (per-trace defaults in ``series.DEFAULT_SPLITS``).
  3. ``horizon_steps = ceil(horizon_s / step_s)``; model from ``predictor.registry`` by NAME
     (``factory(step_s)``).
  4. ``res = backtest(series, step_s, model, train_end, horizon_steps, max_origins=...,
     refit_every_steps=...)``: fit on ``series[:train_end]`` only, then for each origin t in
     the test part: ``predict(H)`` for steps t..t+H-1, then ``update`` with step t (one step
     per call, as the controller does each tick). Origins are every ``stride``-th step
     (stride = ceil(test steps / max_origins)); all steps are still fed through ``update``.
     The model never receives a step before it is due.
  5. Write ``res.summary()`` as ``backtest.json`` (and ``res.per_horizon_frame()`` as
     ``per_horizon.csv``) and ``plot_bands(res, DIR/"bands.png")``; print ``res.summary()``
     (MAE, MASE vs seasonal naive (1-day period; lag-1 if a day does not fit), pinball loss
     for each quantile, coverage of each quantile, seconds per update / predict, fit time).

``spillway forecast compare [--traces a,b] [--models x,y] [--horizons 1m,5m,15m]
  [--max-origins N] [--out DIR]``
  ``compare(traces, models, horizons_s, max_origins, out_dir, progress=print)``: every
  model on every multi-day trace (``series.MULTI_DAY_TRACES``) with its default step and
  split; one row per (trace, model) in ``compare.csv`` and ``compare.md``; a failing model
  gives a row with ``error`` set instead of aborting the run.

Metrics
-------
For origin t and horizon step k (1-based; k=1 is the step right after the last observed one)
the forecast targets ``series[t+k-1]``. Pairs whose actual is NaN (masked) or beyond the end
are skipped. ``coverage(q)`` = fraction of actuals <= predicted q-quantile (so p90 should read
0.9). ``mase`` = MAE(p50) / MAE(seasonal naive) over the same (origin, k) pairs, where seasonal
naive predicts ``series[t+k-1 - P*ceil(k/P)]`` with P one day of steps (forward-filled over
masked steps, using only data before t). ``pinball[q]`` = mean pinball loss in req/s.
"""
from __future__ import annotations

import json
import functools
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from predictor.base import Forecaster

DAY_S = 86400.0
DEFAULT_QUANTILES = (0.5, 0.9, 0.99)


# ---------------------------------------------------------------------- helpers
def season_steps_for(step_s: float, n_train: int) -> int:
    """Steps in one day, or 1 (lag-1 naive) when a day is not a whole number of steps >= 2 or
    the training part is shorter than a day."""
    p = DAY_S / float(step_s)
    if abs(p - round(p)) < 1e-6 and round(p) >= 2 and n_train >= round(p):
        return int(round(p))
    return 1


def _ffill_past(x: np.ndarray) -> np.ndarray:
    bad = np.isnan(x)
    if not bad.any():
        return x.copy()
    idx = np.where(~bad, np.arange(x.size), 0)
    np.maximum.accumulate(idx, out=idx)
    out = x[idx]
    out[: int(np.argmax(~bad)) if (~bad).any() else x.size] = np.nan
    return out


def pinball(actual: np.ndarray, pred: np.ndarray, q: float) -> np.ndarray:
    d = actual - pred
    return np.maximum(q * d, (q - 1.0) * d)


def _qname(q: float) -> str:
    return f"p{q * 100:g}".replace(".", "_")


def _fmt_s(seconds: float) -> str:
    if seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    if seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"


# ---------------------------------------------------------------------- result
@dataclass
class BacktestResult:
    model: str
    step_s: float
    train_end: int
    horizon_steps: int
    quantiles: tuple[float, ...]
    season_steps: int
    origins: np.ndarray            # [N] origin indices t (model had seen series[:t])
    actuals: np.ndarray            # [N, H] series[t+k-1], NaN if masked/beyond the end
    preds: np.ndarray              # [N, H, Q]
    naive: np.ndarray              # [N, H] seasonal naive
    fit_s: float
    update_s: np.ndarray           # per update call (one step each)
    predict_s: np.ndarray          # per predict call
    refit_s: list = field(default_factory=list)
    reasons: dict = field(default_factory=dict)   # reason -> count (last 200 distinct kept)
    fit_reason: str = ""
    series: np.ndarray | None = field(default=None, repr=False)
    trace: str = ""

    # ---- metrics
    def _mask(self) -> np.ndarray:
        return ~np.isnan(self.actuals)

    def _metrics(self, sel: np.ndarray) -> dict:
        a = self.actuals[sel]
        out: dict = {"n": int(a.size)}
        if a.size == 0:
            return out
        i50 = self._q_index(0.5)
        p = self.preds[sel]                     # [n, Q]
        nv = self.naive[sel]
        if i50 is not None:
            mae = float(np.mean(np.abs(p[:, i50] - a)))
            out["mae"] = mae
        ok = ~np.isnan(nv)
        nmae = float(np.mean(np.abs(nv[ok] - a[ok]))) if ok.any() else math.nan
        out["naive_mae"] = nmae
        if i50 is not None:
            mae_ok = float(np.mean(np.abs(p[ok, i50] - a[ok]))) if ok.any() else math.nan
            out["mase"] = mae_ok / nmae if nmae > 0 else (0.0 if mae_ok == 0 else math.inf)
        for j, q in enumerate(self.quantiles):
            out[f"pinball_{_qname(q)}"] = float(np.mean(pinball(a, p[:, j], q)))
            out[f"coverage_{_qname(q)}"] = float(np.mean(a <= p[:, j]))
        out["mean_actual"] = float(np.mean(a))
        return out

    def _q_index(self, q: float):
        for j, x in enumerate(self.quantiles):
            if abs(x - q) < 1e-9:
                return j
        return None

    @property
    def overall(self) -> dict:
        return self._metrics(self._mask())

    def at_horizon(self, k: int) -> dict:
        """Metrics for horizon step k (1-based)."""
        m = self._mask()
        sel = np.zeros_like(m)
        sel[:, k - 1] = m[:, k - 1]
        return self._metrics(sel)

    def per_horizon(self) -> list[dict]:
        return [{"k": k, "lead_s": k * self.step_s, **self.at_horizon(k)}
                for k in range(1, self.horizon_steps + 1)]

    def per_horizon_frame(self):
        import pandas as pd
        return pd.DataFrame(self.per_horizon())

    @property
    def seconds_per_update(self) -> float:
        return float(np.mean(self.update_s)) if len(self.update_s) else math.nan

    @property
    def seconds_per_predict(self) -> float:
        return float(np.mean(self.predict_s)) if len(self.predict_s) else math.nan

    def summary(self) -> dict:
        ov = self.overall
        return {
            "trace": self.trace, "model": self.model, "step_s": self.step_s,
            "train_steps": self.train_end,
            "test_steps": None if self.series is None else int(self.series.size - self.train_end),
            "origins": int(self.origins.size), "horizon_steps": self.horizon_steps,
            "season_steps": self.season_steps, "quantiles": list(self.quantiles),
            **{k: v for k, v in ov.items()},
            "seconds_per_update": self.seconds_per_update,
            "seconds_per_predict": self.seconds_per_predict,
            "p99_seconds_update_plus_predict": (
                float(np.percentile(self.update_s[self.origins - self.train_end] + self.predict_s, 99))
                if self.predict_s.size else math.nan),
            "fit_s": self.fit_s, "refits": len(self.refit_s),
            "refit_s_total": float(sum(self.refit_s)),
            "fit_reason": self.fit_reason,
            "reasons": dict(sorted(self.reasons.items(), key=lambda kv: -kv[1])[:10]),
            "per_horizon": self.per_horizon(),
        }

    def write(self, out_dir: str | Path) -> Path:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "backtest.json").write_text(json.dumps(_jsonable(self.summary()), indent=2))
        self.per_horizon_frame().to_csv(out / "per_horizon.csv", index=False)
        return out


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return x if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


# ---------------------------------------------------------------------- backtest
def backtest(series: np.ndarray, step_s: float, model: Forecaster, train_end: int,
             horizon_steps: int, quantiles: Sequence[float] = DEFAULT_QUANTILES,
             refit_every_steps: int | None = None, max_origins: int | None = None,
             season_steps: int | None = None, trace: str = "",
             progress: Callable[[str], None] | None = None) -> BacktestResult:
    """Rolling-origin backtest on series[train_end:] (see the module docstring).

    The model gets ``fit(series[:train_end])`` (copies, never a view of the full series), then,
    for each test step t: if t is an origin, ``predict(horizon_steps, quantiles)``; then
    ``update(series[t:t+1])``. With ``refit_every_steps`` it is re-fitted on ``series[:t]``
    every that many test steps (timed separately, not in update/predict times).
    """
    series = np.asarray(series, dtype=np.float64).ravel()
    n = series.size
    train_end = int(train_end)
    H = int(horizon_steps)
    if not 0 < train_end < n:
        raise ValueError(f"train_end must be in (0, {n}), got {train_end}")
    if H < 1:
        raise ValueError(f"horizon_steps must be >= 1, got {H}")
    quantiles = tuple(float(q) for q in quantiles)
    P = int(season_steps) if season_steps else season_steps_for(step_s, train_end)
    n_test = n - train_end
    stride = 1 if not max_origins else max(1, math.ceil(n_test / int(max_origins)))
    origins = np.arange(train_end, n, stride)
    is_origin = np.zeros(n, bool)
    is_origin[origins] = True

    t0 = time.perf_counter()
    model.fit(series[:train_end].copy(), float(step_s))
    fit_s = time.perf_counter() - t0
    fit_reason = str(getattr(model, "reason", ""))
    if progress:
        progress(f"fitted {getattr(model, 'name', type(model).__name__)} on {train_end} steps "
                 f"in {fit_s:.1f} s")

    preds = np.full((origins.size, H, len(quantiles)), np.nan)
    upd = np.empty(n_test)
    prd = np.empty(origins.size)
    refit_s: list[float] = []
    reasons: dict[str, int] = {}
    oi = 0
    last_report = time.perf_counter()
    for t in range(train_end, n):
        if refit_every_steps and t > train_end and (t - train_end) % int(refit_every_steps) == 0:
            r0 = time.perf_counter()
            model.fit(series[:t].copy(), float(step_s))
            refit_s.append(time.perf_counter() - r0)
        if is_origin[t]:
            p0 = time.perf_counter()
            out = model.predict(H, quantiles)
            prd[oi] = time.perf_counter() - p0
            out = np.asarray(out, dtype=np.float64)
            if out.shape != (H, len(quantiles)):
                raise ValueError(f"{getattr(model, 'name', model)}.predict returned shape "
                                 f"{out.shape}, expected {(H, len(quantiles))}")
            preds[oi] = out
            r = str(getattr(model, "reason", ""))
            if r in reasons or len(reasons) < 200:
                reasons[r] = reasons.get(r, 0) + 1
            oi += 1
        u0 = time.perf_counter()
        model.update(series[t:t + 1].copy())
        upd[t - train_end] = time.perf_counter() - u0
        if progress and time.perf_counter() - last_report > 10:
            last_report = time.perf_counter()
            progress(f"  step {t - train_end}/{n_test}")

    # actuals and seasonal naive (only data before each origin)
    idx = origins[:, None] + np.arange(H)[None, :]
    inside = idx < n
    actuals = np.full(idx.shape, np.nan)
    actuals[inside] = series[idx[inside]]
    filled = _ffill_past(series)
    k = np.arange(1, H + 1)
    lag = P * np.ceil(k / P).astype(int)
    nidx = idx - lag[None, :]
    # forward-filled value at nidx uses only data <= nidx < origin
    naive = np.where(nidx >= 0, filled[np.clip(nidx, 0, n - 1)], np.nan)
    return BacktestResult(
        model=str(getattr(model, "name", type(model).__name__)), step_s=float(step_s),
        train_end=train_end, horizon_steps=H, quantiles=quantiles, season_steps=P,
        origins=origins, actuals=actuals, preds=preds, naive=naive, fit_s=fit_s,
        update_s=upd, predict_s=prd, refit_s=refit_s, reasons=reasons, fit_reason=fit_reason,
        series=series, trace=trace)


# ---------------------------------------------------------------------- plot
def plot_bands(result: BacktestResult, png_path: str | Path, horizon_step: int = 1,
               window_s: float | None = None, start: int | None = None) -> Path:
    """Actuals with the p50 line and p50-p90 / p90-p99 bands of the ``horizon_step``-ahead
    forecasts, over a readable slice of the test part (default: its first 2 days at <= 1-min
    steps, 4 days at <= 10-min steps, 14 days at coarser steps)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = int(horizon_step)
    if not 1 <= k <= result.horizon_steps:
        raise ValueError(f"horizon_step must be in 1..{result.horizon_steps}")
    if window_s is None:
        window_s = (2 * DAY_S if result.step_s <= 60 else 4 * DAY_S if result.step_s <= 600
                    else 14 * DAY_S)
    tgt = result.origins + k - 1
    lo = int(start) if start is not None else result.train_end
    sel = (tgt >= lo) & (tgt < lo + window_s / result.step_s)
    days = tgt[sel] * result.step_s / DAY_S
    p = result.preds[sel, k - 1, :]
    a = result.actuals[sel, k - 1]
    qs = result.quantiles
    fig, ax = plt.subplots(figsize=(12, 4.5), dpi=110)
    j50 = result._q_index(0.5)
    j90 = result._q_index(0.9)
    j99 = result._q_index(0.99)
    if j50 is not None and j99 is not None:
        ax.fill_between(days, p[:, j50], p[:, j99], step="mid", color="tab:blue", alpha=0.15,
                        label="p50-p99")
    if j50 is not None and j90 is not None:
        ax.fill_between(days, p[:, j50], p[:, j90], step="mid", color="tab:blue", alpha=0.3,
                        label="p50-p90")
    if j50 is not None:
        ax.plot(days, p[:, j50], color="tab:blue", lw=0.8, label="p50")
    for j, q in enumerate(qs):
        if j not in (j50, j90, j99):
            ax.plot(days, p[:, j], lw=0.6, ls="--", label=_qname(q))
    ax.plot(days, a, color="black", lw=0.6, label="actual")
    ov = result.at_horizon(k)
    cov = ", ".join(f"cov {_qname(q)} {ov.get(f'coverage_{_qname(q)}', math.nan):.3f}"
                    for q in qs if q > 0.5)
    ax.set_title(f"{result.trace or 'series'} / {result.model}: {_fmt_s(k * result.step_s)}-ahead "
                 f"forecasts (step {_fmt_s(result.step_s)}); MASE {ov.get('mase', math.nan):.3f}; {cov}",
                 fontsize=9)
    ax.set_xlabel("days since trace start")
    ax.set_ylabel("req/s")
    ax.legend(loc="upper right", fontsize=8, ncol=3)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(png_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------- compare
def _markdown(df) -> str:
    cols = list(df.columns)

    def cell(v):
        if isinstance(v, float):
            if math.isnan(v):
                return ""
            return f"{v:.4g}"
        return str(v).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(cell(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def compare(traces: Iterable[str] | None = None,
            models: Iterable[str] | Mapping[str, Callable[[float], Forecaster]] | None = None,
            horizons_s: Sequence[float] = (60.0, 300.0, 900.0),
            quantiles: Sequence[float] = DEFAULT_QUANTILES,
            max_origins: int | None = 2000, out_dir: str | Path | None = None,
            step_s: Mapping[str, float] | None = None,
            progress: Callable[[str], None] | None = None, target: str = "peak"):
    """Every model on every trace with the trace's default step and split -> DataFrame.

    ``models``: names (made by ``registry.make_forecaster``), a mapping name -> factory(step_s), or
    None for every registered model except the uncalibrated "*-raw" variants, plus "lstm".
    Horizons are rounded up to whole steps (1 min on a 10-min series = 1 step). Writes
    ``compare.csv`` and ``compare.md`` into ``out_dir`` when given.
    """
    import pandas as pd
    from predictor import registry
    from predictor import series as S
    from traces.registry import load_trace

    traces = list(traces) if traces is not None else list(S.MULTI_DAY_TRACES)
    if models is None:
        models = [m for m in registry.model_names() if not m.endswith("-raw")]
    factories = (dict(models) if isinstance(models, Mapping)
                 else {m: None for m in models})
    rows = []
    for tname in traces:
        trace = load_trace(tname)
        st = float((step_s or {}).get(tname) or S.default_step_s(tname, trace))
        ser = S.step_series(trace, st, target)
        _, _, train_end = S.train_test_split(ser, step_s=st, trace_name=tname)
        hsteps = [max(1, math.ceil(h / st - 1e-9)) for h in horizons_s]
        H = max(hsteps)
        for mname, fac in factories.items():
            row = {"trace": tname, "model": mname, "step_s": st, "train_steps": train_end,
                   "test_steps": ser.size - train_end}
            if progress:
                progress(f"{tname} x {mname}: step {_fmt_s(st)}, train {train_end}, "
                         f"test {ser.size - train_end}")
            try:
                f = fac or functools.partial(registry.make_forecaster, mname)
                res = backtest(ser, st, f(st), train_end, H, quantiles=quantiles,
                               max_origins=max_origins, trace=tname, progress=progress)
                ov = res.overall
                row.update({"origins": int(res.origins.size), "mae": ov.get("mae"),
                            "mase": ov.get("mase")})
                for h, k in zip(horizons_s, hsteps):
                    row[f"mase@{_fmt_s(h)}"] = res.at_horizon(k).get("mase")
                for q in quantiles:
                    row[f"pinball_{_qname(q)}"] = ov.get(f"pinball_{_qname(q)}")
                for q in quantiles:
                    if q > 0.5:
                        row[f"coverage_{_qname(q)}"] = ov.get(f"coverage_{_qname(q)}")
                row.update({"ms_per_update": res.seconds_per_update * 1e3,
                            "ms_per_predict": res.seconds_per_predict * 1e3,
                            "fit_s": res.fit_s, "error": ""})
                if out_dir is not None:
                    plot_bands(res, Path(out_dir) / f"bands_{tname}_{mname}.png")
            except Exception as exc:  # one failing model must not abort the table
                row["error"] = f"{type(exc).__name__}: {exc}"
            rows.append(row)
            if progress:
                progress("  -> " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                              for k, v in row.items()
                                              if k in ("mase", "coverage_p90", "coverage_p99", "error")))
    df = pd.DataFrame(rows)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        df.to_csv(out / "compare.csv", index=False)
        (out / "compare.md").write_text(_markdown(df))
    return df
