"""The router's mutable state: the instance set, each instance's load estimate, the FIFO queue
of requests waiting for room, and the spill rule. One asyncio loop owns it (no locks).

Decisions come from serving.router.rule; this module only keeps the state they read and
hands queued requests to instances when room appears (a reply, an instance back up, new
instances). Instances removed from the set are drained: out of rotation, kept until their
in-flight requests are answered.
"""
from __future__ import annotations

import asyncio
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from serving.profiles import BackendProfile
from serving.router import rule
from serving.router.rule import BatchModel, InstanceLoad, Route, RuleSettings
from serving.router.settings import RouterError, is_http_url


@dataclass(frozen=True)
class InstanceSpec:
    id: str
    url: str                          # base URL, e.g. http://127.0.0.1:8000
    profile_backend: str | None = None

    @classmethod
    def parse(cls, item: Any, where: str) -> "InstanceSpec":
        if not isinstance(item, dict):
            raise RouterError(f"{where}: expected an object with id and url")
        unknown = sorted(set(item) - {"id", "url", "profile_backend"})
        if unknown:
            raise RouterError(f"{where}: unknown key {unknown[0]!r} (allowed: id, url, profile_backend)")
        iid, url, backend = item.get("id"), item.get("url"), item.get("profile_backend")
        if not isinstance(iid, str) or not iid.strip():
            raise RouterError(f"{where}: id = {iid!r}: must be a non-empty string")
        if not is_http_url(url):
            raise RouterError(f"{where}: url = {url!r}: must be an http(s) URL")
        if backend is not None and not isinstance(backend, str):
            raise RouterError(f"{where}: profile_backend = {backend!r}: must be a string")
        return cls(iid, url.rstrip("/"), backend)


@dataclass(eq=False)
class Instance:
    id: str
    url: str
    model: BatchModel
    infer_path: str
    ready_url: str
    load: InstanceLoad = field(default_factory=InstanceLoad)
    up: bool = True
    draining: bool = False
    pool: Any = None               # the router's keep-alive connections to it (upstream.Pool)

    @property
    def open(self) -> bool:
        return self.up and not self.draining


class Fleet:
    def __init__(self, model_name: str, max_outstanding_batches: int, queue_per_instance: int,
                 profile_for: Callable[[str | None], BackendProfile], functions: bool,
                 spill_enabled: bool, spill_threshold_s: float) -> None:
        self._model_name = model_name
        self._max_outstanding_batches = max_outstanding_batches
        self._queue_per_instance = queue_per_instance
        self._profile_for = profile_for
        self.functions = functions
        self.set_spill_rule(spill_enabled, spill_threshold_s)
        self.instances: dict[str, Instance] = {}
        self.draining: list[Instance] = []
        self._queue: deque[asyncio.Future] = deque()

    # ------------------------------------------------------------------ decisions
    def route(self, now_s: float, *, failover: bool = False, functions: bool = True) -> Route:
        settings = self._rule if functions else self._rule_no_functions
        return rule.choose(now_s, list(self.instances.values()), len(self._queue), settings, failover=failover)

    def take(self, instance_id: str, now_s: float) -> Instance:
        """Reserve room on the instance for one request about to be sent."""
        inst = self.instances[instance_id]
        inst.load = rule.sent(inst.load, now_s, inst.model)
        return inst

    def release(self, inst: Instance, now_s: float) -> None:
        """The instance answered (or failed) one request: free its room, hand it on."""
        inst.load = rule.replied(inst.load, now_s, inst.model)
        if inst.draining and inst.load.outstanding == 0 and inst in self.draining:
            self.draining.remove(inst)
        self.hand_off(now_s)

    # ------------------------------------------------------------------ router queue
    @property
    def queue_len(self) -> int:
        return len(self._queue)

    def enqueue(self) -> asyncio.Future:
        """A place in the router queue. The future resolves to the Instance the request was
        handed to (room already reserved), or None when no instance is open any more."""
        fut = asyncio.get_running_loop().create_future()
        self._queue.append(fut)
        return fut

    def leave(self, fut: asyncio.Future, now_s: float) -> None:
        """A waiter gave up (its client went away): drop its place, or its reserved room."""
        if fut.done() and not fut.cancelled() and fut.result() is not None:
            self.release(fut.result(), now_s)
        else:
            fut.cancel()
            try:
                self._queue.remove(fut)
            except ValueError:
                pass

    def hand_off(self, now_s: float) -> None:
        """Give waiting requests, oldest first, to the open instances with room."""
        while self._queue:
            if self._queue[0].done():          # its request was cancelled meanwhile
                self._queue.popleft()
                continue
            best, _ = rule.best_with_room(now_s, list(self.instances.values()))
            if best is None:
                return
            self._queue.popleft().set_result(self.take(best.id, now_s))

    def _flush_if_closed(self) -> None:
        """No instance open: waiting requests must be re-routed (functions, or an error)."""
        if not any(inst.open for inst in self.instances.values()):
            while self._queue:
                fut = self._queue.popleft()
                if not fut.done():
                    fut.set_result(None)

    # ------------------------------------------------------------------ instance set
    def mark_down(self, inst: Instance) -> None:
        inst.up = False
        self._flush_if_closed()

    def mark_up(self, inst: Instance, now_s: float) -> None:
        if inst.id in self.instances and self.instances[inst.id] is inst:
            inst.up = True
            self.hand_off(now_s)

    def set_instances(self, specs: Iterable[InstanceSpec], now_s: float) -> None:
        specs = list(specs)
        ids = [s.id for s in specs]
        dup = next((i for i in ids if ids.count(i) > 1), None)
        if dup is not None:
            raise RouterError(f"instances: id {dup!r} appears twice")
        new: dict[str, Instance] = {}
        for spec in specs:     # build everything first: a bad profile leaves the set unchanged
            model = BatchModel.from_profile(self._profile_for(spec.profile_backend), self._max_outstanding_batches)
            old = self.instances.get(spec.id)
            if old is not None and old.url == spec.url:
                old.model = model
                new[spec.id] = old
            else:
                new[spec.id] = Instance(spec.id, spec.url, model,
                                        infer_path=f"/v2/models/{self._model_name}/infer",
                                        ready_url=f"{spec.url}/v2/health/ready")
        for inst in self.instances.values():
            if new.get(inst.id) is not inst:
                inst.draining = True
                if inst.load.outstanding > 0:
                    self.draining.append(inst)
        self.instances = new
        self.hand_off(now_s)
        self._flush_if_closed()

    def set_spill_rule(self, enabled: bool, threshold_s: float) -> None:
        self.spill_enabled, self.spill_threshold_s = enabled, threshold_s
        # Built once here rather than per request.
        self._rule = RuleSettings(enabled, threshold_s, self._queue_per_instance, self.functions)
        self._rule_no_functions = RuleSettings(enabled, threshold_s, self._queue_per_instance, False)

    # ------------------------------------------------------------------ reporting
    def outstanding(self) -> dict[str, int]:
        out = {inst.id: inst.load.outstanding for inst in self.draining}
        out.update({iid: inst.load.outstanding for iid, inst in self.instances.items()})
        return out

    def describe(self, now_s: float) -> list[dict[str, Any]]:
        rows = []
        for inst in [*self.instances.values(), *self.draining]:
            done_s = rule.expected_completion_s(now_s, inst.load, inst.model)
            rows.append({"id": inst.id, "url": inst.url, "up": inst.up, "draining": inst.draining,
                         "outstanding": inst.load.outstanding, "limit": inst.model.limit,
                         "expected_ms": round((done_s - now_s) * 1000.0, 3) if math.isfinite(done_s) else None})
        return rows
