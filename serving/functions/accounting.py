"""Lambda-style usage accounting for the local runtime: counters, billed ms and GB-s.

Billing rules mirrored from Lambda (see DESIGN.md "Lambda" figures):
- Duration is billed per invocation, rounded UP to the next 1 ms: a 12.3 ms invocation bills 13 ms.
- GB-s = billed seconds x memory in GB (1 GB = 1,024 MB): 130 ms at 2,048 MB = 0.13 x 2 = 0.26 GB-s,
  i.e. 0.26 x $0.0000166667 = $0.0000043 on x86.
- The INIT phase of an on-demand cold start is billed the same way (since Aug 2025) when
  bills_init is set: a 2,400 ms init at 2,048 MB adds 4.8 GB-s.
- Provisioned (warm) concurrency is billed for the configured amount over the time it is
  configured, whether used or not: 2 environments x 2 GB for 60 s = 240 GB-s at the provisioned
  rate (about $0.0000041667 per GB-s); invocations served by them are billed as duration too
  (at a lower rate on AWS), so their ms are also reported separately (provisioned_billed_ms).
Throttled requests are not invocations (as in CloudWatch) and cost nothing.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass


def billed_ms(duration_ms: float) -> int:
    """Lambda's 1 ms billing granularity: round up, so 0.2 ms bills 1 ms and 12.0 ms bills 12 ms."""
    return max(1, math.ceil(duration_ms))


@dataclass(frozen=True)
class FunctionRuntimeStats:
    """A snapshot of one local function's usage since start() and of its environments now."""

    invocations: int            # accepted invocations (successful or failed), not throttles
    cold_starts: int            # invocations that had to start a new environment
    throttles: int              # requests refused with 429 (concurrency limit reached)
    errors: int                 # function errors: handler raised, init failed, timeout, worker died
    billed_ms: int              # sum of per-invocation billed durations
    provisioned_billed_ms: int  # the part of billed_ms served by provisioned environments
    init_ms: int                # sum of on-demand cold-start init durations (billed if bills_init)
    gb_s: float                 # (billed_ms [+ init_ms]) / 1000 x memory GB
    provisioned_gb_s: float     # configured warm concurrency x seconds configured x memory GB
    environments_started: int
    environments_expired: int   # idle on-demand environments reaped after keep_alive_s
    environments_initializing: int
    environments_busy: int
    environments_idle: int
    environments_provisioned: int  # live environments that belong to warm concurrency


@dataclass(frozen=True)
class EnvironmentCounts:
    initializing: int
    busy: int
    idle: int
    provisioned: int


class UsageLedger:
    """Mutable counters behind FunctionRuntimeStats; owned by the pool, read via snapshot()."""

    def __init__(self, memory_mb: int, bills_init: bool) -> None:
        self._memory_gb = memory_mb / 1024
        self._bills_init = bills_init
        self.invocations = self.cold_starts = self.throttles = self.errors = 0
        self.billed_ms = self.provisioned_billed_ms = self.init_ms = 0
        self.environments_started = self.environments_expired = 0
        self._warm_target = 0
        self._warm_since_s = time.monotonic()
        self._warm_env_s = 0.0   # integral of the warm target over time (environment-seconds)

    def record_throttle(self) -> None:
        self.throttles += 1

    def record_invocation(self, billed: int, *, init_billed: int | None, error: bool,
                          provisioned: bool) -> None:
        """init_billed is the cold start's billed init ms, None for a warm invocation."""
        self.invocations += 1
        self.billed_ms += billed
        if provisioned:
            self.provisioned_billed_ms += billed
        if init_billed is not None:
            self.cold_starts += 1
            self.init_ms += init_billed
        if error:
            self.errors += 1

    def set_warm_target(self, n: int) -> None:
        now_s = time.monotonic()
        self._warm_env_s += self._warm_target * (now_s - self._warm_since_s)
        self._warm_target, self._warm_since_s = n, now_s

    def snapshot(self, counts: EnvironmentCounts) -> FunctionRuntimeStats:
        charged_ms = self.billed_ms + (self.init_ms if self._bills_init else 0)
        warm_env_s = self._warm_env_s + self._warm_target * (time.monotonic() - self._warm_since_s)
        return FunctionRuntimeStats(
            invocations=self.invocations, cold_starts=self.cold_starts, throttles=self.throttles,
            errors=self.errors, billed_ms=self.billed_ms,
            provisioned_billed_ms=self.provisioned_billed_ms, init_ms=self.init_ms,
            gb_s=charged_ms / 1000 * self._memory_gb,
            provisioned_gb_s=warm_env_s * self._memory_gb,
            environments_started=self.environments_started,
            environments_expired=self.environments_expired,
            environments_initializing=counts.initializing, environments_busy=counts.busy,
            environments_idle=counts.idle, environments_provisioned=counts.provisioned,
        )
