"""Holt-Winters (damped additive trend, additive daily season) and seasonal-difference ARMA
(SARIMAX), both estimated with statsmodels and run per step with their own recursions.

Refit schedule: `fit(history, step_s)` estimates parameters with statsmodels (0.2-1 s on four
days of 1-minute steps) and sets the state. `update(new)` NEVER refits or re-estimates: it runs
one step of the model recursion with the fitted parameters (O(1), tens of microseconds), so it
is safe on the decision path. After `refit_every_steps` updates `refit_due` turns True; the
harness/controller then calls `refit()` off the decision path, which re-estimates on the bounded
window of history the model keeps (`fit_window_steps`) and swaps in parameters and state.
`refit()` mutates the model, so do not run `update()` on the same object at the same time; to
refit truly in the background use `new = model.refitted_copy()` in a worker, replay the steps
that arrived meanwhile with `new.update(...)`, and swap the reference (Calibrated and Ensemble
provide the same `refit_due` / `refit()` / `refitted_copy()`).

Both work on x = log(rate + c), c = 1 request per step (see naive.py): additive season and
errors on that scale are multiplicative on the rate, which fits diurnal traffic.
"""
from __future__ import annotations

import math
import warnings

import numpy as np

from predictor.base import valid_step_s
from predictor.naive import (DEFAULT_LOG_SIGMA, Ring, ShiftDetector, StatForecaster,
                             _last_value_log, z_of)

DAY_S = 86400.0


def daily_period(step_s: float) -> int:
    return max(int(round(DAY_S / step_s)), 1)


def _css_arma(z: np.ndarray, p: int, q: int, const: bool) -> np.ndarray:
    """Conditional-sum-of-squares ARMA(p, q) estimate: [c?, ar..., ma..., sigma2]."""
    from scipy.optimize import minimize
    from scipy.signal import lfilter
    z = np.asarray(z, dtype=float)
    k0 = 1 if const else 0

    def resid(th):
        c = th[0] if const else 0.0
        ar = th[k0:k0 + p]
        ma = th[k0 + p:k0 + p + q]
        u = lfilter(np.r_[1.0, -ar], [1.0], z) - c
        return lfilter([1.0], np.r_[1.0, ma], u)[p:]

    def sse(th):
        e = resid(th)
        v = float(e @ e)
        return v if math.isfinite(v) else 1e300

    x0 = np.zeros(k0 + p + q)
    if const:
        x0[0] = float(np.mean(z))
    bounds = ([(None, None)] if const else []) + [(-0.99, 0.99)] * (p + q)
    th = minimize(sse, x0, method="L-BFGS-B", bounds=bounds, options={"maxiter": 200}).x
    e = resid(th)
    return np.r_[th, max(float(np.mean(e ** 2)) if e.size else 0.01, 1e-6)]


class _Scheduled(StatForecaster):
    """Shared: period from step_s, bounded window, refit schedule, sigma tracking, shifts."""

    def __init__(self, period_steps: int | None, refit_every_steps: int | None,
                 fit_window_steps: int | None, shift_run: int) -> None:
        super().__init__(history_steps=16)
        self.period_arg = period_steps
        self.refit_every_arg = refit_every_steps
        self.fit_window_arg = fit_window_steps
        self.period = 1
        self.refit_every = 1440
        self.fit_window = 5760
        self.steps_since_fit = 0
        self.mode = "unfitted"
        self.fit_note = ""
        self.sigma2 = DEFAULT_LOG_SIGMA ** 2
        self.sig_a = 1.0 - 0.5 ** (1.0 / 1000.0)
        self.shift_run = shift_run
        self.detector = ShiftDetector(run=shift_run)
        self.offset = 0.0
        self._z: tuple | None = None

    def _period_for(self, step_s: float) -> int:
        return int(self.period_arg) if self.period_arg else daily_period(valid_step_s(step_s))

    @property
    def refit_due(self) -> bool:
        return self.steps_since_fit >= self.refit_every

    def fit(self, history, step_s: float) -> None:
        sp = valid_step_s(step_s)
        self.period = int(self.period_arg) if self.period_arg else daily_period(sp)
        self.refit_every = int(self.refit_every_arg) if self.refit_every_arg else self.period
        self.fit_window = int(self.fit_window_arg) if self.fit_window_arg else 4 * self.period
        self.fit_window = max(self.fit_window, 50)
        self.hist = Ring(max(self.fit_window, 2 * self.period + 2))
        self._start(history, sp, self.period)
        self._estimate(self.hist.values().copy())

    def refitted_copy(self) -> "_Scheduled":
        """A refitted deep copy (for a worker thread/process); the original is untouched."""
        import copy
        new = copy.deepcopy(self)
        new.refit()
        return new

    def refit(self) -> None:
        """Re-estimate on the kept window (slow; run it off the decision path)."""
        x = self.hist.values().copy()
        n_seen = self.n_seen
        self._estimate(x)
        self.n_seen = n_seen

    def _estimate(self, x: np.ndarray) -> None:
        self.steps_since_fit = 0
        self.offset = 0.0
        self.shift_until = -1
        self.detector = ShiftDetector(run=self.shift_run)
        if x.size == 0:
            self.mode, self.fit_note = "last", "no history"
        elif np.ptp(x) < 1e-9:
            self.mode, self.fit_note = "last", "constant (e.g. all-zero) history"
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    self._fit_model(x)
                except Exception as exc:   # statsmodels failure: simpler model
                    self.mode, self.fit_note = "last", f"fit failed ({type(exc).__name__})"
        if self.mode == "last":
            self.sigma2 = DEFAULT_LOG_SIGMA ** 2
        self._set_reason()

    def _fit_model(self, x: np.ndarray) -> None:
        raise NotImplementedError

    def _track(self, r: float, imputed: bool) -> None:
        """Book-keeping for a one-step residual r (log scale) of the corrected forecast."""
        self.steps_since_fit += 1
        if imputed or not math.isfinite(r):
            return
        self.sigma2 += self.sig_a * (min(r * r, 25 * self.sigma2) - self.sigma2)
        shift = self.detector.feed(r)
        if shift is not None:
            self._on_shift(shift)
            self.shift_until = self.n_seen + max(self.period // 4, 60)
            self.widen = 1.5

    def _on_shift(self, shift: float) -> None:
        self.offset += shift

    def _set_reason(self) -> None:
        base = f"{self.name}: {self.mode}"
        if self.fit_note:
            base += f" ({self.fit_note})"
        if abs(self.offset) > 1e-9:
            base += f"; level corrected by x{math.exp(self.offset):.3g}"
        if self.refit_due:
            base += f"; refit due ({self.steps_since_fit} steps since fit)"
        self.reason = self._note_reason(base)

    def _zq(self, qs: list[float]) -> np.ndarray:
        key = tuple(qs)
        if self._z is None or self._z[0] != key:
            self._z = (key, z_of(qs))
        return self._z[1]

    def _var_mult(self, h: int) -> np.ndarray:
        return np.arange(1, h + 1, dtype=float)

    def _predict_log(self, h: int, qs: list[float]) -> np.ndarray:
        self._set_reason()
        if self.mode == "last":
            return _last_value_log(self.hist, h, qs)
        s = np.sqrt(self.sigma2 * self._var_mult(h))
        if self.n_seen < self.shift_until:
            s = s * self.widen
        return self._point_log(h)[:, None] + s[:, None] * self._zq(qs)[None, :]


class HoltWinters(_Scheduled):
    """Additive damped-trend Holt-Winters with an additive daily season (when the history holds
    at least two periods; otherwise damped Holt without season, said in `reason`).

    period_steps: season length (default one day = 86400/step_s). refit_every_steps: updates
    until `refit_due` (default one period). fit_window_steps: window kept and used for
    (re)estimation (default four periods). damped: damped trend (True) or plain additive.
    """

    name = "holt-winters"

    def __init__(self, period_steps: int | None = None, refit_every_steps: int | None = None,
                 fit_window_steps: int | None = None, damped: bool = True,
                 shift_run: int = 5) -> None:
        super().__init__(period_steps, refit_every_steps, fit_window_steps, shift_run)
        self.damped = bool(damped)
        self.alpha = self.beta = self.gamma = 0.0
        self.phi = 1.0
        self.l = 0.0
        self.b = 0.0
        self.S = np.zeros(1)
        self.m = 1

    def min_history(self, step_s: float) -> int:
        return 2 * self._period_for(step_s) + 10

    def _fit_model(self, x: np.ndarray) -> None:
        from statsmodels.tsa.holtwinters import ExponentialSmoothing
        P = self.period
        if P >= 2 and x.size >= 2 * P + 10:
            xs = x[-self.fit_window:] if x.size >= self.fit_window else x
            if xs.size < 2 * P + 10:
                xs = x[-(2 * P + 10):]
            r = ExponentialSmoothing(xs, trend="add", damped_trend=self.damped, seasonal="add",
                                     seasonal_periods=P, initialization_method="heuristic").fit()
            self.mode, self.fit_note, self.m = "seasonal", f"period {P}", P
        elif x.size >= 10:
            xs = x[-self.fit_window:]
            r = ExponentialSmoothing(xs, trend="add", damped_trend=self.damped,
                                     initialization_method="estimated").fit()
            self.mode, self.m = "trend", 1
            self.fit_note = (f"only {x.size} steps < 2 periods ({2 * P}); no seasonality"
                             if P >= 2 else "")
        else:
            self.mode, self.fit_note = "last", f"only {x.size} steps; last value"
            return
        p = r.params
        self.alpha = float(p["smoothing_level"])
        self.beta = float(p.get("smoothing_trend", 0.0) or 0.0)
        self.gamma = float(p.get("smoothing_seasonal", 0.0) or 0.0) if self.m > 1 else 0.0
        self.phi = float(p.get("damping_trend", 1.0) or 1.0) if self.damped else 1.0
        self.l = float(r.level[-1])
        self.b = float(r.trend[-1])
        T = self.n_seen - 1
        self.S = np.zeros(self.m)
        if self.m > 1:
            season = np.asarray(r.season)[-self.m:]
            idx = (T - self.m + 1 + np.arange(self.m)) % self.m
            self.S[idx] = season
        resid = xs - np.asarray(r.fittedvalues)
        resid = resid[np.isfinite(resid)]
        self.sigma2 = max(float(np.mean(resid[-self.fit_window:] ** 2)), 1e-6) if resid.size else 0.01
        self.detector.seed(resid[-2000:])
        for name, v in (("alpha", self.alpha), ("l", self.l), ("b", self.b)):
            if not math.isfinite(v):
                raise ValueError(f"non-finite {name}")

    def _step(self, x: float, imputed: bool) -> None:
        if self.mode == "last" or self.mode == "unfitted":
            self.steps_since_fit += 1
            return
        t = self.n_seen
        k = t % self.m
        s_old = self.S[k]
        pb = self.phi * self.b
        yhat = self.l + pb + s_old
        l_new = self.alpha * (x - s_old) + (1 - self.alpha) * (self.l + pb)
        self.b = self.beta * (l_new - self.l) + (1 - self.beta) * pb
        if self.m > 1:
            self.S[k] = self.gamma * (x - self.l - pb) + (1 - self.gamma) * s_old
        self.l = l_new
        self._track(x - yhat - self.offset, imputed)

    def _on_shift(self, shift: float) -> None:
        # the level absorbs it directly (no offset needed: the recursion keeps it)
        self.l += shift
        self.b = 0.0

    def _point_log(self, h: int) -> np.ndarray:
        if self.mode in ("last", "unfitted"):
            return np.full(h, self.hist.lag(1))
        hs = np.arange(1, h + 1)
        if self.phi == 1.0:
            damp = hs.astype(float)
        else:
            damp = np.cumsum(self.phi ** hs)
        T = self.n_seen - 1
        return self.l + damp * self.b + self.S[(T + hs) % self.m] + self.offset

    def _var_mult(self, h: int) -> np.ndarray:
        # ETS(A,Ad,A): var_h = sigma^2 (1 + sum_{j<h} c_j^2), c_j = a + a b* phi_j + g 1{m | j}
        j = np.arange(1, h)
        phij = np.cumsum(self.phi ** j) if j.size else j
        c = self.alpha + self.alpha * self.beta * phij + self.gamma * ((j % self.m) == 0)
        return 1.0 + np.concatenate([[0.0], np.cumsum(c ** 2)])


class Sarimax(_Scheduled):
    """SARIMA(p,0,q)(0,1,0)[period] on the log rate: ARMA with intercept on the day-over-day
    difference z[t] = x[t] - x[t-period] (seasonal differencing keeps the fit fast and the state
    small). Estimated with statsmodels SARIMAX; per step it runs the ARMA innovations recursion
    with the fitted parameters. With less than a period plus 50 steps: ARIMA(p,1,q) without
    seasonality (said in `reason`); under 30 steps: last value.

    order: (p, d, q) with d ignored (0). period_steps, refit_every_steps, fit_window_steps as
    for HoltWinters (fit window default three periods of differences).
    """

    name = "sarimax"

    def __init__(self, order: tuple[int, int, int] = (1, 0, 1), period_steps: int | None = None,
                 refit_every_steps: int | None = None, fit_window_steps: int | None = None,
                 shift_run: int = 5, maxiter: int = 20) -> None:
        super().__init__(period_steps, refit_every_steps, fit_window_steps, shift_run)
        self.maxiter = int(maxiter)
        self.p = int(order[0])
        self.q = int(order[2])
        self.const = 0.0
        self.ar = np.zeros(self.p)
        self.ma = np.zeros(self.q)
        self.zl = np.zeros(max(self.p, 1))   # z[t], z[t-1], ... (most recent first)
        self.el = np.zeros(max(self.q, 1))
        self.seasonal = False
        self.lagd = 1
        self._psi: np.ndarray | None = None

    def min_history(self, step_s: float) -> int:
        return self._period_for(step_s) + 200

    def _fit_model(self, x: np.ndarray) -> None:
        from statsmodels.tsa.statespace.sarimax import SARIMAX
        P = self.period
        if P >= 2 and x.size >= P + 50:
            self.lagd, trend = P, "c"
            self.seasonal, self.mode, self.fit_note = True, "seasonal", f"order ({self.p},0,{self.q}) on lag-{P} difference"
        elif x.size >= 30:
            # ARIMA(p,1,q) without drift: ARMA on x itself is near a unit root, which makes
            # the MLE slow (seconds on 72 points) and extrapolation poor
            self.lagd, trend = 1, "n"
            self.seasonal, self.mode = False, "arima"
            self.fit_note = (f"only {x.size} steps < period + 50 ({P + 50}); no seasonality"
                             if P >= 2 else "")
        else:
            self.mode, self.fit_note = "last", f"only {x.size} steps; last value"
            return
        L = self.lagd
        z = x[L:] - x[:-L]
        zs = z[-(self.fit_window - L):]
        # conditional-sum-of-squares start (fast, scipy lfilter), then statsmodels' exact MLE
        # from there, which then needs only a few iterations (seconds saved per fit)
        css = _css_arma(zs, self.p, self.q, trend == "c")
        names = (["intercept"] if trend == "c" else []) + [f"ar.L{i}" for i in range(1, self.p + 1)] \
            + [f"ma.L{i}" for i in range(1, self.q + 1)] + ["sigma2"]
        try:
            r = SARIMAX(zs, order=(self.p, 0, self.q), trend=trend).fit(
                start_params=css, disp=False, method="lbfgs", maxiter=self.maxiter, cov_type="none")
            par = dict(zip(r.model.param_names, np.asarray(r.params, dtype=float)))
            if not all(math.isfinite(v) for v in par.values()):
                raise ValueError("non-finite MLE")
        except Exception as exc:
            par = dict(zip(names, css))
            self.fit_note += f"; MLE failed ({type(exc).__name__}), CSS estimates used"
        self.const = par.get("intercept", 0.0)
        self.ar = np.array([par.get(f"ar.L{i}", 0.0) for i in range(1, self.p + 1)])
        self.ma = np.array([par.get(f"ma.L{i}", 0.0) for i in range(1, self.q + 1)])
        if not all(math.isfinite(v) for v in [self.const, *self.ar, *self.ma]):
            raise ValueError("non-finite SARIMAX parameters")
        self.sigma2 = max(float(par.get("sigma2", 0.01)), 1e-6)
        self._psi = None
        # run the innovations recursion over all of z to get the current state
        self.zl[:] = 0.0
        self.el[:] = 0.0
        resid = np.empty(z.size)
        for i, v in enumerate(z):
            zhat = self._zhat()
            e = v - zhat
            resid[i] = e
            self._push(v, e)
        self.detector.seed(resid[-2000:])

    def _zhat(self) -> float:
        out = self.const
        if self.p:
            out += float(self.ar @ self.zl[:self.p])
        if self.q:
            out += float(self.ma @ self.el[:self.q])
        return out

    def _push(self, z: float, e: float) -> None:
        if self.zl.size > 1:
            self.zl[1:] = self.zl[:-1]
        self.zl[0] = z
        if self.el.size > 1:
            self.el[1:] = self.el[:-1]
        self.el[0] = e

    def _step(self, x: float, imputed: bool) -> None:
        if self.mode in ("last", "unfitted"):
            self.steps_since_fit += 1
            return
        ref = self.hist.lag(self.lagd)
        ref = ref if math.isfinite(ref) else self.hist.lag(1)
        zhat = self._zhat()
        z = x - ref
        e = z - zhat
        if imputed:
            e = 0.0
        self._push(z, e)
        self._track(e - self.offset, imputed)

    def _point_log(self, h: int) -> np.ndarray:
        if self.mode in ("last", "unfitted"):
            return np.full(h, self.hist.lag(1))
        zl = list(self.zl[:self.p])
        el = list(self.el[:self.q])
        zf = np.empty(h)
        for k in range(h):
            v = self.const
            for i in range(self.p):
                v += self.ar[i] * (zf[k - 1 - i] if k - 1 - i >= 0 else zl[i - k])
            for j in range(k, self.q):
                v += self.ma[j] * el[j - k]
            zf[k] = v
        x = self.hist.values()
        P = self.lagd
        out = np.empty(h)
        for k in range(h):
            ref = x[x.size - P + k] if k < P else out[k - P] - self.offset
            out[k] = zf[k] + ref + self.offset
        return out

    def _var_mult(self, h: int) -> np.ndarray:
        if self._psi is None or self._psi.size < h:
            n = max(h, 64)
            psi = np.zeros(n)
            psi[0] = 1.0
            for j in range(1, n):
                v = self.ma[j - 1] if j - 1 < self.q else 0.0
                for i in range(1, min(j, self.p) + 1):
                    v += self.ar[i - 1] * psi[j - i]
                psi[j] = v
            self._psi = psi
        psi = self._psi[:h]
        if self.lagd > 1:   # beyond one period the seasonal reference is itself a forecast
            return np.cumsum(psi ** 2) * np.ceil(np.arange(1, h + 1) / self.lagd)
        # integrated (lag-1 difference): x's psi weights are the partial sums of z's
        return np.cumsum(np.cumsum(psi) ** 2)
