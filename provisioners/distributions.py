"""Non-negative delay distributions read from data files (launch delays, cold starts).

A data file writes a distribution as a small table, e.g.

    launch_to_ready_s = { kind = "lognormal", median = 150, p90 = 210, low = 60, high = 600 }

Kinds:
  fixed      value
  uniform    low, high
  normal     mean_, sd          truncated at 0 (a proper truncation, not a clamp)
  lognormal  median, p90        sigma = ln(p90 / median) / 1.2816 (1.2816 = z of the 90th percentile)
  empirical  samples            resampled with replacement; quantile() is the matching step
                                 function (inverted CDF), so it agrees with what sample() draws

`low` / `high` are optional clip bounds for every kind except uniform (where they are the
support): a sample below `low` becomes `low`, above `high` becomes `high`. `high = 0` means
"no upper bound". mean() and quantile() describe the clipped distribution, so they agree
with what sample() draws.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
from scipy import integrate
from scipy.special import ndtr, ndtri

__all__ = ["Distribution", "DistributionError", "KINDS"]

KINDS = ("fixed", "uniform", "normal", "lognormal", "empirical")
_Z90 = 1.2815515655446004          # standard normal 90th percentile
_PARAMS = {                         # required parameters per kind
    "fixed": ("value",),
    "uniform": ("low", "high"),
    "normal": ("mean_", "sd"),
    "lognormal": ("median", "p90"),
    "empirical": ("samples",),
}
_NUMERIC = ("value", "low", "high", "median", "p90", "mean_", "sd")


class DistributionError(ValueError):
    """A bad distribution spec; the message is one line naming where the spec came from."""


@dataclass(frozen=True)
class Distribution:
    kind: str
    value: float = 0.0
    low: float = 0.0
    high: float = 0.0
    median: float = 0.0
    p90: float = 0.0
    mean_: float = 0.0
    sd: float = 0.0
    samples: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "samples", tuple(float(x) for x in self.samples))
        problem = self._problem()
        if problem:
            raise DistributionError(f"Distribution(kind={self.kind!r}): {problem}")

    # ----------------------------------------------------------------- validation
    def _problem(self) -> str | None:
        if self.kind not in KINDS:
            return f"unknown kind {self.kind!r} (expected one of {', '.join(KINDS)})"
        for name in _NUMERIC:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                return f"{name} must be a finite number, got {v!r}"
            if v < 0:
                return f"{name} must be >= 0, got {v:g}"
        if self.high and self.high < self.low:
            return f"high ({self.high:g}) must be >= low ({self.low:g})"
        if self.kind == "uniform" and self.high < self.low:
            return f"high ({self.high:g}) must be >= low ({self.low:g})"
        if self.kind == "lognormal":
            if self.median <= 0:
                return f"median must be > 0, got {self.median:g}"
            if self.p90 < self.median:
                return f"p90 ({self.p90:g}) must be >= median ({self.median:g})"
        if self.kind == "empirical":
            if not self.samples:
                return "samples must be a non-empty list"
            if any(not math.isfinite(x) or x < 0 for x in self.samples):
                return "samples must be finite and >= 0"
        return None

    @classmethod
    def from_dict(cls, d: dict | float | int, where: str) -> "Distribution":
        """Build from a data-file table; a bare number means a fixed value.

        Unknown kind, unknown or missing parameter, negative or non-numeric value ->
        DistributionError(f"{where}: ...").
        """
        if isinstance(d, (int, float)) and not isinstance(d, bool):
            d = {"kind": "fixed", "value": d}
        if not isinstance(d, dict):
            raise DistributionError(f"{where}: expected a table like {{ kind = \"lognormal\", median = 150, "
                                    f"p90 = 210 }}, got {type(d).__name__}")
        if "kind" not in d:
            raise DistributionError(f"{where}: missing 'kind' (one of {', '.join(KINDS)})")
        kind = d["kind"]
        if kind not in KINDS:
            raise DistributionError(f"{where}: unknown kind {kind!r} (expected one of {', '.join(KINDS)})")
        allowed = set(_PARAMS[kind]) | {"kind", "low", "high"}
        # accept "mean" as an alias of "mean_" in files
        d = {("mean_" if k == "mean" else k): v for k, v in d.items()}
        unknown = sorted(set(d) - allowed)
        if unknown:
            raise DistributionError(f"{where}: unknown key(s) {', '.join(unknown)} for kind {kind!r} "
                                    f"(allowed: {', '.join(sorted(allowed - {'kind'}))})")
        missing = [p for p in _PARAMS[kind] if p not in d]
        if missing:
            raise DistributionError(f"{where}: kind {kind!r} needs {', '.join(missing)}")
        kwargs = {}
        for k, v in d.items():
            if k == "kind":
                continue
            if k == "samples":
                if not isinstance(v, (list, tuple)) or not all(
                        isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
                    raise DistributionError(f"{where}: samples must be a list of numbers")
                kwargs[k] = tuple(float(x) for x in v)
            else:
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise DistributionError(f"{where}: {k} must be a number, got {v!r}")
                kwargs[k] = float(v)
        try:
            return cls(kind=kind, **kwargs)
        except DistributionError as exc:
            msg = str(exc).split(": ", 1)[-1]
            raise DistributionError(f"{where}: {msg}") from None

    def to_dict(self) -> dict:
        """The inverse of from_dict (only the parameters that matter for this kind)."""
        out: dict = {"kind": self.kind}
        for f in fields(self):
            if f.name == "kind":
                continue
            v = getattr(self, f.name)
            if f.name in _PARAMS[self.kind] or (f.name in ("low", "high") and v):
                out["mean" if f.name == "mean_" else f.name] = list(v) if f.name == "samples" else v
        return out

    # ----------------------------------------------------------------- helpers
    @property
    def sigma(self) -> float:
        """Log-space sigma of a lognormal (0 for other kinds)."""
        if self.kind != "lognormal":
            return 0.0
        return math.log(self.p90 / self.median) / _Z90

    def _clip(self, x):
        if self.kind == "uniform":
            return x
        lo = self.low
        hi = self.high if self.high > 0 else np.inf
        return np.clip(x, lo, hi)

    def _normal_tail(self) -> float:
        """P(N(mean_, sd) < 0), the mass cut off by truncation at 0."""
        return float(ndtr(-self.mean_ / self.sd))

    def _raw_ppf(self, u):
        """Quantile function before clipping (u in [0, 1], vectorised)."""
        u = np.asarray(u, dtype=float)
        k = self.kind
        if k == "fixed":
            return np.full_like(u, self.value)
        if k == "uniform":
            return self.low + u * (self.high - self.low)
        if k == "normal":
            if self.sd == 0:
                return np.full_like(u, max(self.mean_, 0.0))
            a = self._normal_tail()
            uu = a + u * (1.0 - a)
            with np.errstate(over="ignore", invalid="ignore"):
                x = self.mean_ + self.sd * ndtri(np.clip(uu, 0.0, 1.0))
            return np.maximum(x, 0.0)
        if k == "lognormal":
            if self.sigma == 0:
                return np.full_like(u, self.median)
            with np.errstate(over="ignore", divide="ignore"):
                return self.median * np.exp(self.sigma * ndtri(u))
        # empirical
        return np.quantile(np.asarray(self.samples), u, method="inverted_cdf")

    # ----------------------------------------------------------------- public API
    def sample(self, rng: np.random.Generator, n: int | None = None) -> float | np.ndarray:
        """Draw one value (n=None -> float) or n values (ndarray). Never negative."""
        size = 1 if n is None else int(n)
        k = self.kind
        if k == "empirical":
            x = rng.choice(np.asarray(self.samples), size=size, replace=True)
        elif k == "lognormal":
            x = self.median * np.exp(self.sigma * rng.standard_normal(size))
        elif k == "uniform":
            x = rng.uniform(self.low, self.high, size)
        else:
            x = self._raw_ppf(rng.random(size))
        x = np.maximum(self._clip(x), 0.0)
        return float(x[0]) if n is None else x

    def quantile(self, q: float) -> float:
        if not (0.0 <= q <= 1.0):
            raise DistributionError(f"Distribution(kind={self.kind!r}): quantile q must be in [0, 1], got {q!r}")
        return float(np.maximum(self._clip(self._raw_ppf(q)), 0.0))

    def mean(self) -> float:
        k = self.kind
        lo = self.low if k != "uniform" else 0.0
        hi = (self.high if self.high > 0 else math.inf) if k != "uniform" else math.inf
        if k == "fixed":
            return float(min(max(self.value, lo), hi))
        if k == "uniform":
            return 0.5 * (self.low + self.high)
        if k == "empirical":
            return float(np.mean(self._clip(np.asarray(self.samples))))
        if k == "lognormal":
            s, mu = self.sigma, math.log(self.median)
            if s == 0:
                return float(min(max(self.median, lo), hi))
            # E[clip(X, lo, hi)] = lo P(X<lo) + int_lo^hi x f(x) dx + hi P(X>hi), with the
            # lognormal partial expectation int_a^b x f = e^(mu+s^2/2) [Phi(d(b)) - Phi(d(a))],
            # d(x) = (ln x - mu - s^2) / s.
            def cdf(x):
                return 0.0 if x <= 0 else (1.0 if math.isinf(x) else float(ndtr((math.log(x) - mu) / s)))

            def d(x):
                return -math.inf if x <= 0 else (math.inf if math.isinf(x) else (math.log(x) - mu - s * s) / s)

            pe = math.exp(mu + s * s / 2) * (float(ndtr(d(hi))) - float(ndtr(d(lo))))
            tail_hi = 0.0 if math.isinf(hi) else hi * (1.0 - cdf(hi))
            return lo * cdf(lo) + pe + tail_hi
        # normal truncated at 0, then clipped: integrate the quantile function, E[X] = int_0^1 Q(u) du
        if self.sd == 0:
            return float(min(max(max(self.mean_, 0.0), lo), hi))
        if lo == 0 and math.isinf(hi):
            # closed form of the normal truncated to [0, inf)
            alpha = -self.mean_ / self.sd
            tail = 1.0 - float(ndtr(alpha))
            if tail > 1e-12:
                pdf = math.exp(-0.5 * alpha * alpha) / math.sqrt(2 * math.pi)
                return self.mean_ + self.sd * pdf / tail
        val, _ = integrate.quad(lambda u: float(self._clip(self._raw_ppf(u))), 0.0, 1.0, limit=200)
        return float(val)

    def describe(self) -> str:
        """Short human-readable form, e.g. 'lognormal(median=150, p90=210)'."""
        parts = [f"{k}={v:g}" if not isinstance(v, list) else f"{k}=[{len(v)} values]"
                 for k, v in self.to_dict().items() if k != "kind"]
        return f"{self.kind}({', '.join(parts)})"
