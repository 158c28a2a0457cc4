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
from simulator import kernel as K


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
    reclaim_at_s: float = math.inf      # spot: when EC2 takes it back (notice 120 s before)
    reclaimed: bool = False             # ended by EC2, not by us
    noticed: bool = False               # got a spot interruption notice

    def state(self, now_s: float) -> str:
        if self.ended_at_s is not None and self.ended_at_s <= now_s:
            return TERMINATED
        if self.drain_at_s is not None:
            return DRAINING
        return READY if self.ready_at_s <= now_s else PENDING

    def billed_s(self) -> float:
        life = self.ended_at_s - self.launched_at_s
        if self.reclaimed and life < 3600.0:
            # "If Amazon EC2 interrupts the Spot Instance ... Linux, interrupted in the first hour:
            # no charge" (EC2 User Guide, Billing for interrupted Spot Instances).
            return 0.0
        return max(self.billing_minimum_s, math.ceil(life - 1e-9))

    def bill_usd(self) -> float:
        return self.billed_s() * self.usd_per_h / 3600.0


class SimFleet:
    """Instance state for the kernel, in slot-indexed arrays that grow as the fleet grows.

    The queue ring buffers have a power-of-two capacity (>= the largest outstanding limit) so that
    the kernel wraps indices with a mask instead of a division.
    """

    def __init__(self, type_index: dict[str, int], queue_capacity: int, slots: int = 16):
        self.type_index = type_index
        self.queue_capacity = queue_capacity
        self.instances: dict[str, SimInstance] = {}
        self.finished: list[SimInstance] = []   # ended and fully accrued
        self._free_slots: list[int] = []
        self.n_slots = 0
        self.inst_f = np.zeros((0, K.N_IF))
        self.inst_i = np.zeros((0, K.N_II), np.int64)
        self.qt = np.zeros((0, self.queue_capacity))
        self.qa = np.zeros((0, self.queue_capacity))
        self.qi = np.zeros((0, self.queue_capacity), np.int64)
        self._grow(slots)
        self._seq = 0
        self.launches = 0

    def _grow(self, n: int) -> None:
        old = self.n_slots
        pad = n - old

        def ext(a):
            return np.concatenate([a, np.zeros((pad,) + a.shape[1:], dtype=a.dtype)])
        self.inst_f, self.inst_i = ext(self.inst_f), ext(self.inst_i)
        self.inst_f[old:, K.IF_NEXT] = np.inf
        self.qt, self.qa, self.qi = ext(self.qt), ext(self.qa), ext(self.qi)
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
        self.inst_i[slot] = 0
        self.inst_i[slot, K.II_TYPE] = self.type_index[instance_type]
        f = self.inst_f[slot]
        f[K.IF_FREE] = f[K.IF_READY] = f[K.IF_LAST_DONE] = ready_at_s
        f[K.IF_ACCEPT_UNTIL] = np.inf
        f[K.IF_NEXT] = np.inf
        self.instances[inst.id] = inst
        self.launches += 1
        return inst

    def stop(self, inst_id: str, now_s: float) -> None:
        """Scale-in: a pending instance ends now; a serving one drains (no new work, finishes its queue)."""
        inst = self.instances[inst_id]
        if inst.drain_at_s is not None or inst.ended_at_s is not None:
            return
        inst.drain_at_s = now_s
        self.inst_f[inst.slot, K.IF_ACCEPT_UNTIL] = now_s
        if inst.ready_at_s > now_s:
            inst.ended_at_s = now_s

    def settle(self, now_s: float) -> None:
        """End draining instances whose queue is empty (at their last completion).

        A spot instance under an interruption notice that EC2 will reclaim within its first hour
        is left to EC2: that hour is then free, while terminating it ourselves would be billed.
        """
        for inst in self.instances.values():
            if inst.drain_at_s is None or inst.ended_at_s is not None or self.inst_i[inst.slot, K.II_LEN] > 0:
                continue
            if inst.noticed and inst.reclaim_at_s - inst.launched_at_s < 3600.0:
                continue
            inst.ended_at_s = max(inst.drain_at_s, self.inst_f[inst.slot, K.IF_LAST_DONE])

    def notice(self, inst: SimInstance, notice_at_s: float) -> None:
        """Spot interruption notice: no new work from notice_at_s on; the controller sees it draining."""
        inst.noticed = True
        if inst.drain_at_s is None:
            inst.drain_at_s = notice_at_s
        f = self.inst_f[inst.slot]
        f[K.IF_ACCEPT_UNTIL] = min(f[K.IF_ACCEPT_UNTIL], notice_at_s)
        if inst.ready_at_s > notice_at_s and inst.ended_at_s is None:
            inst.ended_at_s = notice_at_s      # reclaimed while still booting

    def reclaim(self, inst: SimInstance) -> None:
        """EC2 takes the instance back at reclaim_at_s (its queue was routed elsewhere)."""
        if inst.ended_at_s is None or inst.ended_at_s > inst.reclaim_at_s:
            inst.ended_at_s = inst.reclaim_at_s
            inst.reclaimed = True

    def accrue(self, t1: float) -> dict[str, float]:
        """Cost accrued up to t1 since the last call, by market; frees the slots of instances
        that ended and are paid in full."""
        usd = {"on-demand": 0.0, "spot": 0.0}
        for inst in list(self.instances.values()):
            end = t1 if inst.ended_at_s is None else min(t1, inst.ended_at_s)
            if end > inst.accrued_to_s:
                usd[inst.market] += (end - inst.accrued_to_s) * inst.usd_per_h / 3600.0
                inst.accrued_to_s = end
            if inst.ended_at_s is not None and inst.ended_at_s <= t1:
                # The adjustment to the billed seconds lands here: the top-up to the 60 s minimum
                # and whole seconds, or a refund for a spot instance EC2 reclaimed in its first hour.
                life = inst.ended_at_s - inst.launched_at_s
                usd[inst.market] += (inst.billed_s() - life) * inst.usd_per_h / 3600.0
                self._release(inst)
        return usd

    def _release(self, inst: SimInstance) -> None:
        del self.instances[inst.id]
        self.finished.append(inst)
        self.inst_f[inst.slot, K.IF_ACCEPT_UNTIL] = -np.inf
        self.inst_f[inst.slot, K.IF_NEXT] = np.inf
        self.inst_i[inst.slot, K.II_LEN] = 0
        self._free_slots.append(inst.slot)

    def end_all(self, t_end: float) -> None:
        """End of the simulated span: everything still running stops at t_end (or its last completion)."""
        for inst in self.instances.values():
            if inst.ended_at_s is None:
                last = self.inst_f[inst.slot, K.IF_LAST_DONE]
                inst.ended_at_s = max(t_end, last) if inst.ready_at_s <= t_end else t_end

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

    def all_instances(self) -> list[SimInstance]:
        return self.finished + list(self.instances.values())
