"""Calibrated(base, window): rolling conformal quantiles around any forecaster's median.

At every step the wrapper records the base's median path for the next `max_horizon` steps. When
an observation arrives it becomes one residual per horizon h (against the path issued h steps
earlier), on the log scale r = log(y + c) - log(f + c), c = one request per step (errors of
rates are multiplicative, see naive.py). The predicted q-quantile at horizon h is
exp(log(f + c) + Q_q(r_h)) - c, where Q_q is the split-conformal order statistic over the last
`window` residuals of that horizon (default three days of steps, at least 100). Horizons beyond
`max_horizon` use the last tracked horizon scaled by sqrt(h / max_horizon).

Short residual history is handled honestly: under 100 residuals the spread is widened by
(1 + 1/sqrt(n)); under `min_residuals` the base's own quantiles are used, widened 1.5x. A run
of large same-sign one-step residuals (level shift) widens the intervals 1.5x for a while (and
shifts a foreign base's median, since it may have no shift handling of its own). All said in
`reason`.

Fit: the base is fitted on the history minus a warm-up tail, then stepped through the tail to
collect residuals (no look-ahead), then re-estimated on everything if it supports `refit()`.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from predictor.base import Forecaster, clean_quantiles, valid_step_s
from predictor.naive import ShiftDetector, StatForecaster, sanitize


def column_quantiles(R: np.ndarray, quantiles: Sequence[float], full_n: int = 100
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Conformal quantiles per column of R [n, H], ignoring NaN. Returns ([H, Q], n per column).

    Upper levels use order statistic ceil((n+1)q), lower ones floor((n+1)q); beyond the sample
    they extrapolate past the extreme by one average gap per missing rank. Columns with fewer
    than full_n values have their spread around the median widened by (1 + 1/sqrt(n)).
    """
    S = np.sort(R, axis=0)                          # NaN sort to the end
    n = np.sum(np.isfinite(S), axis=0)
    H = S.shape[1]
    cols = np.arange(H)
    out = np.zeros((H, len(quantiles)))
    nn = np.maximum(n, 1)
    lo = S[0]
    hi = S[nn - 1, cols]
    gap = np.maximum(hi - lo, 1e-6) / nn
    med = S[(nn - 1) // 2, cols]
    for j, q in enumerate(quantiles):
        q = float(q)
        if q >= 0.5:
            k = np.ceil((n + 1) * q).astype(int)
            v = S[np.clip(k, 1, nn) - 1, cols] + gap * np.maximum(k - n, 0)
        else:
            k = np.floor((n + 1) * q).astype(int)
            v = S[np.clip(k, 1, nn) - 1, cols] - gap * np.maximum(1 - k, 0)
        out[:, j] = v
    widen = np.where(n < full_n, 1.0 + 1.0 / np.sqrt(nn), 1.0)
    out = med[:, None] + (out - med[:, None]) * widen[:, None]
    out[n == 0] = np.nan
    return out, n


class Calibrated(Forecaster):
    """Wraps `base` (any Forecaster) with rolling conformal quantiles per horizon step.

    window: residuals kept per horizon (default: 3 days of steps, at least 100, set at fit).
    max_horizon: horizons tracked individually. min_residuals: below this the base's own
    quantiles (widened) are used. requantile_every: steps between recomputing the quantile
    table (sorting the window), which keeps update+predict cheap.
    """

    def __init__(self, base: Forecaster, window: int | None = None, max_horizon: int = 30,
                 min_residuals: int = 30, requantile_every: int = 10,
                 refit_after_warmup: bool = True) -> None:
        super().__init__()
        self.base = base
        self.name = f"calibrated-{getattr(base, 'name', 'model')}"
        self.window_arg = window
        self.window = int(window) if window else 4320
        self.H = max(int(max_horizon), 1)
        self.min_residuals = int(min_residuals)
        self.requantile_every = max(int(requantile_every), 1)
        self.refit_after_warmup = refit_after_warmup
        self.c = 1.0 / 60.0
        self._reset()

    # ------------------------------------------------------------------ state
    def _reset(self) -> None:
        H = self.H
        self.n_obs = 0
        self.pend = np.full((H, H), np.nan)     # log median paths, row = origin % H
        self.stamp = np.full(H, -1, dtype=np.int64)
        self.R = np.full((self.window, H), np.nan)
        self.n_res = 0
        self.detector = ShiftDetector()
        self.shift_until = -1
        self.offset = 0.0
        self.last_log = float("nan")
        self.peak = 0.0
        self._qcache: tuple | None = None

    def min_history(self, step_s: float) -> int:
        f = getattr(self.base, "min_history", None)
        return int(f(step_s)) if callable(f) else 30

    @property
    def refit_due(self) -> bool:
        return bool(getattr(self.base, "refit_due", False))

    def refitted_copy(self) -> "Calibrated":
        """A refitted deep copy (for a worker); replay new steps into it, then swap."""
        import copy
        new = copy.deepcopy(self)
        new.refit()
        return new

    def refit(self) -> None:
        """Re-estimate the base (slow; off the decision path). Residual history is kept."""
        f = getattr(self.base, "refit", None)
        if callable(f):
            f()
            self._record_path()

    # ------------------------------------------------------------------ base access
    def _base_path(self, h: int) -> np.ndarray:
        """Base median path on the log scale, length h, finite."""
        try:
            if isinstance(self.base, StatForecaster) or hasattr(self.base, "point_log"):
                p = np.asarray(self.base.point_log(h), dtype=float)
            else:
                p = np.log(np.asarray(self.base.predict(h, [0.5]), dtype=float)[:, 0] + self.c)
            if p.shape == (h,) and np.isfinite(p).all():
                return p + self.offset
        except Exception:
            pass
        last = self.last_log if math.isfinite(self.last_log) else math.log(self.c)
        return np.full(h, last)

    def _record_path(self) -> None:
        row = self.n_obs % self.H
        self.pend[row] = self._base_path(self.H)
        self.stamp[row] = self.n_obs

    # ------------------------------------------------------------------ contract
    def fit(self, history, step_s: float) -> None:
        self.step_s = valid_step_s(step_s)
        self.c = 1.0 / self.step_s
        if not self.window_arg:
            # Three days of recent errors cover three daily cycles; at coarse steps that is few
            # residuals (hourly: 72), so keep at least 100, enough to place a p99. A longer
            # window reaches back into the warm-up before the last refit and over-covers
            # (Wikipedia hourly with 500: p90 coverage 0.946; with 100: 0.879).
            self.window = max(int(round(3 * 86400.0 / self.step_s)), 100)
        self._reset()
        y = sanitize(history)
        n = y.size
        need = self.min_history(self.step_s)
        warm = min(self.window, n - need) if n > need else n // 2
        warm = max(warm, 0)
        self.base.fit(y[:n - warm], self.step_s)
        self.n_obs = n - warm
        self.peak_decay = 0.5 ** (self.step_s / 86400.0)
        day = max(int(86400.0 / self.step_s), 1)
        tail = y[:n - warm][-day:]
        tail = tail[np.isfinite(tail)]
        self.peak = float(tail.max()) if tail.size else 0.0
        fin = y[:n - warm][np.isfinite(y[:n - warm])]
        self.last_log = math.log(fin[-1] + self.c) if fin.size else float("nan")
        self._record_path()
        if warm:
            self.update(y[n - warm:])
            self.detector = ShiftDetector()
            self.detector.seed(self.R[:min(self.n_res, self.window), 0])
            if self.refit_after_warmup and callable(getattr(self.base, "refit", None)):
                self.refit()
        self._qcache = None
        self._set_reason()

    def update(self, new) -> None:
        for v in sanitize(new):
            try:
                self.base.update(np.array([v]))
            except Exception as exc:   # a foreign base may raise; we must not
                self.reason = f"{self.name}: base update failed ({exc!r})"
            t = self.n_obs
            if math.isfinite(v):
                x = math.log(v + self.c)
                self.peak = max(v, self.peak * getattr(self, "peak_decay", 1.0))
                ks = np.arange(self.H)
                rows = (t - ks) % self.H
                ok = self.stamp[rows] == t - ks
                r = np.full(self.H, np.nan)
                r[ok] = x - self.pend[rows[ok], ks[ok]]
                self.R[self.n_res % self.window] = r
                self.n_res += 1
                self.last_log = x
                if ok[0]:
                    shift = self.detector.feed(r[0])
                    if shift is not None:
                        self.shift_until = t + max(self.H, 30)
                        if not hasattr(self.base, "point_log"):
                            self.offset += shift
            self.n_obs = t + 1
            self._record_path()

    def _quantile_table(self, qs: list[float]) -> tuple[np.ndarray, np.ndarray]:
        key = (tuple(qs), self.n_res // self.requantile_every)
        if self._qcache is None or self._qcache[0] != key or self.n_res < 200:
            R = self.R[:min(self.n_res, self.window)]
            table, n = column_quantiles(R, qs)
            self._qcache = (key, table, n)
        return self._qcache[1], self._qcache[2]

    def _set_reason(self, n_min: int | None = None, fallback: bool = False) -> None:
        n = n_min if n_min is not None else min(self.n_res, self.window)
        parts = [f"{self.name}: conformal over {n} residuals/horizon (window {self.window})"]
        if fallback:
            parts.append(f"fewer than {self.min_residuals} residuals: base quantiles widened x1.5")
        elif n < 100:
            parts.append(f"short residual history ({n}), intervals widened")
        if self.n_obs < self.shift_until:
            parts.append("level shift detected, intervals widened x1.5")
        parts.append(f"base: {getattr(self.base, 'reason', '')}")
        self.reason = "; ".join(parts)

    def _base_quantiles(self, h: int, qs: list[float]) -> np.ndarray:
        try:
            out = np.asarray(self.base.predict(h, qs), dtype=float)
            if out.shape == (h, len(qs)) and np.isfinite(out).all():
                return out
        except Exception:
            pass
        return np.repeat(np.exp(self._base_path(h))[:, None] - self.c, len(qs), axis=1)

    def predict(self, horizon_steps: int, quantiles: Sequence[float]) -> np.ndarray:
        h = max(int(horizon_steps), 1)
        qs = [float(q) for q in quantiles]
        try:
            cap = 10.0 * max(self.peak, self.c)   # as StatForecaster.cap: 10x recent peak
            return clean_quantiles(np.minimum(self._predict(h, qs), cap))
        except Exception as exc:   # never crash the controller
            self.reason = f"{self.name}: predict error ({exc!r}); base quantiles used"
            return clean_quantiles(self._base_quantiles(h, qs))

    def _predict(self, h: int, qs: list[float]) -> np.ndarray:
        row = self.n_obs % self.H
        if self.stamp[row] != self.n_obs:
            self._record_path()
        path = self.pend[row] if h <= self.H else self._base_path(h)
        path = path[:h]
        table, n = self._quantile_table(qs)
        n_min = int(n.min()) if n.size else 0
        if n[0] < self.min_residuals:
            self._set_reason(int(n[0]), fallback=True)
            out = self._base_quantiles(h, qs)
            lp = np.log(out + self.c)
            med = lp.mean(axis=1, keepdims=True)
            return np.exp(med + (lp - med) * 1.5) - self.c
        # horizons with too few residuals borrow the nearest shorter horizon that has enough
        table = table.copy()
        good = n >= self.min_residuals
        for j in range(1, table.shape[0]):
            if not good[j]:
                table[j] = table[j - 1] * math.sqrt((j + 1) / j)
        hs = np.arange(1, h + 1)
        idx = np.minimum(hs, self.H) - 1
        spread = table[idx]
        if h > self.H:
            spread = spread * np.sqrt(np.maximum(hs / self.H, 1.0))[:, None]
        if self.n_obs < self.shift_until:
            spread = spread * 1.5
        self._set_reason(n_min)
        return np.exp(path[:, None] + spread) - self.c
