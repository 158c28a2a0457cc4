"""Simulated function pool: execution environments with keep-alive, cold starts and provisioning.

One request per environment at a time (Lambda's model). The arrays hold one slot per allowed
concurrent environment, so running out of slots is exactly hitting the concurrency limit.
"""
from __future__ import annotations

import numpy as np

from provisioners.base import FunctionSpec


class SimFunctionPool:
    def __init__(self, max_concurrency: int, memory_mb: int):
        self.env_free_at = np.full(max_concurrency, -np.inf)
        self.env_alive = np.zeros(max_concurrency, np.int8)
        self.env_prov = np.zeros(max_concurrency, np.int8)
        self.spec = FunctionSpec(memory_mb, 0, max_concurrency)

    def configure(self, spec: FunctionSpec, now_s: float) -> None:
        """Set provisioned concurrency: new provisioned environments are warm from now on
        (AWS takes a few minutes to allocate them; the simulator does not model that yet);
        released ones become ordinary environments that expire after keep-alive."""
        have = np.flatnonzero(self.env_prov == 1)
        want = min(spec.warm_concurrency, self.env_free_at.shape[0])
        if len(have) > want:
            self.env_prov[have[want:]] = 0
        elif len(have) < want:
            idle_dead = np.flatnonzero(self.env_alive == 0)[: want - len(have)]
            self.env_alive[idle_dead] = 1
            self.env_prov[idle_dead] = 1
            self.env_free_at[idle_dead] = now_s
        self.spec = spec

    @property
    def provisioned(self) -> int:
        return int(self.env_prov.sum())
