"""EWMA level with an EWMA of squared errors per horizon.

Scale choice: the level and the errors live on x = log(rate + c), c = 1 request per step.
Why log and not sqrt: sqrt stabilises Poisson noise, whose CV at 100 req/s and 60 s steps is
1/sqrt(6000) = 1.3%, but real request rates carry multiplicative burstiness of 5-30% CV on top,
so the error sd grows about linearly with the level: a 3x daily peak has 3x the raw error sd,
while sqrt would only scale it by sqrt(3) = 1.7x and undercover the peak (the steps the planner
cares about). On the log scale a normal with sd 0.2 gives p99 = x1.59 and p1 = x0.63 of the
median: right-skewed like the bursts. The offset c keeps all-zero windows finite (log(1/60)).
Quantiles: exp(level + z_q * sqrt(V[h])) - c, with V[h] the EWMA of squared h-step errors.
"""
from __future__ import annotations

import math

import numpy as np

from predictor.naive import DEFAULT_LOG_SIGMA, ShiftDetector, StatForecaster, z_of


MAX_LOG_SIGMA = 1.0   # p99 at most x10 the median: beyond that the interval says nothing


class EWMA(StatForecaster):
    """Flat forecast at an exponentially weighted level (log scale).

    halflife_steps: level half-life. max_horizon: horizons with their own tracked error
    variance (longer horizons scale V[max_horizon] by h/max_horizon). var_halflife_steps:
    half-life of the squared-error EWMA (default max(20 * halflife, 240) so tails are stable).
    """

    name = "ewma"

    def __init__(self, halflife_steps: float = 10.0, max_horizon: int = 60,
                 var_halflife_steps: float | None = None, shift_run: int = 5) -> None:
        super().__init__(history_steps=max(int(max_horizon), 1) + 2)
        self.halflife = max(float(halflife_steps), 0.1)
        self.alpha = 1.0 - 0.5 ** (1.0 / self.halflife)
        self.H = max(int(max_horizon), 1)
        vh = var_halflife_steps or max(20 * self.halflife, 240.0)
        self.beta = 1.0 - 0.5 ** (1.0 / vh)
        self.level = float("nan")
        self.levels = np.full(self.H, np.nan)   # levels[k] = level k+1 steps ago (ring)
        self.var = np.full(self.H, np.nan)
        self.n_err = np.zeros(self.H, dtype=int)
        self.detector = ShiftDetector(run=shift_run)
        self._z: tuple | None = None

    def fit(self, history, step_s: float) -> None:
        x = self._start(history, step_s)
        self.level = float("nan")
        self.levels[:] = np.nan
        self.var[:] = np.nan
        self.n_err[:] = 0
        self.detector = ShiftDetector(run=self.detector.run)
        n_imp, notes = self.n_imputed, list(self.notes)
        for v in x:   # same recursion as update, so fit and update states agree
            self._step(float(v), False)
        self.n_imputed, self.notes = n_imp, notes
        self._set_reason()

    def _step(self, x: float, imputed: bool) -> None:
        if not math.isfinite(self.level):
            self.level = x
        # errors of the forecasts made 1..H steps ago (flat forecast = the level back then)
        prev = self.levels
        ok = np.isfinite(prev)
        if not imputed and ok.any():
            e2 = (x - prev) ** 2
            fresh = ok & ~np.isfinite(self.var)
            self.var[fresh] = e2[fresh]
            upd = ok & ~fresh
            # winsorise at 5 sd so one outage step cannot blow the variance up (a real change
            # in volatility still gets through within tens of steps)
            e2 = np.where(upd, np.minimum(e2, 25.0 * np.nan_to_num(self.var, nan=1.0)), e2)
            # faster averaging while few errors are known
            w = np.maximum(self.beta, 1.0 / (self.n_err + 1.0))
            self.var[upd] += w[upd] * (e2[upd] - self.var[upd])
            self.n_err[ok] += 1
            shift = self.detector.feed(x - self.level)
            if shift is not None:
                self.level += shift
                self.var += min(shift ** 2 / 4.0, 0.25)
                self.shift_until = self.n_seen + int(6 * self.halflife) + 60
                self.widen = 1.5
        self.level += self.alpha * (x - self.level)
        self.levels = np.roll(self.levels, 1)
        self.levels[0] = self.level

    def _set_reason(self) -> None:
        n = int(self.n_err[0])
        base = f"{self.name}(halflife={self.halflife:g}): level from {len(self.hist)}+ steps"
        if n < 30:
            base += f"; only {n} errors seen, intervals widened"
        self.reason = self._note_reason(base)

    def _point_log(self, h: int) -> np.ndarray:
        lvl = self.level if math.isfinite(self.level) else self.hist.lag(1)
        return np.full(h, lvl)

    def sigma(self, h: int) -> np.ndarray:
        """Log-scale error sd for horizons 1..h."""
        var = self.var.copy()
        known = np.isfinite(var)
        if not known.any():
            var[:] = DEFAULT_LOG_SIGMA ** 2
        else:
            # unknown horizons: extend the last known one linearly in h (random-walk-like)
            k = int(np.flatnonzero(known)[-1])
            for j in range(self.H):
                if not known[j]:
                    var[j] = var[k] * (j + 1) / (k + 1)
            var = np.maximum.accumulate(var)   # error variance never shrinks with horizon
        hs = np.arange(1, h + 1)
        v = np.where(hs <= self.H, var[np.minimum(hs, self.H) - 1], var[-1] * hs / self.H)
        s = np.sqrt(np.clip(v, 1e-6, MAX_LOG_SIGMA ** 2))
        n = self.n_err[np.minimum(hs, self.H) - 1]
        s = s * np.where(n < 30, 1.0 + 2.0 / np.sqrt(n + 1.0), 1.0)
        if self.n_seen < self.shift_until:
            s = s * self.widen
        return s

    def _predict_log(self, h: int, qs: list[float]) -> np.ndarray:
        key = tuple(qs)
        if self._z is None or self._z[0] != key:
            self._z = (key, z_of(qs))
        self._set_reason()
        return self._point_log(h)[:, None] + self.sigma(h)[:, None] * self._z[1][None, :]
