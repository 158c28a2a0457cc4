"""Seasonal naive and last-value forecasters, plus the helpers every statistical forecaster shares.

Shared conventions (used by ewma.py, statsmodels_models.py, conformal.py, ensemble.py):

- Models work on x = log(rate + c) with c = one request per step (1/step_s req/s). Rates are
  skewed and their noise grows with the level (bursts are multiplicative), so errors on the log
  scale are close to homoscedastic; c keeps zeros finite (0 req/s at 60 s steps -> log(1/60)).
- History and updates are sanitised: inf/negative -> NaN -> imputed (seasonal value, else the
  model's own one-step forecast, else the last value, else 0). NaN never enters model state.
- All state is bounded: `_Ring` keeps at most `maxlen` recent steps.
- `predict` never raises: any internal error falls back to last-value quantiles and says so in
  `reason`; output always goes through `base.clean_quantiles`.
"""
from __future__ import annotations

import math
from statistics import NormalDist
from typing import Sequence

import numpy as np

from predictor.base import Forecaster, clean_quantiles, valid_step_s

_ND = NormalDist()
DEFAULT_LOG_SIGMA = 0.5   # log-scale sd used when there is no error history at all (x1.9 at p90)


def z_of(quantiles: Sequence[float]) -> np.ndarray:
    """Standard normal quantiles, clipped to (1e-6, 1 - 1e-6) so 0 and 1 stay finite."""
    return np.array([_ND.inv_cdf(min(max(float(q), 1e-6), 1 - 1e-6)) for q in quantiles])


def sanitize(values) -> np.ndarray:
    """1-d float array; inf and negative rates become NaN (masked), never raise on odd input."""
    try:
        arr = np.asarray(values, dtype=float).ravel()
    except (TypeError, ValueError):
        arr = np.array([float("nan")])
    arr = arr.copy()
    arr[~np.isfinite(arr) | (arr < 0)] = np.nan
    return arr


def impute(x: np.ndarray, period: int | None = None) -> tuple[np.ndarray, int]:
    """Fill NaN with the value one period earlier when known, else the last finite value,
    else the first finite value (leading gap), else 0. Returns (filled, count imputed)."""
    x = np.array(x, dtype=float)
    bad = ~np.isfinite(x)
    n_bad = int(bad.sum())
    if n_bad == 0:
        return x, 0
    if bad.all():
        return np.zeros_like(x), n_bad
    first = x[np.argmax(~bad)]
    last = first
    for i in range(x.size):
        if bad[i]:
            if period and i >= period and np.isfinite(x[i - period]):
                x[i] = x[i - period]
            else:
                x[i] = last
        last = x[i]
    return x, n_bad


class Ring:
    """Bounded append-only window of floats with O(1) amortised append."""

    def __init__(self, maxlen: int) -> None:
        self.maxlen = max(1, int(maxlen))
        self._buf = np.zeros(2 * self.maxlen)
        self._end = 0
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def clear(self) -> None:
        self._end = 0
        self._n = 0

    def append(self, v: float) -> None:
        if self._end == self._buf.size:
            keep = self._buf[self._end - self.maxlen + 1:self._end].copy()
            self._buf[:keep.size] = keep
            self._end = keep.size
        self._buf[self._end] = v
        self._end += 1
        self._n = min(self._n + 1, self.maxlen)

    def extend(self, vals: np.ndarray) -> None:
        vals = np.asarray(vals, dtype=float)[-self.maxlen:]
        if self._end + vals.size > self._buf.size:
            keep = self.values()[-(self.maxlen - vals.size):] if vals.size < self.maxlen else np.empty(0)
            self._buf[:keep.size] = keep
            self._end = keep.size
            self._n = keep.size
        self._buf[self._end:self._end + vals.size] = vals
        self._end += vals.size
        self._n = min(self._n + vals.size, self.maxlen)

    def values(self) -> np.ndarray:
        """The stored window, oldest first (a view: copy before mutating)."""
        return self._buf[self._end - self._n:self._end]

    def lag(self, k: int) -> float:
        """Value k steps back: lag(1) is the latest. NaN if not stored."""
        if k < 1 or k > self._n:
            return float("nan")
        return float(self._buf[self._end - k])


def empirical_quantiles(errors: np.ndarray, quantiles: Sequence[float], full_n: int = 100
                        ) -> tuple[np.ndarray, bool]:
    """Split-conformal style quantiles of `errors` (1-d, or 2-d with samples on axis 0).

    Upper levels take order statistic ceil((n+1)q), lower levels floor((n+1)q); beyond the
    sample they extrapolate past the extreme. With fewer than `full_n` samples the spread around
    the median is widened by (1 + 1/sqrt(n)) -- returns (quantiles [..., len(q)], widened?).
    """
    e = np.sort(np.asarray(errors, dtype=float), axis=0)
    n = e.shape[0]
    qs = np.asarray(quantiles, dtype=float)
    if n == 0:
        z = z_of(qs) * DEFAULT_LOG_SIGMA
        shape = (len(qs),) if e.ndim == 1 else (e.shape[1], len(qs))
        return np.broadcast_to(z, shape).copy(), True
    med = e[n // 2]
    span = np.maximum(e[-1] - e[0], 1e-9)
    out = []
    for q in qs:
        if q >= 0.5:
            k = math.ceil((n + 1) * q)
            v = e[n - 1] + span / n * (k - n) if k > n else e[max(k, 1) - 1]
        else:
            k = math.floor((n + 1) * q)
            v = e[0] - span / n * (1 - k) if k < 1 else e[k - 1]
        out.append(v)
    res = np.stack(out, axis=-1)
    widened = n < full_n
    if widened:
        res = med[..., None] + (res - med[..., None]) * (1.0 + 1.0 / math.sqrt(n))
    return res, widened


class ShiftDetector:
    """Flags a level shift: `run` consecutive one-step residuals (log scale) of the same sign,
    each larger than `z` times the robust residual scale. Returns the median of the run as the
    estimated shift so the model can reset its level; the model then widens for `widen_steps`."""

    def __init__(self, run: int = 5, z: float = 3.0, halflife: float = 500.0) -> None:
        self.run = int(run)
        self.z = float(z)
        self.a = 1.0 - 0.5 ** (1.0 / halflife)
        self.scale = float("nan")
        self._run: list[float] = []

    def seed(self, residuals: np.ndarray) -> None:
        r = np.asarray(residuals, dtype=float)
        r = r[np.isfinite(r)]
        if r.size:
            self.scale = max(float(np.mean(np.abs(r - np.median(r)))), 1e-3)

    def feed(self, r: float) -> float | None:
        if not math.isfinite(r):
            return None
        if not math.isfinite(self.scale):
            self.scale = max(abs(r), 1e-3)
            return None
        big = abs(r) > self.z * self.scale
        # clip so the shift itself does not inflate the scale it is measured against
        self.scale += self.a * (min(abs(r), self.z * self.scale) - self.scale)
        self.scale = max(self.scale, 1e-3)
        if big and (not self._run or (r > 0) == (self._run[-1] > 0)):
            self._run.append(r)
        elif big:
            self._run = [r]
        else:
            self._run = []
        if len(self._run) >= self.run:
            shift = float(np.median(self._run))
            self._run = []
            return shift
        return None


class StatForecaster(Forecaster):
    """Common machinery: log-scale bounded history, NaN imputation, error-proof predict."""

    name = "stat"

    def __init__(self, history_steps: int) -> None:
        super().__init__()
        self.c = 1.0 / 60.0
        self.hist = Ring(history_steps)     # log-scale, imputed
        self.n_seen = 0
        self.n_imputed = 0
        self.notes: list[str] = []         # bad-input notes for the reason string
        self.shift_until = -1               # widen intervals until this step count
        self.widen = 1.0
        self.peak = 0.0                     # recent peak rate (half-life one day): output cap
        self.peak_decay = 0.5 ** (60.0 / 86400.0)

    # --- scale helpers
    def fwd(self, y):
        return np.log(np.asarray(y, dtype=float) + self.c)

    def inv(self, x):
        return np.maximum(np.exp(np.asarray(x, dtype=float)) - self.c, 0.0)

    def _start(self, history, step_s: float, period: int | None = None) -> np.ndarray:
        self.step_s = valid_step_s(step_s)
        self.c = 1.0 / self.step_s
        y = sanitize(history)
        y, n_bad = impute(y, period)
        self.notes = []
        if n_bad:
            self.notes.append(f"{n_bad} NaN/masked history steps imputed")
        x = self.fwd(y)
        self.peak_decay = 0.5 ** (self.step_s / 86400.0)
        day = max(int(86400.0 / self.step_s), 1)
        self.peak = float(np.max(y[-day:])) if y.size else 0.0
        self.hist.clear()
        self.hist.extend(x)
        self.n_seen = int(x.size)
        self.n_imputed = n_bad
        self.shift_until = -1
        return x

    # --- contract
    def update(self, new) -> None:
        vals = sanitize(new)
        for v in vals:
            try:
                if math.isfinite(v):
                    x = math.log(v + self.c)
                    imputed = False
                    self.peak = max(v, self.peak * self.peak_decay)
                else:
                    x = self._impute_one()
                    imputed = True
                    self.n_imputed += 1
                self._step(x, imputed)
            except Exception as exc:  # never crash the controller
                self.reason = f"{self.name}: update error ({exc!r}); state kept, using last value"
                x = self.hist.lag(1) if len(self.hist) else math.log(self.c)
            self.hist.append(x)
            self.n_seen += 1

    def predict(self, horizon_steps: int, quantiles: Sequence[float]) -> np.ndarray:
        h = max(int(horizon_steps), 1)
        qs = list(quantiles)
        try:
            if len(self.hist) == 0:
                self.reason = f"{self.name}: no history; predicting 0"
                return np.zeros((h, len(qs)))
            q = self._predict_log(h, qs)
            out = np.minimum(self.inv(q), self.cap())
        except Exception as exc:  # never crash the controller
            self.reason = f"{self.name}: predict error ({exc!r}); fell back to last value"
            out = self.inv(_last_value_log(self.hist, h, qs))
        return clean_quantiles(out)

    def cap(self) -> float:
        """Safety cap on any predicted rate: 10x the recent (decayed, one-day half-life) peak.
        Keeps log-scale tails from exploding after all-zero windows or outages."""
        return 10.0 * max(self.peak, self.c)

    def point(self, horizon_steps: int) -> np.ndarray:
        """Median path in req/s."""
        return self.predict(horizon_steps, [0.5])[:, 0]

    def point_log(self, horizon_steps: int) -> np.ndarray:
        """Median path on the log scale, cheap (no quantiles); never raises, never NaN."""
        h = max(int(horizon_steps), 1)
        try:
            refresh = getattr(self, "_set_reason", None)
            if callable(refresh):
                refresh()     # wrappers read `reason` without calling predict
            out = np.asarray(self._point_log(h), dtype=float)
            if out.shape == (h,) and np.isfinite(out).all():
                return out
        except Exception:
            pass
        last = self.hist.lag(1) if len(self.hist) else math.log(self.c)
        return np.full(h, last if math.isfinite(last) else math.log(self.c))

    def min_history(self, step_s: float) -> int:
        """Steps of history this model needs before it stops falling back (for warm-up)."""
        return 30

    # --- hooks
    def _impute_one(self) -> float:
        try:
            return float(self._point_log(1)[0])
        except Exception:
            return self.hist.lag(1) if len(self.hist) else math.log(self.c)

    def _step(self, x: float, imputed: bool) -> None:
        raise NotImplementedError

    def _point_log(self, h: int) -> np.ndarray:
        raise NotImplementedError

    def _predict_log(self, h: int, qs: list[float]) -> np.ndarray:
        raise NotImplementedError

    def _note_reason(self, base: str) -> str:
        extra = list(self.notes)
        if self.n_imputed:
            extra = [n for n in extra if "imputed" not in n] + [f"{self.n_imputed} NaN steps imputed"]
        if self.n_seen < self.shift_until:
            extra.append(f"level shift detected, intervals widened x{self.widen:g}")
        return base + ("; " + "; ".join(extra) if extra else "")


def _last_value_log(hist: Ring, h: int, qs: Sequence[float], window: int = 1440) -> np.ndarray:
    """Last value with empirical quantiles of lag-k changes (k = 1..h) on the log scale."""
    x = hist.values()[-window:]
    last = x[-1]
    z = z_of(qs)
    out = np.empty((h, len(qs)))
    d1 = np.diff(x)
    sigma1 = float(np.std(d1)) if d1.size >= 3 else DEFAULT_LOG_SIGMA
    sigma1 = max(sigma1, 0.02)
    for k in range(1, h + 1):
        d = x[k:] - x[:-k] if x.size > k else np.empty(0)
        if d.size >= 30:
            qv, _ = empirical_quantiles(d, qs)
            out[k - 1] = last + qv
        else:
            out[k - 1] = last + z * sigma1 * math.sqrt(k) * 1.5
    return out


class LastValue(StatForecaster):
    """Persistence: every future step equals the last observed one. Quantiles come from the
    empirical distribution of the series' own lag-h changes over `error_window` steps."""

    name = "last-value"

    def __init__(self, error_window: int = 1440) -> None:
        super().__init__(history_steps=error_window + 1)
        self.error_window = int(error_window)
        self._cache: tuple | None = None

    def fit(self, history, step_s: float) -> None:
        self._start(history, step_s)
        self._cache = None
        self.reason = self._note_reason(f"{self.name}: {len(self.hist)} steps of history")

    def _step(self, x: float, imputed: bool) -> None:
        self._cache = None

    def _point_log(self, h: int) -> np.ndarray:
        return np.full(h, self.hist.lag(1))

    def _predict_log(self, h: int, qs: list[float]) -> np.ndarray:
        key = (h, tuple(qs), self.n_seen // 10)
        if self._cache is not None and self._cache[0] == key:
            spread = self._cache[1]
        else:
            base = _last_value_log(self.hist, h, qs, self.error_window)
            spread = base - self.hist.lag(1)
            self._cache = (key, spread)
        self.reason = self._note_reason(f"{self.name}: persistence, {len(self.hist)} steps")
        return self.hist.lag(1) + spread


class SeasonalNaive(StatForecaster):
    """y[t+h] = y[t+h-period] (times a level-shift correction), with empirical quantiles of its
    own recent seasonal errors over `error_window` steps (the h-step error of seasonal naive is
    the same one-period difference for every h <= period). Falls back to LastValue while the
    history is shorter than a period plus `min_errors` steps."""

    name = "seasonal-naive"

    def __init__(self, period_steps: int, error_window: int | None = None, min_errors: int = 30,
                 shift_run: int = 5) -> None:
        self.period = max(int(period_steps), 1)
        self.error_window = int(error_window) if error_window else max(min(3 * self.period, 4320), 200)
        super().__init__(history_steps=self.period + self.error_window + 1)
        self.min_errors = int(min_errors)
        self.errors = Ring(self.error_window)
        self.offset = 0.0
        self.offset_at = 0                  # step count when the offset last changed
        self.detector = ShiftDetector(run=shift_run)
        self.fallback = LastValue()
        self._qcache: tuple | None = None

    def fit(self, history, step_s: float) -> None:
        x = self._start(history, step_s, self.period)
        self.fallback.fit(self.inv(x), self.step_s)
        self.errors.clear()
        self.offset = 0.0
        if x.size > self.period:
            e = x[self.period:] - x[:-self.period]
            self.errors.extend(e)
            self.detector = ShiftDetector(run=self.detector.run)
            self.detector.seed(e[-self.error_window:])
        self._qcache = None
        self._set_reason()

    def min_history(self, step_s: float) -> int:
        return self.period + self.min_errors

    @property
    def seasonal_ready(self) -> bool:
        return len(self.hist) >= self.period and len(self.errors) >= self.min_errors

    def _set_reason(self) -> None:
        if self.seasonal_ready:
            base = f"{self.name}(period={self.period}): {len(self.errors)} seasonal errors"
        else:
            base = (f"{self.name}(period={self.period}): only {len(self.hist)} steps of history "
                    f"(< period + {self.min_errors}); falling back to last value")
        if abs(self.offset) > 1e-9:
            base += f"; level corrected by x{math.exp(self.offset):.3g}"
        self.reason = self._note_reason(base)

    def _impute_one(self) -> float:
        s = self.hist.lag(self.period)
        if math.isfinite(s):
            return s + self.offset
        return self.hist.lag(1) if len(self.hist) else math.log(self.c)

    def _step(self, x: float, imputed: bool) -> None:
        self.fallback.update([math.exp(x) - self.c])
        s = self.hist.lag(self.period)
        if math.isfinite(s):
            r = x - (s + self.offset)
            if not imputed:
                self.errors.append(x - s - self.offset)
                shift = self.detector.feed(r)
                if shift is not None:
                    self.offset += shift
                    self.offset_at = self.n_seen
                    self.shift_until = self.n_seen + self.period // 4 + 10
                    self.widen = 1.5
        # The shift correction is only needed until the seasonal lag itself has moved past the
        # shift: one period later the lag already holds the new level, so the offset is dropped
        # (kept longer it compounds: after NASA's 37.7 h outage it reached x597).
        if self.offset and self.n_seen - self.offset_at >= self.period:
            self.offset = 0.0
        self._qcache = None if len(self.errors) < 200 else self._qcache
        self._set_reason()

    def _seasonal_path(self, h: int) -> np.ndarray:
        x = self.hist.values()
        idx = x.size - self.period + (np.arange(h) % self.period)
        return x[idx] + self.offset

    def _point_log(self, h: int) -> np.ndarray:
        if not self.seasonal_ready:
            return self.fallback._point_log(h)
        return self._seasonal_path(h)

    def _predict_log(self, h: int, qs: list[float]) -> np.ndarray:
        if not self.seasonal_ready:
            self._set_reason()
            return self.fallback._predict_log(h, qs)
        key = (tuple(qs), self.n_seen // 10)
        if self._qcache is not None and self._qcache[0] == key:
            qv = self._qcache[1]
        else:
            qv, widened = empirical_quantiles(self.errors.values(), qs)
            self._qcache = (key, qv)
        qv = np.asarray(qv)
        if self.n_seen < self.shift_until:
            med = np.interp(0.5, qs, qv) if len(qs) > 1 else 0.0
            qv = med + (qv - med) * self.widen
        # beyond one period the error is a sum of about ceil(h/period) seasonal differences
        mult = np.sqrt(np.ceil(np.arange(1, h + 1) / self.period))[:, None]
        self._set_reason()
        return self._seasonal_path(h)[:, None] + qv[None, :] * mult
