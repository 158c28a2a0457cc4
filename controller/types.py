"""What a policy sees (Snapshot) and what it returns (Decision). Both are small and frozen."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from provisioners.base import DRAINING, PENDING, READY, InstanceRecord

FleetKey = tuple[str, str]   # (instance type, market)


@dataclass(frozen=True)
class Observation:
    """Load and latency measured over the last metrics window, ending at `measured_at_s`."""
    measured_at_s: float
    window_s: float
    arrival_rps: float
    p99_ms: float | None = None      # None: no request completed in the window
    faas_fraction: float = 0.0


@dataclass(frozen=True)
class Snapshot:
    now_s: float
    observation: Observation | None      # None: no data yet (a normal outcome: hold the fleet)
    fleet: tuple[InstanceRecord, ...]
    stale_after_s: float
    last_decision: Decision | None = None   # what the loop decided at the previous tick

    @property
    def metrics_fresh(self) -> bool:
        obs = self.observation
        return obs is not None and self.now_s - obs.measured_at_s <= self.stale_after_s

    def live(self, key: FleetKey | None = None) -> list[InstanceRecord]:
        """Instances that count towards a target: pending or ready, not draining."""
        return [r for r in self.fleet if r.state in (PENDING, READY)
                and (key is None or (r.instance_type, r.market) == key)]

    def counts(self) -> dict[FleetKey, int]:
        out: dict[FleetKey, int] = {}
        for r in self.live():
            key = (r.instance_type, r.market)
            out[key] = out.get(key, 0) + 1
        return out

    def ready_count(self) -> int:
        return sum(r.state == READY for r in self.fleet)

    def draining_count(self) -> int:
        return sum(r.state == DRAINING for r in self.fleet)


@dataclass(frozen=True)
class Decision:
    """Target fleet and data-plane settings, with the reason that produced them."""
    targets: tuple[tuple[FleetKey, int], ...]   # sorted, zero counts omitted
    reason: str
    spill_enabled: bool = False       # may the router send requests to functions?
    spill_threshold_ms: float = math.inf  # expected instance latency above which a request spills
    warm_concurrency: int = 0         # provisioned function concurrency
    function_memory_mb: int = 10240
    extra: tuple[tuple[str, float], ...] = field(default=())  # numbers worth recording

    def __post_init__(self):
        if not self.reason:
            raise ValueError("a Decision needs a reason")

    @staticmethod
    def make_targets(counts: dict[FleetKey, int]) -> tuple[tuple[FleetKey, int], ...]:
        return tuple(sorted((k, int(n)) for k, n in counts.items() if n > 0))

    def target(self, key: FleetKey) -> int:
        return dict(self.targets).get(key, 0)

    def total_instances(self) -> int:
        return sum(n for _, n in self.targets)


def hold_unless_fresh(snapshot: Snapshot) -> Decision | None:
    """Hold the fleet and the previous data-plane settings (spill rule, provisioned
    concurrency) when there is no fresh observation; None when metrics are fresh."""
    if snapshot.metrics_fresh:
        return None
    why = "no load observed yet" if snapshot.observation is None else "metrics are stale"
    return hold(snapshot, snapshot.last_decision, why)


def hold(snapshot: Snapshot, decision: Decision | None, why: str) -> Decision:
    """Keep the current fleet (and the previous data-plane settings), saying why."""
    targets = Decision.make_targets(snapshot.counts())
    if decision is None:
        return Decision(targets=targets, reason=f"hold: {why}")
    return Decision(targets=targets, reason=f"hold: {why}", spill_enabled=decision.spill_enabled,
                    spill_threshold_ms=decision.spill_threshold_ms,
                    warm_concurrency=decision.warm_concurrency,
                    function_memory_mb=decision.function_memory_mb)
