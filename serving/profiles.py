"""Model profiles: batch latency per backend (instance type or function memory size).

A profile file (bundled: serving/data/profiles/<name>.toml) has one table per backend:

    model = "resnet50"

    [backends."g4dn.xlarge"]
    kind = "instance"
    max_batch = 64
    # one of three latency forms (median ms of one batch of size b):
    batch_latency_ms = [3.0, 4.0, ...]            # full table, b = 1..max_batch
    # latency_a_ms = 10.0; latency_c_ms = 38.0     # affine fit a + c*b, expanded to a table
    # measured_batches = [1, 2, 4, 8]; measured_latency_ms = [...]   # interpolated linearly in b
    jitter_cv = 0.05
    max_queue_delay_ms = 5.0                      # Triton max_queue_delay_microseconds / 1000
    source = "..."

    [backends."lambda-10240"]
    kind = "function"
    memory_mb = 10240
    max_batch = 1
    batch_latency_ms = [84.0]
    jitter_cv = 0.15
    max_queue_delay_ms = 0
    cold_start_s = { kind = "lognormal", median = 6, p90 = 11, low = 2, high = 30 }
    source = "..."

Errors are one line, "<file>: <key>: <problem>".
"""
from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

import numpy as np
from scipy.special import ndtr

from provisioners.distributions import Distribution, DistributionError

__all__ = ["BackendProfile", "ModelProfile", "ProfileError", "load_profile", "PROFILE_DIR",
           "P99_Z", "HEADROOM", "bundled_profiles", "slo_throughput_rps", "within_slo_share"]

PROFILE_DIR = Path(__file__).resolve().parent / "data" / "profiles"
P99_Z = 2.33        # z of the 99th percentile: latency * (1 + 2.33 * cv) ~ p99 of one batch
HEADROOM = 0.9      # run at most 90% of the batch throughput at the chosen batch size


class ProfileError(ValueError):
    """A bad profile file or lookup; one line: "<file>: <key>: <problem>"."""


@dataclass(frozen=True)
class BackendProfile:
    backend: str                 # instance type name, or "lambda-<memory_mb>"
    kind: str                    # "instance" | "function"
    max_batch: int
    batch_latency_ms: tuple[float, ...]   # median latency of a batch of size b at index b-1
    jitter_cv: float             # coefficient of variation of batch latency (0 = deterministic)
    max_queue_delay_ms: float    # Triton dynamic batcher delay (ms) for instances; 0 for functions
    memory_mb: int = 0           # functions
    cold_start_s: Distribution | None = None   # functions: init (process start, imports, model load)
    source: str = ""
    jitter_dist: str = "lognormal"       # batch latency = median x a mean-1 multiplier: "lognormal"
                                         # with jitter_cv, or "exponential" (cv 1; queueing-theory checks)
    preferred_batch_sizes: tuple[int, ...] = ()   # Triton dynamic_batching preferred_batch_size

    def __post_init__(self) -> None:
        object.__setattr__(self, "batch_latency_ms", tuple(float(x) for x in self.batch_latency_ms))
        where = f"backend {self.backend!r}"
        if self.kind not in ("instance", "function"):
            raise ProfileError(f"{where}: kind: must be 'instance' or 'function', got {self.kind!r}")
        if self.max_batch < 1 or len(self.batch_latency_ms) != self.max_batch:
            raise ProfileError(f"{where}: batch_latency_ms: needs max_batch = {self.max_batch} entries, "
                               f"got {len(self.batch_latency_ms)}")
        if any(not math.isfinite(x) or x <= 0 for x in self.batch_latency_ms):
            raise ProfileError(f"{where}: batch_latency_ms: every latency must be a finite number > 0")
        if self.jitter_cv < 0 or self.max_queue_delay_ms < 0:
            raise ProfileError(f"{where}: jitter_cv/max_queue_delay_ms: must be >= 0")
        if self.jitter_dist not in ("lognormal", "exponential"):
            raise ProfileError(f"{where}: jitter_dist: must be 'lognormal' or 'exponential', got {self.jitter_dist!r}")
        object.__setattr__(self, "preferred_batch_sizes", tuple(sorted(int(b) for b in self.preferred_batch_sizes)))
        if any(not 1 <= b <= self.max_batch for b in self.preferred_batch_sizes):
            raise ProfileError(f"{where}: preferred_batch_sizes: each must be within 1..max_batch = {self.max_batch}")

    def latency_ms(self, batch: int) -> float:
        """Median latency of one batch of `batch` requests (1 <= batch <= max_batch)."""
        if not (1 <= batch <= self.max_batch) or int(batch) != batch:
            raise ProfileError(f"backend {self.backend!r}: batch: {batch!r} outside 1..{self.max_batch}")
        return self.batch_latency_ms[int(batch) - 1]

    def throughput_rps(self, batch: int) -> float:
        """Requests per second when back-to-back batches of `batch` run: batch * 1000 / latency."""
        return batch * 1000.0 / self.latency_ms(batch)

    def p99_latency_ms(self, batch: int) -> float:
        """Rough p99 of one batch's latency: median * (1 + 2.33 * cv)."""
        return self.latency_ms(batch) * (1.0 + P99_Z * self.jitter_cv)

    def best_batch_at_slo(self, slo_ms: float) -> int:
        """The batch size used by capacity_rps_at_slo (0 when no batch size meets the SLO)."""
        if self.kind == "function":
            return 1 if self.p99_latency_ms(1) <= slo_ms else 0
        best, best_tput = 0, 0.0
        for b in range(1, self.max_batch + 1):
            if 2.0 * self.p99_latency_ms(b) + self.max_queue_delay_ms <= slo_ms:
                t = self.throughput_rps(b)
                if t > best_tput:
                    best, best_tput = b, t
        return best

    def capacity_rps_at_slo(self, slo_ms: float) -> float:
        """Highest sustained req/s at which the p99 latency stays within slo_ms (0: cannot meet it).

        Rule (conservative, analytic). Near capacity a request arriving at an instance can wait
        for (1) the batch in service to finish, (2) the batcher's max_queue_delay while its batch
        forms, and (3) its own batch. So a batch size b is feasible when
            2 * latency_ms(b) * (1 + 2.33 * jitter_cv) + max_queue_delay_ms <= slo_ms
        (the factor inflates the median batch latency to its p99). Among feasible b we take the
        one with the highest throughput; when throughput rises with b (the normal case) that is
        the largest feasible b, and it makes capacity non-decreasing in the SLO.
        Capacity = 0.9 * throughput_rps(b): a queue fed at 100% of service rate is unstable
        (its waiting time grows without bound under random arrivals), so we keep 10% headroom;
        at 90% utilisation the extra queueing is about one batch, which the 2x term covers.

        Worked example: latencies 10, 15, 20, 25 ms for b = 1..4, cv = 0, delay 5 ms, SLO 50 ms.
          b = 4: 2*25 + 5 = 55 > 50, infeasible;  b = 3: 2*20 + 5 = 45 <= 50, feasible.
          capacity = 0.9 * 3 * 1000 / 20 = 135 req/s.
        Bundled T4 (g4dn.xlarge), b = 64: 53.19 ms * (1 + 2.33*0.05) = 59.4 ms; 2*59.4 + 5 = 124 ms
          <= 250 ms, so capacity = 0.9 * 64000 / 53.19 = 1083 req/s.

        Functions serve one request per environment with no batching: the per-environment rate
        1000 / latency_ms(1) if latency_ms(1) * (1 + 2.33 * cv) <= slo_ms, else 0.
        """
        b = self.best_batch_at_slo(slo_ms)
        if b == 0:
            return 0.0
        if self.kind == "function":
            return 1000.0 / self.latency_ms(1)
        return HEADROOM * self.throughput_rps(b)


@dataclass(frozen=True)
class ModelProfile:
    model: str
    backends: Mapping[str, BackendProfile] = field(hash=False)
    path: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "backends", MappingProxyType(dict(self.backends)))

    def instance(self, instance_type: str) -> BackendProfile:
        p = self.backends.get(instance_type)
        if p is None or p.kind != "instance":
            known = sorted(n for n, b in self.backends.items() if b.kind == "instance")
            raise ProfileError(f"{Path(self.path).name}: backends: no instance profile for "
                               f"{instance_type!r} (profiled: {', '.join(known)})")
        return p

    def function(self, memory_mb: int) -> BackendProfile:
        for p in self.backends.values():
            if p.kind == "function" and p.memory_mb == memory_mb:
                return p
        sizes = ", ".join(str(s) for s in self.function_memory_sizes())
        raise ProfileError(f"{Path(self.path).name}: backends: no function profile for {memory_mb} MB "
                           f"(profiled sizes: {sizes or 'none'})")

    def function_memory_sizes(self) -> tuple[int, ...]:
        return tuple(sorted(p.memory_mb for p in self.backends.values() if p.kind == "function"))


# --------------------------------------------------------------------------- loading
_KEYS = {"kind", "max_batch", "batch_latency_ms", "latency_a_ms", "latency_c_ms", "measured_batches",
         "measured_latency_ms", "jitter_cv", "jitter_dist", "max_queue_delay_ms", "memory_mb", "cold_start_s",
         "source", "notes", "preferred_batch_sizes", "concurrency_sweep"}   # the sweep: information only


def within_slo_share(profile: BackendProfile, latency_ms: float, slo_ms: float) -> float:
    """P(a batch of profile latency `latency_ms` finishes within the SLO): 1 when that latency is
    within it (an upper bound), else the CDF at slo / latency of the mean-1 jitter multiplier the
    simulator applies (serving/profiles.py)."""
    r = slo_ms / latency_ms
    if r >= 1.0:
        return 1.0
    if profile.jitter_dist == "exponential":
        return 1.0 - math.exp(-r)
    if profile.jitter_cv == 0:
        return 0.0
    sigma = math.sqrt(math.log1p(profile.jitter_cv ** 2))   # lognormal with mean 1
    return float(ndtr((math.log(r) + sigma * sigma / 2) / sigma))


def slo_throughput_rps(profile: BackendProfile, slo_ms: float) -> float:
    """Upper bound on one instance's SLO-meeting throughput: max over b of
    b * 1000 / latency(b) * P(batch of b within the SLO). E.g. g6.xlarge at 250 ms: b = 64,
    64000 / 30.215 = 2,118 req/s (capacity_rps_at_slo is 0.9 of that, 1,906)."""
    return max(b * 1000.0 / profile.latency_ms(b) * within_slo_share(profile, profile.latency_ms(b), slo_ms)
               for b in range(1, profile.max_batch + 1))


def bundled_profiles() -> tuple[str, ...]:
    return tuple(sorted(p.stem for p in PROFILE_DIR.glob("*.toml")))


def _err(file: str, key: str, problem: str) -> ProfileError:
    return ProfileError(f"{file}: {key}: {problem}")


def _num(file: str, d: Mapping[str, Any], key: str, p: str, *, default: float | None = None,
         integer: bool = False, positive: bool = False) -> float:
    if key not in d:
        if default is None:
            raise _err(file, p + key, "missing")
        return default
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise _err(file, p + key, f"must be a number, got {v!r}")
    if integer and int(v) != v:
        raise _err(file, p + key, f"must be a whole number, got {v!r}")
    if v < 0 or (positive and v == 0):
        raise _err(file, p + key, f"must be {'> 0' if positive else '>= 0'}, got {v:g}")
    return int(v) if integer else float(v)


def _num_list(file: str, d: Mapping[str, Any], key: str, p: str) -> list[float]:
    v = d[key]
    if not isinstance(v, list) or not v or not all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v):
        raise _err(file, p + key, "must be a non-empty list of numbers")
    if any(x <= 0 for x in v):
        raise _err(file, p + key, f"every value must be > 0, got {min(v):g}")
    return [float(x) for x in v]


def _latency_table(file: str, d: Mapping[str, Any], p: str, max_batch: int) -> tuple[float, ...]:
    forms = [f for f in ("batch_latency_ms", "latency_a_ms", "measured_batches") if f in d]
    if len(forms) != 1:
        raise _err(file, p + "batch_latency_ms",
                   "give exactly one of batch_latency_ms (table), latency_a_ms + latency_c_ms (affine fit), "
                   "or measured_batches + measured_latency_ms (interpolated)")
    form = forms[0]
    if form == "batch_latency_ms":
        table = _num_list(file, d, "batch_latency_ms", p)
        if len(table) != max_batch:
            raise _err(file, p + "batch_latency_ms", f"has {len(table)} entries, max_batch is {max_batch}")
        return tuple(table)
    if form == "latency_a_ms":
        a = _num(file, d, "latency_a_ms", p)
        c = _num(file, d, "latency_c_ms", p)
        if a + c <= 0:
            raise _err(file, p + "latency_a_ms", "a + c must be > 0 (latency of a batch of 1)")
        return tuple(a + c * b for b in range(1, max_batch + 1))
    if "measured_latency_ms" not in d:
        raise _err(file, p + "measured_latency_ms", "missing (needed with measured_batches)")
    xs = _num_list(file, d, "measured_batches", p)
    ys = _num_list(file, d, "measured_latency_ms", p)
    if len(xs) != len(ys):
        raise _err(file, p + "measured_latency_ms", f"has {len(ys)} values for {len(xs)} measured_batches")
    if any(int(x) != x for x in xs) or any(b2 <= b1 for b1, b2 in zip(xs, xs[1:])):
        raise _err(file, p + "measured_batches", "must be increasing whole numbers")
    if xs[0] != 1 or xs[-1] < max_batch:
        raise _err(file, p + "measured_batches", f"must start at 1 and reach max_batch = {max_batch}")
    return tuple(float(v) for v in np.interp(np.arange(1, max_batch + 1), xs, ys))


def _backend(file: str, name: str, d: Mapping[str, Any]) -> BackendProfile:
    p = f"backends.{name}."
    unknown = sorted(set(d) - _KEYS)
    if unknown:
        raise _err(file, p + unknown[0], f"unknown key (allowed: {', '.join(sorted(_KEYS))})")
    kind = d.get("kind")
    if kind not in ("instance", "function"):
        raise _err(file, p + "kind", f"must be 'instance' or 'function', got {kind!r}")
    max_batch = int(_num(file, d, "max_batch", p, integer=True, positive=True))
    table = _latency_table(file, d, p, max_batch)
    source = d.get("source")
    if not isinstance(source, str) or not source.strip():
        raise _err(file, p + "source", "missing (a citation, or \"assumption: <why>\")")
    memory_mb = 0
    cold = None
    delay = _num(file, d, "max_queue_delay_ms", p, default=0.0)
    if kind == "function":
        memory_mb = int(_num(file, d, "memory_mb", p, integer=True, positive=True))
        if name != f"lambda-{memory_mb}":
            raise _err(file, p + "memory_mb", f"function backends are named 'lambda-<memory_mb>'; "
                                              f"{name!r} has memory_mb = {memory_mb}")
        if max_batch != 1:
            raise _err(file, p + "max_batch", "functions serve one request per environment; must be 1")
        if delay:
            raise _err(file, p + "max_queue_delay_ms", "functions do not batch; must be 0")
        if "cold_start_s" not in d:
            raise _err(file, p + "cold_start_s", "missing (functions need a cold-start distribution)")
        try:
            cold = Distribution.from_dict(d["cold_start_s"], f"{file}: {p}cold_start_s")
        except DistributionError as exc:
            raise ProfileError(str(exc)) from None
    elif "cold_start_s" in d or "memory_mb" in d:
        bad = "cold_start_s" if "cold_start_s" in d else "memory_mb"
        raise _err(file, p + bad, "only function backends take this key")
    try:
        return BackendProfile(
            backend=name, kind=kind, max_batch=max_batch, batch_latency_ms=table,
            jitter_cv=_num(file, d, "jitter_cv", p, default=0.0),
            max_queue_delay_ms=delay, memory_mb=memory_mb, cold_start_s=cold, source=source,
            jitter_dist=d.get("jitter_dist", "lognormal"),
            preferred_batch_sizes=tuple(_num_list(file, d, "preferred_batch_sizes", p))
            if "preferred_batch_sizes" in d else (),
        )
    except ProfileError as exc:
        raise ProfileError(f"{file}: {exc}") from None


def load_profile(name_or_path: str = "resnet50") -> ModelProfile:
    """A bundled profile by name (serving/data/profiles/<name>.toml) or a path to a profile TOML."""
    s = str(name_or_path)
    path = Path(s)
    if not (s.endswith(".toml") or path.is_file() or "/" in s or "\\" in s):
        path = PROFILE_DIR / f"{s}.toml"
        if not path.is_file():
            raise ProfileError(f"{s}: profile: no bundled profile of that name "
                               f"(bundled: {', '.join(bundled_profiles())}; or give a path to a .toml)")
    file = str(path)
    if not path.is_file():
        raise ProfileError(f"{file}: file: not found")
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{file}: toml: {' '.join(str(exc).split())}") from None
    except OSError as exc:
        raise ProfileError(f"{file}: file: {exc.strerror or exc}") from None
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise _err(file, "model", "missing model name")
    backends_tbl = data.get("backends")
    if not isinstance(backends_tbl, dict) or not backends_tbl:
        raise _err(file, "backends", "missing or empty table of backends")
    backends = {}
    for name, d in backends_tbl.items():
        if not isinstance(d, dict):
            raise _err(file, f"backends.{name}", f"expected a table, got {type(d).__name__}")
        backends[name] = _backend(file, name, d)
    return ModelProfile(model=model, backends=backends, path=file)
