"""The router's routing rule: pure functions over small frozen dataclasses (no I/O, no clock).

It is the rule of the simulator's kernel (simulator/kernel.py, "Expected completion if this
request joined"), so that a simulation predicts what this router does:

- Each instance holds at most L = max_outstanding_batches x max_batch outstanding requests
  (sent, not yet answered). A request goes to the open instance with room whose expected
  completion is earliest.
- Expected completion if the request joined: the batch in service ends (or, on an idle
  instance, the batcher waits its max_queue_delay unless this request fills a batch), then the
  requests queued ahead of it and itself run in batches of max_batch.
- When every instance is full (or requests already wait at the router, which keeps the queue
  FIFO) the request waits in the router's queue, at most queue_per_instance x open instances.
- It spills to functions instead when spilling is on and its expected completion is more than
  the spill threshold away, or when it can be placed nowhere else. With spilling off,
  functions are only the failover when no instance is open (all down or draining).

The router cannot see inside Triton, so `InstanceLoad` is the router's estimate of the
kernel's instance state, kept up to date from what it does see: requests sent (`sent`) and
replies received (`replied`). Replies of one batch arrive together, which is what moves the
estimate from one batch to the next.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from serving.profiles import BackendProfile

INSTANCE, QUEUE, FUNCTION, REJECT = "instance", "queue", "function", "reject"


@dataclass(frozen=True)
class BatchModel:
    """What the rule needs of an instance's profile (same derivation as simulator/tables.py)."""
    max_batch: int
    fire: int                      # queued requests that make Triton's batcher fire at once
    delay_s: float                 # batcher's max_queue_delay
    latency_s: tuple[float, ...]   # median latency of one batch of b at index b-1
    limit: int                     # outstanding requests the router lets the instance hold

    @classmethod
    def from_profile(cls, profile: BackendProfile, max_outstanding_batches: int) -> "BatchModel":
        preferred = profile.preferred_batch_sizes
        return cls(max_batch=profile.max_batch,
                   fire=min(preferred) if preferred else profile.max_batch,
                   delay_s=profile.max_queue_delay_ms / 1000.0,
                   latency_s=tuple(ms / 1000.0 for ms in profile.batch_latency_ms),
                   limit=profile.max_batch * max_outstanding_batches)

    def batch_s(self, b: int) -> float:
        return self.latency_s[b - 1]

    def work_s(self, q: int) -> float:
        """Time to serve q queued requests in batches of max_batch: (q-1)//B full batches plus
        the rest. E.g. B = 64, q = 100: one batch of 64, then one of 36."""
        full = (q - 1) // self.max_batch
        return full * self.latency_s[-1] + self.latency_s[q - full * self.max_batch - 1]


@dataclass(frozen=True)
class InstanceLoad:
    """The router's estimate of one instance's state.

    outstanding: sent and not answered (exact). running: how many of them the estimate has in
    the batch in service, which ends at free_at_s. The rest are queued; queued_since_s is when
    the oldest of them was sent while no batch ran, so the batcher's delay can be timed."""
    outstanding: int = 0
    running: int = 0
    free_at_s: float = 0.0
    queued_since_s: float = math.inf

    @property
    def queued(self) -> int:
        return self.outstanding - self.running


def advance(load: InstanceLoad, now_s: float, model: BatchModel) -> InstanceLoad:
    """Start the batch Triton's batcher would have started by now: with no batch running,
    queued requests fire once the oldest has waited max_queue_delay."""
    n = load.outstanding
    if load.running == 0 and n > 0 and now_s >= load.queued_since_s + model.delay_s:
        start_s = load.queued_since_s + model.delay_s
        running = min(n, model.max_batch)
        return InstanceLoad(n, running, start_s + model.batch_s(running), start_s if n > running else math.inf)
    return load


# (InstanceLoad is built with positional arguments below: dataclasses.replace costs several
# times more, and these run twice per request.)
def sent(load: InstanceLoad, now_s: float, model: BatchModel) -> InstanceLoad:
    """One more request sent to the instance at now_s."""
    load = advance(load, now_s, model)
    n = load.outstanding + 1
    if load.running > 0:                              # it waits behind the batch in service
        return InstanceLoad(n, load.running, load.free_at_s, load.queued_since_s)
    if n >= model.fire:                               # enough queued: the batch fires now
        running = min(n, model.max_batch)
        return InstanceLoad(n, running, now_s + model.batch_s(running), now_s if n > running else math.inf)
    return InstanceLoad(n, 0, load.free_at_s, min(load.queued_since_s, now_s))


def replied(load: InstanceLoad, now_s: float, model: BatchModel) -> InstanceLoad:
    """A reply (or a failure) for one of the instance's requests arrived at now_s."""
    load = advance(load, now_s, model)
    n = load.outstanding - 1
    if load.running > 1:
        return InstanceLoad(n, load.running - 1, load.free_at_s, load.queued_since_s)
    if n == 0:
        return InstanceLoad(0, 0, now_s, math.inf)
    if load.running == 0:
        # The estimate had no batch running, yet one finished: the batcher fired sooner than
        # max_queue_delay. Its other requests (up to max_batch - 1) are finishing now too.
        return InstanceLoad(n, min(n, model.max_batch - 1), now_s, math.inf)
    # The batch in service is over; the queued requests have waited, so the next batch starts.
    running = min(n, model.max_batch)
    return InstanceLoad(n, running, now_s + model.batch_s(running), now_s if n > running else math.inf)


def expected_completion_s(now_s: float, load: InstanceLoad, model: BatchModel) -> float:
    """When a request sent now would be answered, per the kernel's rule. E.g. max_batch 8 (no
    preferred sizes, so a batch fires at 8), latencies 10 ms (b=1) ... 24 ms (b=8), delay 5 ms:
    idle instance -> now + 5 + 10 ms; a batch running until now + 7 ms with 3 queued behind it
    -> now + 7 ms + latency(4) (the 3 and this one form the next batch)."""
    load = advance(load, now_s, model)
    ahead = load.queued + 1
    if load.running > 0:       # a batch that overran its estimate is taken to end now
        return max(load.free_at_s, now_s) + model.work_s(ahead)
    if ahead < model.fire:
        return now_s + model.delay_s + model.work_s(ahead)
    return now_s + model.work_s(ahead)


def has_room(load: InstanceLoad, model: BatchModel) -> bool:
    return load.outstanding < model.limit


@dataclass(frozen=True)
class InstanceView:
    """What the rule reads of an instance. The router passes its own Instance records, which
    have the same attributes (duck typing saves building a view per instance per request)."""
    id: str
    load: InstanceLoad
    model: BatchModel
    open: bool = True          # up, and not draining


@dataclass(frozen=True)
class RuleSettings:
    spill_enabled: bool
    spill_threshold_s: float
    queue_per_instance: int
    functions: bool            # a function backend is configured


@dataclass(frozen=True)
class Route:
    kind: str                  # INSTANCE | QUEUE | FUNCTION | REJECT
    instance_id: str | None = None
    expected_s: float = math.inf   # expected completion (absolute, same clock as now_s)
    reason: str = ""


def best_with_room(now_s: float, instances: Sequence[InstanceView]) -> tuple[InstanceView | None, float]:
    """The open instance with room whose expected completion is earliest (first on ties)."""
    best, best_s = None, math.inf
    for v in instances:
        if v.open and has_room(v.load, v.model):
            d = expected_completion_s(now_s, v.load, v.model)
            if d < best_s:
                best, best_s = v, d
    return best, best_s


def _wait_completion_s(now_s: float, instances: Sequence[InstanceView], queue_len: int) -> float:
    """Expected completion via the router queue: behind the instance's own queue and the
    requests already waiting at the router, on the instance that gets through them first."""
    done = math.inf
    for v in instances:
        if v.open:
            load = advance(v.load, now_s, v.model)
            start_s = max(load.free_at_s, now_s) if load.running > 0 else now_s
            done = min(done, start_s + v.model.work_s(load.queued + 1 + queue_len))
    return done


def choose(now_s: float, instances: Sequence[InstanceView], queue_len: int, settings: RuleSettings,
           *, failover: bool = False) -> Route:
    """Where a request arriving at now_s goes. failover=True for a request whose instance just
    failed: it takes functions (when configured) rather than waiting in the router queue."""
    n_open = sum(1 for v in instances if v.open)
    best, best_s = best_with_room(now_s, instances) if queue_len == 0 else (None, math.inf)
    expected_s = best_s if best is not None else _wait_completion_s(now_s, instances, queue_len)
    can_wait = best is None and n_open > 0 and queue_len < settings.queue_per_instance * n_open
    if settings.functions:
        if n_open == 0:
            return Route(FUNCTION, reason="no open instance")
        if settings.spill_enabled and expected_s - now_s > settings.spill_threshold_s:
            return Route(FUNCTION, expected_s=expected_s, reason="over threshold")
        if best is None and (failover or (settings.spill_enabled and not can_wait)):
            return Route(FUNCTION, expected_s=expected_s, reason="no room")
    if best is not None:
        return Route(INSTANCE, best.id, best_s, "earliest completion")
    if can_wait:
        return Route(QUEUE, expected_s=expected_s, reason="instances full")
    return Route(REJECT, reason="no open instance" if n_open == 0 else "router queue full")
