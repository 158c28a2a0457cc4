"""The scenario a policy plans against: prices (catalog) joined with model profiles and the SLO.

Derived here once, so every policy compares instance kinds the same way: capacity at the SLO
(from the profile) and the cost of one million requests served at that capacity.
Worked example: a kind costing 0.526 $/h that serves 400 req/s within the SLO costs
0.526 / (400 * 3600) * 1e6 = 0.365 $ per million requests when fully used.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from controller.config import Config, ConfigError
from controller.types import FleetKey
from provisioners.catalog import Catalog, CatalogError, InstanceType, load_catalog
from serving.profiles import BackendProfile, ModelProfile, ProfileError, load_profile, slo_throughput_rps


@dataclass(frozen=True)
class InstanceOption:
    key: FleetKey
    instance: InstanceType
    profile: BackendProfile
    usd_per_h: float
    capacity_rps: float          # at the SLO

    @property
    def usd_per_million(self) -> float:
        return self.usd_per_h / (self.capacity_rps * 3600.0) * 1e6


@dataclass(frozen=True)
class Scenario:
    catalog: Catalog
    model: ModelProfile
    options: tuple[InstanceOption, ...]   # allowed (type, market) kinds that can meet the SLO
    function: BackendProfile | None       # None when functions are disabled
    slo_ms: float

    def option(self, key: FleetKey) -> InstanceOption:
        for opt in self.options:
            if opt.key == key:
                return opt
        raise KeyError(key)

    def cheapest(self, market: str | None = None) -> InstanceOption:
        """The kind with the lowest cost per request at the SLO (ties: the larger capacity)."""
        pool = [o for o in self.options if market is None or o.key[1] == market]
        if not pool:
            raise ConfigError(f"no allowed instance kind in market {market!r} can meet the SLO")
        return min(pool, key=lambda o: (o.usd_per_million, -o.capacity_rps))

    @property
    def function_usd_per_request(self) -> float:
        """A warm invocation at the profile's median latency: duration (rounded up to the billing
        granularity) x memory x price, plus the request fee. E.g. 83.9 ms at 10,240 MB bills
        84 ms = 0.084 s x 10 GB x $0.0000166667 + $0.0000002 = $14.2 per million."""
        if self.function is None:
            return math.inf
        return self.catalog.functions.invocation_usd(self.function.latency_ms(1), self.function.memory_mb)

    @cached_property
    def slo_throughput_rps(self) -> dict[FleetKey, float]:
        """Per kind, the most one instance serves within the SLO (serving.profiles), computed once."""
        return {o.key: slo_throughput_rps(o.profile, self.slo_ms) for o in self.options}

    def capacity_rps(self, counts: dict[FleetKey, int]) -> float:
        return sum(self.option(k).capacity_rps * n for k, n in counts.items())

    def usd_per_h(self, counts: dict[FleetKey, int]) -> float:
        return sum(self.option(k).usd_per_h * n for k, n in counts.items())


def build_scenario(cfg: Config) -> Scenario:
    """Load catalog and profile named by the config; errors name the config key."""
    try:
        catalog = load_catalog(cfg.scenario.catalog or None)
    except CatalogError as exc:
        raise ConfigError(f"scenario.catalog: {exc}") from None
    try:
        model = load_profile(cfg.scenario.model)
    except ProfileError as exc:
        raise ConfigError(f"scenario.model: {exc}") from None
    known = set(catalog.instance_types)
    options = []
    for name in cfg.fleet.instance_types:
        if name not in known:
            raise ConfigError(f"fleet.instance_types: {name!r} is not in the catalog "
                              f"{Path(catalog.path).name} (known: {', '.join(sorted(known))})")
        try:
            profile = model.instance(name)
        except ProfileError as exc:
            raise ConfigError(f"fleet.instance_types: {exc}") from None
        capacity = profile.capacity_rps_at_slo(cfg.slo.latency_ms)
        if capacity <= 0:
            continue   # this kind cannot meet the SLO at any load
        for market in cfg.fleet.markets:
            inst = catalog.instance(name)
            options.append(InstanceOption((name, market), inst, profile, inst.price_usd_per_h(market), capacity))
    if not options:
        raise ConfigError(f"fleet.instance_types: none of {list(cfg.fleet.instance_types)} can meet "
                          f"slo.latency_ms = {cfg.slo.latency_ms:g}")
    function = None
    if cfg.functions.enabled:
        try:
            function = model.function(cfg.functions.memory_mb)
        except ProfileError as exc:
            raise ConfigError(f"functions.memory_mb = {cfg.functions.memory_mb}: {exc}") from None
    return Scenario(catalog, model, tuple(options), function, cfg.slo.latency_ms)
