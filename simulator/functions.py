"""Simulated function pool: execution environments with keep-alive, cold starts and provisioning.

One request per environment at a time (Lambda's model). Environments are anonymous, so the pool
keeps times only (see simulator.kernel): 4-ary min-heaps of busy environments' finish times (one
for on-demand, one for provisioned environments), a ring-buffer deque of idle environments' free
times, and counts in the state vector `fn_s`.
"""
from __future__ import annotations

import numpy as np

from provisioners.base import FunctionSpec
from simulator import kernel as K


class SimFunctionPool:
    def __init__(self, max_concurrency: int, memory_mb: int, fn_s: np.ndarray):
        # 4-ary min-heaps of busy finish times: the +inf past their end lets every node be
        # compared with four children (simulator.kernel._pool_pop), so they need three spare slots.
        self.busy_t = np.full(max_concurrency + 3, np.inf)
        self.prov_t = np.full(max_concurrency + 3, np.inf)
        self.idle_t = np.zeros(1 << max(0, (max_concurrency - 1).bit_length()))
        self.fn_s = fn_s
        self.spec = FunctionSpec(memory_mb, 0, max_concurrency)

    def configure(self, spec: FunctionSpec) -> None:
        """Set provisioned concurrency. New provisioned environments are warm from now on (AWS
        takes a few minutes to allocate them; the simulator does not model that yet), within the
        concurrency limit; released ones are deallocated, idle ones at once and busy ones when
        they finish."""
        s = self.fn_s
        envs = s[K.FS_BUSY] + s[K.FS_PROV_BUSY] + s[K.FS_IDLE_LEN] + s[K.FS_PROV_IDLE]
        have = s[K.FS_PROV_IDLE] + s[K.FS_PROV_BUSY]
        want = float(spec.warm_concurrency)
        if want > have:
            s[K.FS_PROV_IDLE] += max(0.0, min(want - have, spec.max_concurrency - envs))
        elif want < have:
            s[K.FS_PROV_IDLE] -= min(have - want, s[K.FS_PROV_IDLE])
        s[K.FS_PROV_TARGET] = want
        self.spec = spec

    @property
    def provisioned(self) -> int:
        return int(self.fn_s[K.FS_PROV_TARGET])
