"""The local provisioners: the provisioner verbs over a LocalStack running in this process.

An "instance" is a real tritonserver process; launching one starts it in a background thread
(launch returns at once with PENDING records), waits an optional emulated extra boot delay
(`boot_delay_s`: a local server is ready in ~7 s where an EC2 instance takes 2-4 minutes), then
publishes it to the router. Terminating drains it at the router (no new requests; in-flight ones
finish, up to `drain_timeout_s`) and then stops the process.

The stack runs on an asyncio loop in another thread (`StackThread`); the daemon's jobs run in
scheduler threads. Router and function-runtime state belong to that loop, so every call into
them is handed to it (`call_soon_threadsafe` / `run_coroutine_threadsafe`).

Ownership and adoption. Each instance carries tags, as EC2 instances do ({"spillway:fleet":
..., "spillway:decision": <decision id>}), and `tags()` returns them. On AWS a restarted daemon
adopts instances by tag; locally, instances are child processes of the daemon that started
them and die with it, so "adoption" here means only that a daemon re-describes what its own
stack runs -- including the servers the stack started before the provisioner existed
(`serve.instances`), which are adopted with decision id "adopted".
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from dataclasses import dataclass, replace
from typing import Callable

from provisioners.base import DRAINING, PENDING, READY, TERMINATED, FunctionSpec, InstanceRecord, LaunchSpec
from serving.stack import LocalStack, StackSpec
from serving.triton.server import TritonServer, TritonSpec

log = logging.getLogger("spillway.provisioner.local")

FORGET_TERMINATED_AFTER_S = 600.0   # describe() keeps reporting an ended instance this long
CALL_TIMEOUT_S = 30.0


class LocalProvisionerError(RuntimeError):
    """A local provisioning request that cannot be met, in one line."""


class StackThread:
    """A LocalStack on its own asyncio loop in a daemon thread, for synchronous callers.

    `StackThread(spec).start()` returns once the stack is up; `call(coro)` runs a coroutine on
    the stack's loop and returns its result; `stop()` stops the stack and the loop."""

    def __init__(self, spec: StackSpec):
        self.spec = spec
        self.loop = asyncio.new_event_loop()
        self.stack = LocalStack(spec)
        self._thread = threading.Thread(target=self.loop.run_forever, name="spillway-stack", daemon=True)

    def start(self) -> "StackThread":
        self._thread.start()
        try:
            self.call(self.stack.start(), timeout_s=300.0)
        except BaseException:
            self._end_loop()
            raise
        return self

    def call(self, coro, timeout_s: float = CALL_TIMEOUT_S):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def stop(self) -> None:
        if self._thread.is_alive():
            try:
                self.call(self.stack.stop(), timeout_s=120.0)
            finally:
                self._end_loop()

    def _end_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10.0)


@dataclass
class _Local:
    record: InstanceRecord
    server: TritonServer | None
    tags: dict[str, str]


class LocalInstanceProvisioner:
    """Instances of one type (the stack's instance profile) as Triton processes of `stack`."""

    def __init__(self, stack: LocalStack, loop: asyncio.AbstractEventLoop, clock: Callable[[], float], *,
                 instance_type: str, fleet_name: str = "spillway", boot_delay_s: float = 0.0,
                 drain_timeout_s: float = 10.0):
        self.stack, self.loop, self.clock = stack, loop, clock
        self.instance_type, self.fleet_name = instance_type, fleet_name
        self.boot_delay_s, self.drain_timeout_s = boot_delay_s, drain_timeout_s
        self._lock = threading.Lock()
        self._instances: dict[str, _Local] = {}
        self._threads: list[threading.Thread] = []
        self._closed = threading.Event()
        now = clock()
        for server in list(stack.tritons):   # the stack's own servers (serve.instances): adopt them
            self._add(server, "adopted", now, ready=True)
        if self._instances:
            self._publish()

    # -- verbs -------------------------------------------------------------------------------

    def launch(self, spec: LaunchSpec) -> list[InstanceRecord]:
        if spec.instance_type != self.instance_type:
            raise LocalProvisionerError(f"local provisioner: instance type {spec.instance_type!r}: "
                                        f"this stack runs only {self.instance_type!r}")
        if self._closed.is_set():
            raise LocalProvisionerError("local provisioner: closed, no more launches")
        now = self.clock()
        out = []
        for _ in range(spec.count):
            server = TritonServer(TritonSpec(self.stack.workdir / "models",
                                             log_path=self.stack.workdir / f"triton-{uuid.uuid4().hex[:8]}.log"))
            # Listed in the stack at once, so that stack.stop() stops it even while it starts.
            self.stack.tritons.append(server)
            local = self._add(server, spec.decision_id, now, ready=False, market=spec.market)
            out.append(local.record)
            self._spawn(self._boot, local)
        return out

    def terminate(self, ids: list[str]) -> None:
        with self._lock:
            victims = [self._instances[i] for i in ids
                       if i in self._instances and self._instances[i].record.state in (PENDING, READY)]
            for local in victims:
                local.record = replace(local.record, state=DRAINING)
        if victims:
            self._publish()
        for local in victims:
            self._spawn(self._drain_and_stop, local)

    def describe(self) -> list[InstanceRecord]:
        now = self.clock()
        with self._lock:
            for iid in [i for i, loc in self._instances.items() if loc.record.state == TERMINATED
                        and now - loc.record.terminated_at_s > FORGET_TERMINATED_AFTER_S]:
                del self._instances[iid]
            return [loc.record for loc in self._instances.values()]

    def tags(self) -> dict[str, dict[str, str]]:
        """Instance id -> tags (fleet, decision), as EC2 would report them."""
        with self._lock:
            return {i: dict(loc.tags) for i, loc in self._instances.items()}

    def close(self, timeout_s: float = 30.0) -> None:
        """No more launches; wait for launches and drains in progress (the stack stops the servers)."""
        self._closed.set()
        deadline = time.monotonic() + timeout_s
        for thread in list(self._threads):
            thread.join(max(0.0, deadline - time.monotonic()))

    # -- internals ---------------------------------------------------------------------------

    def _add(self, server: TritonServer, decision_id: str, now: float, *, ready: bool,
             market: str = "on-demand") -> _Local:
        iid = f"local-{uuid.uuid4().hex[:10]}"
        record = InstanceRecord(iid, self.instance_type, market, READY if ready else PENDING, now,
                                now if ready else None, None, decision_id)
        local = _Local(record, server, {"spillway:fleet": self.fleet_name, "spillway:decision": decision_id})
        with self._lock:
            self._instances[iid] = local
        return local

    def _spawn(self, target, local: _Local) -> None:
        thread = threading.Thread(target=target, args=(local,), name=f"spillway-{local.record.id}", daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def _boot(self, local: _Local) -> None:
        try:
            local.server.start()
        except Exception as exc:   # a server that will not start ends terminated, and says why
            log.warning("instance %s failed to start: %s", local.record.id, str(exc).splitlines()[0])
            self._ended(local)
            return
        if self._closed.wait(self.boot_delay_s):
            return
        with self._lock:
            if local.record.state != PENDING:        # terminated while booting
                return
            local.record = replace(local.record, state=READY, ready_at_s=self.clock())
        self._publish()

    def _drain_and_stop(self, local: _Local) -> None:
        deadline = time.monotonic() + self.drain_timeout_s
        while time.monotonic() < deadline and self._outstanding(local.record.id) > 0:
            time.sleep(0.1)
        if local.server is not None:
            local.server.stop()
        self._ended(local)

    def _ended(self, local: _Local) -> None:
        with self._lock:
            local.record = replace(local.record, state=TERMINATED, terminated_at_s=self.clock())
        if local.server in self.stack.tritons:
            self.stack.tritons.remove(local.server)

    def _outstanding(self, iid: str) -> int:
        async def read() -> int:
            rows = self.stack.router.stats()["instances"]
            return sum(r["outstanding"] for r in rows if r["id"] == iid)
        try:
            return asyncio.run_coroutine_threadsafe(read(), self.loop).result(CALL_TIMEOUT_S)
        except Exception:   # loop gone (shutting down): nothing left to wait for
            return 0

    def _publish(self) -> None:
        """Route to exactly the ready instances; instances left out are drained by the router."""
        with self._lock:
            specs = [{"id": loc.record.id, "url": f"http://{loc.server.url}"}
                     for loc in self._instances.values() if loc.record.state == READY]
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.stack.router.set_instances, specs)


class LocalFunctionProvisioner:
    """Provisioned concurrency of the stack's local function runtime. Memory size and the
    concurrency limit are fixed when the runtime starts (its config), so configure() changes
    only the warm concurrency and says so in the log when asked for another memory size."""

    def __init__(self, stack: LocalStack, loop: asyncio.AbstractEventLoop):
        if stack.functions is None:
            raise LocalProvisionerError("local function provisioner: the stack runs no functions "
                                        "(functions.enabled = false)")
        self.stack, self.loop = stack, loop
        self._warm = stack.functions.config.warm_concurrency

    def configure(self, spec: FunctionSpec) -> None:
        config = self.stack.functions.config
        warm = min(spec.warm_concurrency, config.max_concurrency)
        if spec.memory_mb != config.memory_mb:
            log.info("local functions keep %d MB (asked %d MB): the local runtime's size is fixed at start",
                     config.memory_mb, spec.memory_mb)
        asyncio.run_coroutine_threadsafe(self.stack.functions.set_warm_concurrency(warm),
                                         self.loop).result(CALL_TIMEOUT_S)
        self._warm = warm

    def describe_function(self) -> FunctionSpec:
        config = self.stack.functions.config
        return FunctionSpec(config.memory_mb, self._warm, config.max_concurrency)
