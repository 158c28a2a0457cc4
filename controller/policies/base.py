"""Policy contract and registry.

A policy is a pure function of (snapshot, forecast, context, state) returning a frozen Decision
and its next state: no I/O, no clock reads (`snapshot.now_s` is the time). The same objects run in
the daemon and the simulator.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from controller.config import Config
from controller.scenario import Scenario
from controller.types import Decision, FleetKey, Snapshot


@dataclass(frozen=True)
class PolicyContext:
    config: Config
    scenario: Scenario
    trace_peak_rps: float | None = None   # known only in simulation (static-peak sizing)
    trace: Any = None                     # the whole trace: known only in simulation (the oracle)


@dataclass(frozen=True)
class ForecastNeed:
    """What a policy asks of the forecaster before each decision."""
    horizon_s: float
    quantiles: tuple[float, ...]


class Policy(Protocol):
    name: str

    def initial_state(self) -> Any: ...

    def forecast_need(self, ctx: PolicyContext) -> ForecastNeed | None:
        """None: the policy decides without a forecast."""

    def decide(self, snapshot: Snapshot, forecast: Any, ctx: PolicyContext,
               state: Any) -> tuple[Decision, Any]: ...


class BasePolicy:
    """Defaults for the optional parts of the contract: no state, no forecast."""
    name = "base"

    def initial_state(self) -> Any:
        return None

    def forecast_need(self, ctx: PolicyContext) -> ForecastNeed | None:
        return None


_REGISTRY: dict[str, Callable[[], Policy]] = {}


def register(name: str):
    def wrap(cls):
        cls.name = name
        _REGISTRY[name] = cls
        return cls
    return wrap


def policy_names() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


def make_policy(name: str) -> Policy:
    if name not in _REGISTRY:
        raise KeyError(name)
    return _REGISTRY[name]()


def instances_for(rps: float, capacity_rps: float) -> int:
    """Instances needed to serve `rps` when each serves `capacity_rps` (0 load needs 0)."""
    if rps <= 0:
        return 0
    return math.ceil(rps / capacity_rps - 1e-9)


def fit_caps(counts: dict[FleetKey, int], ctx: PolicyContext) -> tuple[dict[FleetKey, int], str]:
    """Clamp a target fleet to the per-type maximum and the hourly budget.

    Over budget, instances are removed from the kind with the highest cost per request first,
    which loses the least capacity per dollar saved. Returns the clamped fleet and a note for
    the reason string ("" when nothing was clamped).
    """
    cfg, scen = ctx.config, ctx.scenario
    out = {k: max(0, int(n)) for k, n in counts.items()}
    notes = []
    per_type: dict[str, int] = {}
    for (itype, market), n in sorted(out.items()):
        allowed = max(0, cfg.fleet.max_instances_per_type - per_type.get(itype, 0))
        if n > allowed:
            notes.append(f"{itype} capped at {cfg.fleet.max_instances_per_type} per type")
            out[(itype, market)] = allowed
        per_type[itype] = per_type.get(itype, 0) + out[(itype, market)]
    budget = cfg.budget.max_usd_per_h
    if scen.usd_per_h(out) > budget + 1e-9:
        for opt in sorted((scen.option(k) for k in out), key=lambda o: -o.usd_per_million):
            while out[opt.key] > 0 and scen.usd_per_h(out) > budget + 1e-9:
                out[opt.key] -= 1
        notes.append(f"budget guard: fleet trimmed to {scen.usd_per_h(out):.2f} $/h "
                     f"(budget.max_usd_per_h = {budget:g})")
    return out, "; ".join(notes)


def spill_threshold_ms(ctx: PolicyContext, keys=None) -> tuple[float, str]:
    """The router's spill rule from the SLO: spill a request whose expected instance latency
    leaves less than the batch-latency jitter margin before the SLO.

    The router's expectation uses median batch latencies; a batch's p99 is latency x (1 + 2.33 cv)
    (serving/profiles.py). The margin is the largest among the kinds in `keys` (the fleet being
    planned; all kinds when None or empty). E.g. SLO 250 ms, g6.xlarge batch of 64 at 30.2 ms with
    cv 0.05: margin 30.2 x 0.1165 = 3.5 ms, so requests expected later than 246.5 ms go to
    functions (they would miss the SLO on the instance; a warm function answers in ~84 ms).
    """
    options = [o for o in ctx.scenario.options if keys and o.key in keys] or list(ctx.scenario.options)
    margin = max(o.profile.p99_latency_ms(o.profile.max_batch) - o.profile.latency_ms(o.profile.max_batch)
                 for o in options)
    threshold = max(ctx.config.slo.latency_ms - margin, 0.0)
    return threshold, (f"spill beyond {threshold:.0f} ms expected (SLO {ctx.config.slo.latency_ms:g} ms "
                       f"- {margin:.1f} ms jitter margin)")
