"""Simulated instance fleet: the arrays the kernel works on, plus life cycle and billing.

Billing follows EC2 Linux per-second billing with a 60 s minimum, from launch (not from ready):
an instance that lives 30 s is billed 60 s; one that lives 90.2 s is billed 91 s. The time
series accrues cost as instances run and adds the top-up to the minimum in the interval where an
instance ends, so the intervals sum exactly to the per-instance bills.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from provisioners.base import DRAINING, PENDING, READY, TERMINATED, InstanceRecord


@dataclass
class SimInstance:
    id: str
    instance_type: str
    market: str
    slot: int
    usd_per_h: float
    billing_minimum_s: float
    launched_at_s: float
    ready_at_s: float
    decision_id: str
    drain_at_s: float | None = None
    ended_at_s: float | None = None     # terminated: billing stops here
    accrued_to_s: float = 0.0           # the time series has billed it up to here

    def state(self, now_s: float) -> str:
        if self.ended_at_s is not None and self.ended_at_s <= now_s:
            return TERMINATED
        if self.drain_at_s is not None:
            return DRAINING
        return READY if self.ready_at_s <= now_s else PENDING

    def billed_s(self) -> float:
        return max(self.billing_minimum_s, math.ceil(self.ended_at_s - self.launched_at_s - 1e-9))

    def bill_usd(self) -> float:
        return self.billed_s() * self.usd_per_h / 3600.0


class SimFleet:
    """Instance state for the kernel, in slot-indexed arrays that grow as the fleet grows."""

    def __init__(self, type_index: dict[str, int], queue_capacity: int, slots: int = 16):
        self.type_index = type_index
        self.queue_capacity = queue_capacity
        self.instances: dict[str, SimInstance] = {}
        self.finished: list[SimInstance] = []   # ended and fully accrued
        self._free_slots: list[int] = []
        self.n_slots = 0
        self.inst_type = np.zeros(0, np.int64)
        self.ready_at = np.zeros(0)
        self.accepting = np.zeros(0, np.int8)
        self.free_at = np.zeros(0)
        self.qt = np.zeros((0, queue_capacity))
        self.qi = np.zeros((0, queue_capacity), np.int64)
        self.qhead = np.zeros(0, np.int64)
        self.qlen = np.zeros(0, np.int64)
        self.last_done = np.zeros(0)
        self._grow(slots)
        self._seq = 0
        self.launches = 0

    def _grow(self, n: int) -> None:
        old = self.n_slots
        pad = n - old

        def ext(a, fill):
            shape = (pad,) + a.shape[1:]
            return np.concatenate([a, np.full(shape, fill, dtype=a.dtype)])
        self.inst_type = ext(self.inst_type, 0)
        self.ready_at = ext(self.ready_at, np.inf)
        self.accepting = ext(self.accepting, 0)
        self.free_at = ext(self.free_at, 0.0)
        self.qt = ext(self.qt, 0.0)
        self.qi = ext(self.qi, 0)
        self.qhead = ext(self.qhead, 0)
        self.qlen = ext(self.qlen, 0)
        self.last_done = ext(self.last_done, 0.0)
        self._free_slots.extend(range(n - 1, old - 1, -1))
        self.n_slots = n

    def add(self, instance_type: str, market: str, usd_per_h: float, billing_minimum_s: float,
            launched_at_s: float, ready_at_s: float, decision_id: str) -> SimInstance:
        if not self._free_slots:
            self._grow(self.n_slots * 2)
        slot = self._free_slots.pop()
        self._seq += 1
        inst = SimInstance(f"sim-{self._seq:06d}", instance_type, market, slot, usd_per_h,
                           billing_minimum_s, launched_at_s, ready_at_s, decision_id,
                           accrued_to_s=launched_at_s)
        self.inst_type[slot] = self.type_index[instance_type]
        self.ready_at[slot] = ready_at_s
        self.accepting[slot] = 1
        self.free_at[slot] = ready_at_s
        self.qhead[slot] = 0
        self.qlen[slot] = 0
        self.last_done[slot] = ready_at_s
        self.instances[inst.id] = inst
        self.launches += 1
        return inst

    def stop(self, inst_id: str, now_s: float) -> None:
        """Scale-in: a pending instance ends now; a serving one drains (no new work, finishes its queue)."""
        inst = self.instances[inst_id]
        if inst.drain_at_s is not None or inst.ended_at_s is not None:
            return
        inst.drain_at_s = now_s
        self.accepting[inst.slot] = 0
        if inst.ready_at_s > now_s:
            inst.ended_at_s = now_s

    def settle(self, now_s: float) -> None:
        """End draining instances whose queue is empty (at their last completion)."""
        for inst in self.instances.values():
            if inst.drain_at_s is not None and inst.ended_at_s is None and self.qlen[inst.slot] == 0:
                inst.ended_at_s = max(inst.drain_at_s, self.last_done[inst.slot])

    def accrue(self, t0: float, t1: float) -> float:
        """Cost accrued in [t0, t1); frees the slots of instances that ended and are paid in full."""
        usd = 0.0
        for inst in list(self.instances.values()):
            end = t1 if inst.ended_at_s is None else min(t1, inst.ended_at_s)
            if end > inst.accrued_to_s:
                usd += (end - inst.accrued_to_s) * inst.usd_per_h / 3600.0
                inst.accrued_to_s = end
            if inst.ended_at_s is not None and inst.ended_at_s <= t1:
                # The top-up to the billed seconds (60 s minimum, whole seconds) lands here.
                usd += (inst.billed_s() - (inst.ended_at_s - inst.launched_at_s)) * inst.usd_per_h / 3600.0
                self._release(inst)
        return usd

    def _release(self, inst: SimInstance) -> None:
        del self.instances[inst.id]
        self.finished.append(inst)
        self.accepting[inst.slot] = 0
        self.ready_at[inst.slot] = np.inf
        self.qlen[inst.slot] = 0
        self._free_slots.append(inst.slot)

    def end_all(self, t_end: float) -> None:
        """End of the simulated span: everything still running stops at t_end (or its last completion)."""
        for inst in self.instances.values():
            if inst.ended_at_s is None:
                inst.ended_at_s = max(t_end, self.last_done[inst.slot]) if inst.ready_at_s <= t_end else t_end

    def records(self, now_s: float) -> list[InstanceRecord]:
        out = []
        for inst in self.instances.values():
            state = inst.state(now_s)
            if state == TERMINATED:
                continue
            out.append(InstanceRecord(inst.id, inst.instance_type, inst.market, state, inst.launched_at_s,
                                      inst.ready_at_s if inst.ready_at_s <= now_s else None,
                                      None, inst.decision_id))
        return out

    def counts_by_state(self, now_s: float) -> dict[str, int]:
        out = {PENDING: 0, READY: 0, DRAINING: 0}
        for inst in self.instances.values():
            state = inst.state(now_s)
            if state in out:
                out[state] += 1
        return out

    def all_instances(self) -> list[SimInstance]:
        return self.finished + list(self.instances.values())
