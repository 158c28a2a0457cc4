"""Price and delay catalog: EC2 instance types and Lambda pricing for one region.

The bundled catalog is provisioners/data/catalog_aws_us_east_1.toml. Its format, one table per
instance type plus a `sources` sub-table that cites every price and delay:

    region = "us-east-1"

    [instance_types."g4dn.xlarge"]
    gpu = "T4"                       # "" for CPU-only types
    gpus = 1
    vcpu = 4
    memory_gib = 16
    on_demand_usd_per_h = 0.526
    spot_usd_per_h = 0.2086
    spot_interruptions_per_h = 1.44e-4
    billing_minimum_s = 60
    launch_to_ready_s = { kind = "lognormal", median = 150, p90 = 210, low = 60, high = 600 }

    [instance_types."g4dn.xlarge".sources]
    specs = "..."                    # gpu, gpus, vcpu, memory_gib
    on_demand_usd_per_h = "..."      # every field in REQUIRED_INSTANCE_SOURCES must be cited
    ...

    [functions]                      # Lambda, x86
    arch = "x86_64"
    usd_per_gb_s = 0.0000166667
    ...
    [functions.sources]
    usd_per_gb_s = "..."

Every error is one line, "<file>: <key>: <problem>", never a traceback.
"""
from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from provisioners.distributions import Distribution, DistributionError

__all__ = [
    "Catalog", "CatalogError", "FunctionPricing", "InstanceType", "load_catalog",
    "BUNDLED_CATALOG", "MARKETS", "REQUIRED_INSTANCE_SOURCES", "REQUIRED_FUNCTION_SOURCES",
]

BUNDLED_CATALOG = Path(__file__).resolve().parent / "data" / "catalog_aws_us_east_1.toml"
MARKETS = ("on-demand", "spot")

# Every price and delay must carry a source (a citation, or "assumption: <why>").
REQUIRED_INSTANCE_SOURCES = (
    "specs", "on_demand_usd_per_h", "spot_usd_per_h", "spot_interruptions_per_h",
    "launch_to_ready_s", "billing_minimum_s",
)
REQUIRED_FUNCTION_SOURCES = (
    "usd_per_gb_s", "usd_per_request", "provisioned_usd_per_gb_s",
    "provisioned_duration_usd_per_gb_s", "billing_granularity_ms", "memory_mb",
    "account_concurrency_limit", "burst_scaling_per_10s", "bills_init_phase",
)


class CatalogError(ValueError):
    """A bad catalog file or lookup; one line: "<file>: <key>: <problem>"."""


def _ro(d: Mapping[str, str] | None) -> Mapping[str, str]:
    return MappingProxyType(dict(d or {}))


@dataclass(frozen=True)
class InstanceType:
    name: str
    gpu: str
    gpus: int
    vcpu: int
    memory_gib: float
    on_demand_usd_per_h: float
    spot_usd_per_h: float
    spot_interruptions_per_h: float
    launch_to_ready_s: Distribution          # boot + container pull + model load until Triton is ready
    billing_minimum_s: float = 60.0
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sources", _ro(self.sources))

    def price_usd_per_h(self, market: str) -> float:
        """On-demand or spot price; any other market -> CatalogError."""
        if market == "on-demand":
            return self.on_demand_usd_per_h
        if market == "spot":
            return self.spot_usd_per_h
        raise CatalogError(f"{self.name}: market: unknown market {market!r} (expected 'on-demand' or 'spot')")

    def billed_usd(self, seconds: float, market: str = "on-demand") -> float:
        """Cost of one instance running `seconds` (per-second billing with the minimum)."""
        return max(seconds, self.billing_minimum_s) * self.price_usd_per_h(market) / 3600.0


@dataclass(frozen=True)
class FunctionPricing:
    arch: str
    usd_per_gb_s: float
    usd_per_request: float
    provisioned_usd_per_gb_s: float           # charge for keeping provisioned concurrency configured
    provisioned_duration_usd_per_gb_s: float  # duration price for invocations served by provisioned envs
    billing_granularity_ms: float = 1.0
    min_memory_mb: int = 128
    max_memory_mb: int = 10240
    account_concurrency_limit: int = 1000
    burst_scaling_per_10s: int = 1000          # new execution environments per function per 10 s
    bills_init_phase: bool = True              # INIT (cold start) duration is billed
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sources", _ro(self.sources))

    def _check_memory(self, memory_mb: int) -> None:
        if not (self.min_memory_mb <= memory_mb <= self.max_memory_mb):
            raise CatalogError(f"functions: memory_mb: {memory_mb} is outside "
                               f"{self.min_memory_mb}-{self.max_memory_mb} MB")

    def billed_ms(self, duration_ms: float) -> float:
        """Duration rounded up to the billing granularity (1.2 ms -> 2 ms at 1 ms granularity)."""
        if duration_ms < 0 or not math.isfinite(duration_ms):
            raise CatalogError(f"functions: duration_ms: must be a finite number >= 0, got {duration_ms!r}")
        g = self.billing_granularity_ms
        # the 1e-9 guard keeps float noise (2.0000000000004 ms) from billing an extra unit
        return math.ceil(duration_ms / g - 1e-9) * g

    def duration_usd(self, duration_ms: float, memory_mb: int, provisioned: bool = False) -> float:
        """Duration charge of one invocation (rounded up to the billing granularity).

        provisioned=True prices an invocation served by a provisioned-concurrency environment.
        Worked example: 1.2 ms at 1024 MB bills 2 ms = 0.002 s * 1 GB * 0.0000166667 $/GB-s.
        """
        self._check_memory(memory_mb)
        rate = self.provisioned_duration_usd_per_gb_s if provisioned else self.usd_per_gb_s
        return self.billed_ms(duration_ms) / 1000.0 * (memory_mb / 1024.0) * rate

    def invocation_usd(self, duration_ms: float, memory_mb: int, provisioned: bool = False) -> float:
        """Duration charge plus the per-request charge."""
        return self.duration_usd(duration_ms, memory_mb, provisioned) + self.usd_per_request

    def provisioned_usd(self, memory_mb: int, environments: int, seconds: float) -> float:
        """Charge for keeping `environments` provisioned for `seconds` (whether used or not)."""
        self._check_memory(memory_mb)
        return environments * seconds * (memory_mb / 1024.0) * self.provisioned_usd_per_gb_s


@dataclass(frozen=True)
class Catalog:
    region: str
    instance_types: Mapping[str, InstanceType] = field(hash=False)
    functions: FunctionPricing
    path: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "instance_types", MappingProxyType(dict(self.instance_types)))

    def instance(self, name: str) -> InstanceType:
        try:
            return self.instance_types[name]
        except KeyError:
            raise CatalogError(f"{Path(self.path).name}: instance_types: unknown instance type {name!r} "
                               f"(known: {', '.join(sorted(self.instance_types))})") from None


# --------------------------------------------------------------------------- loading
class _Reader:
    """Typed access to a TOML table with one-line errors naming file and key."""

    def __init__(self, file: str):
        self.file = file

    def err(self, key: str, problem: str) -> CatalogError:
        return CatalogError(f"{self.file}: {key}: {problem}")

    def table(self, d: Mapping[str, Any], key: str, prefix: str) -> dict:
        full = f"{prefix}{key}"
        if key not in d:
            raise self.err(full, "missing table")
        v = d[key]
        if not isinstance(v, dict):
            raise self.err(full, f"expected a table, got {type(v).__name__}")
        return v

    def num(self, d: Mapping[str, Any], key: str, prefix: str, *, default: float | None = None,
            integer: bool = False, positive: bool = False) -> float:
        full = f"{prefix}{key}"
        if key not in d:
            if default is None:
                raise self.err(full, "missing")
            return default
        v = d[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise self.err(full, f"must be a number, got {v!r}")
        if integer and int(v) != v:
            raise self.err(full, f"must be a whole number, got {v!r}")
        if v < 0:
            raise self.err(full, f"must be >= 0, got {v:g}")
        if positive and v == 0:
            raise self.err(full, "must be > 0, got 0")
        return int(v) if integer else float(v)

    def text(self, d: Mapping[str, Any], key: str, prefix: str, *, default: str | None = None) -> str:
        full = f"{prefix}{key}"
        if key not in d:
            if default is None:
                raise self.err(full, "missing")
            return default
        v = d[key]
        if not isinstance(v, str):
            raise self.err(full, f"must be a string, got {v!r}")
        return v

    def sources(self, d: Mapping[str, Any], prefix: str, required: tuple[str, ...]) -> dict[str, str]:
        src = d.get("sources")
        if src is None:
            raise self.err(f"{prefix}sources", f"missing table (cite every price and delay: "
                                                f"{', '.join(required)})")
        if not isinstance(src, dict):
            raise self.err(f"{prefix}sources", f"expected a table, got {type(src).__name__}")
        for k, v in src.items():
            if not isinstance(v, str) or not v.strip():
                raise self.err(f"{prefix}sources.{k}", "must be a non-empty string")
        for k in required:
            if k not in src:
                raise self.err(f"{prefix}sources.{k}", "missing source (a citation, or \"assumption: <why>\")")
        return dict(src)


_INSTANCE_KEYS = {"gpu", "gpus", "vcpu", "memory_gib", "on_demand_usd_per_h", "spot_usd_per_h",
                  "spot_interruptions_per_h", "billing_minimum_s", "launch_to_ready_s", "sources"}
_FUNCTION_KEYS = {"arch", "usd_per_gb_s", "usd_per_request", "provisioned_usd_per_gb_s",
                  "provisioned_duration_usd_per_gb_s", "billing_granularity_ms", "min_memory_mb",
                  "max_memory_mb", "account_concurrency_limit", "burst_scaling_per_10s",
                  "bills_init_phase", "sources"}


def _instance(r: _Reader, name: str, d: Mapping[str, Any]) -> InstanceType:
    p = f"instance_types.{name}."
    unknown = sorted(set(d) - _INSTANCE_KEYS)
    if unknown:
        raise r.err(f"{p}{unknown[0]}", f"unknown key (allowed: {', '.join(sorted(_INSTANCE_KEYS))})")
    if "launch_to_ready_s" not in d:
        raise r.err(f"{p}launch_to_ready_s", "missing")
    try:
        launch = Distribution.from_dict(d["launch_to_ready_s"], f"{r.file}: {p}launch_to_ready_s")
    except DistributionError as exc:
        raise CatalogError(str(exc)) from None
    inst = InstanceType(
        name=name,
        gpu=r.text(d, "gpu", p, default=""),
        gpus=int(r.num(d, "gpus", p, default=0, integer=True)),
        vcpu=int(r.num(d, "vcpu", p, integer=True, positive=True)),
        memory_gib=r.num(d, "memory_gib", p, positive=True),
        on_demand_usd_per_h=r.num(d, "on_demand_usd_per_h", p, positive=True),
        spot_usd_per_h=r.num(d, "spot_usd_per_h", p, positive=True),
        spot_interruptions_per_h=r.num(d, "spot_interruptions_per_h", p),
        launch_to_ready_s=launch,
        billing_minimum_s=r.num(d, "billing_minimum_s", p, default=60.0),
        sources=r.sources(d, p, REQUIRED_INSTANCE_SOURCES),
    )
    if inst.gpus and not inst.gpu:
        raise r.err(f"{p}gpu", f"missing GPU model for gpus = {inst.gpus}")
    if inst.spot_usd_per_h > inst.on_demand_usd_per_h:
        raise r.err(f"{p}spot_usd_per_h", f"{inst.spot_usd_per_h:g} exceeds the on-demand price "
                                           f"{inst.on_demand_usd_per_h:g}")
    return inst


def _functions(r: _Reader, d: Mapping[str, Any]) -> FunctionPricing:
    p = "functions."
    unknown = sorted(set(d) - _FUNCTION_KEYS)
    if unknown:
        raise r.err(f"{p}{unknown[0]}", f"unknown key (allowed: {', '.join(sorted(_FUNCTION_KEYS))})")
    bills_init = d.get("bills_init_phase", True)
    if not isinstance(bills_init, bool):
        raise r.err(f"{p}bills_init_phase", f"must be true or false, got {bills_init!r}")
    fp = FunctionPricing(
        arch=r.text(d, "arch", p, default="x86_64"),
        usd_per_gb_s=r.num(d, "usd_per_gb_s", p, positive=True),
        usd_per_request=r.num(d, "usd_per_request", p),
        provisioned_usd_per_gb_s=r.num(d, "provisioned_usd_per_gb_s", p),
        provisioned_duration_usd_per_gb_s=r.num(d, "provisioned_duration_usd_per_gb_s", p),
        billing_granularity_ms=r.num(d, "billing_granularity_ms", p, default=1.0, positive=True),
        min_memory_mb=int(r.num(d, "min_memory_mb", p, default=128, integer=True, positive=True)),
        max_memory_mb=int(r.num(d, "max_memory_mb", p, default=10240, integer=True, positive=True)),
        account_concurrency_limit=int(r.num(d, "account_concurrency_limit", p, default=1000, integer=True)),
        burst_scaling_per_10s=int(r.num(d, "burst_scaling_per_10s", p, default=1000, integer=True)),
        bills_init_phase=bills_init,
        sources=r.sources(d, p, REQUIRED_FUNCTION_SOURCES),
    )
    if fp.max_memory_mb < fp.min_memory_mb:
        raise r.err(f"{p}max_memory_mb", f"{fp.max_memory_mb} is below min_memory_mb {fp.min_memory_mb}")
    return fp


def load_catalog(path: str | Path | None = None) -> Catalog:
    """Load a catalog TOML: a path, a bundled catalog's name ("local" reads
    provisioners/data/catalog_local.toml), or None for the bundled AWS us-east-1 catalog."""
    p = Path(path) if path is not None else BUNDLED_CATALOG
    bundled = BUNDLED_CATALOG.parent / f"catalog_{path}.toml"
    if path is not None and not p.suffix and "/" not in str(path) and bundled.is_file():
        p = bundled
    file = str(p)
    if not p.is_file():
        raise CatalogError(f"{file}: file: not found")
    try:
        with p.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"{file}: toml: {' '.join(str(exc).split())}") from None
    except OSError as exc:
        raise CatalogError(f"{file}: file: {exc.strerror or exc}") from None
    r = _Reader(file)
    region = r.text(data, "region", "")
    types_tbl = r.table(data, "instance_types", "")
    if not types_tbl:
        raise r.err("instance_types", "no instance types defined")
    instances = {}
    for name, d in types_tbl.items():
        if not isinstance(d, dict):
            raise r.err(f"instance_types.{name}", f"expected a table, got {type(d).__name__}")
        instances[name] = _instance(r, name, d)
    functions = _functions(r, r.table(data, "functions", ""))
    return Catalog(region=region, instance_types=instances, functions=functions, path=file)
