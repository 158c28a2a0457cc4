"""The simulator's provisioners: the same verbs as AWS and local, over the simulated fleet.

Launch-to-ready delays are drawn from the catalog's distribution per instance type. With a warm
start, launches made at t = 0 are ready at once: the system was running before the trace began.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from provisioners.base import FunctionSpec, InstanceRecord, LaunchSpec
from provisioners.catalog import Catalog
from simulator.fleet import SimFleet, SimInstance
from simulator.functions import SimFunctionPool


class SimClock:
    def __init__(self, now_s: float = 0.0):
        self.now_s = now_s


class SimInstanceProvisioner:
    def __init__(self, fleet: SimFleet, catalog: Catalog, clock: SimClock, rng: np.random.Generator,
                 warm_start: bool, on_launch: Callable[[SimInstance], None] | None = None):
        self.fleet, self.catalog, self.clock, self.rng = fleet, catalog, clock, rng
        self.warm_start = warm_start
        self.on_launch = on_launch     # e.g. draws a spot instance's interruption time

    def launch(self, spec: LaunchSpec) -> list[InstanceRecord]:
        itype = self.catalog.instance(spec.instance_type)
        now = self.clock.now_s
        out = []
        for _ in range(spec.count):
            delay = 0.0 if (self.warm_start and now == 0.0) else float(itype.launch_to_ready_s.sample(self.rng))
            inst = self.fleet.add(spec.instance_type, spec.market, itype.price_usd_per_h(spec.market),
                                  itype.billing_minimum_s, now, now + delay, spec.decision_id)
            if self.on_launch is not None:
                self.on_launch(inst)
            out.append(InstanceRecord(inst.id, inst.instance_type, inst.market, "pending", now, None, None,
                                      spec.decision_id))
        return out

    def terminate(self, ids: list[str]) -> None:
        for inst_id in ids:
            self.fleet.stop(inst_id, self.clock.now_s)

    def describe(self) -> list[InstanceRecord]:
        return self.fleet.records(self.clock.now_s)


class SimFunctionProvisioner:
    def __init__(self, pool: SimFunctionPool, clock: SimClock):
        self.pool, self.clock = pool, clock

    def configure(self, spec: FunctionSpec) -> None:
        self.pool.configure(spec)

    def describe_function(self) -> FunctionSpec:
        return self.pool.spec
