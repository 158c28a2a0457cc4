"""The environments behind one function, scaled by Lambda's rules.

- An invocation takes an idle environment if there is one (provisioned first, then the most
  recently used on-demand one, so the least recently used ones age out); otherwise, if fewer
  than max_concurrency invocations are in flight, it starts a new environment and waits for its
  INIT: a real cold start. Otherwise it is throttled (no queue: Lambda answers 429 at once).
- One invocation per environment at a time. An idle on-demand environment is terminated after
  keep_alive_s; provisioned (warm) environments never expire and are replaced if they die.
- An environment that failed in any way (init error, crash, timeout) is discarded.
Usage is recorded in a UsageLedger (see accounting.py).
"""
from __future__ import annotations

import asyncio
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Coroutine

from serving.functions.accounting import EnvironmentCounts, FunctionRuntimeStats, UsageLedger, billed_ms
from serving.functions.config import FunctionConfigError, FunctionRuntimeConfig
from serving.functions.environment import ExecutionEnvironment, InvocationOutcome

log = logging.getLogger(__name__)


class FunctionStopped(RuntimeError):
    """The runtime is stopping or stopped; no new invocations are accepted."""


class WarmUpFailed(RuntimeError):
    """A provisioned environment failed its INIT (message: the function's one-line init error)."""


@dataclass(frozen=True)
class EnvironmentInfo:
    pid: int | None
    port: int | None       # its Runtime API listener
    state: str             # "initializing" | "busy" | "idle"
    provisioned: bool
    invocations: int


@dataclass(frozen=True)
class PoolResult:
    request_id: str
    outcome: InvocationOutcome
    cold_start: bool
    billed_ms: int         # 0 if the invocation never reached the handler (failed init)
    init_ms: int           # billed init of this cold start; 0 when warm


def _error_message(error_body: bytes) -> str:
    try:
        return str(json.loads(error_body).get("errorMessage", "")).splitlines()[0]
    except (ValueError, AttributeError, IndexError):
        return error_body[:200].decode(errors="replace")


class EnvironmentPool:
    def __init__(self, config: FunctionRuntimeConfig) -> None:
        self.config = config
        self.ledger = UsageLedger(config.memory_mb, config.bills_init)
        self._environments: set[ExecutionEnvironment] = set()
        self._busy: set[ExecutionEnvironment] = set()   # in flight, including cold starts in INIT
        self._idle_provisioned: list[ExecutionEnvironment] = []
        self._idle_on_demand: list[ExecutionEnvironment] = []  # oldest first
        self._expiry: dict[ExecutionEnvironment, asyncio.TimerHandle] = {}
        self._warm_target = 0
        self._warm_ups: set[asyncio.Task[bytes | None]] = set()
        self._background: set[asyncio.Task[None]] = set()
        self._closed = False

    # ------------------------------------------------------------------ invocations
    async def invoke(self, payload: bytes) -> PoolResult | None:
        """Run one invocation; None if throttled (max_concurrency invocations in flight)."""
        if self._closed:
            raise FunctionStopped(f"function {self.config.function_name} is stopped")
        env = self._take_idle()
        cold_start = env is None
        if env is None:
            if len(self._busy) >= self.config.max_concurrency:
                self.ledger.record_throttle()
                return None
            env = self._launch(provisioned=False)
        self._busy.add(env)
        request_id = str(uuid.uuid4())
        try:
            outcome = await env.invoke(request_id, payload)
        except BaseException:  # cancelled, or the listener failed to start: discard the environment
            self._busy.discard(env)
            self._in_background(env.close())
            raise
        self._busy.discard(env)
        billed = 0 if outcome.duration_ms is None else billed_ms(outcome.duration_ms)
        init_billed = billed_ms(env.init_duration_ms) if cold_start else None
        self.ledger.record_invocation(billed, init_billed=init_billed, error=outcome.function_error,
                                      provisioned=env.provisioned)
        if env.is_ready:
            self._release(env)
        else:
            self._forget(env)
            self._in_background(env.close())
        return PoolResult(request_id, outcome, cold_start, billed, init_billed or 0)

    def _take_idle(self) -> ExecutionEnvironment | None:
        for idle in (self._idle_provisioned, self._idle_on_demand):
            while idle:
                env = idle.pop()
                timer = self._expiry.pop(env, None)
                if timer is not None:
                    timer.cancel()
                if env.is_ready:
                    return env
        return None

    def _release(self, env: ExecutionEnvironment) -> None:
        if self._closed:
            self._in_background(env.close())
        elif env.provisioned:
            self._idle_provisioned.append(env)
        else:
            self._idle_on_demand.append(env)
            loop = asyncio.get_running_loop()
            self._expiry[env] = loop.call_later(self.config.keep_alive_s, self._expire, env)

    def _expire(self, env: ExecutionEnvironment) -> None:
        if env in self._idle_on_demand:
            self._forget(env)
            self.ledger.environments_expired += 1
            self._in_background(env.close())

    # ------------------------------------------------------------------ environments
    def _launch(self, *, provisioned: bool) -> ExecutionEnvironment:
        env = ExecutionEnvironment(self.config, provisioned=provisioned, on_exit=self._on_exit)
        self._environments.add(env)
        self.ledger.environments_started += 1
        return env

    def _forget(self, env: ExecutionEnvironment) -> None:
        self._environments.discard(env)
        for idle in (self._idle_provisioned, self._idle_on_demand):
            if env in idle:
                idle.remove(env)
        timer = self._expiry.pop(env, None)
        if timer is not None:
            timer.cancel()

    def _on_exit(self, env: ExecutionEnvironment) -> None:
        """The worker process ended (crash, kill, or our close); release its listener too."""
        self._forget(env)
        self._in_background(env.close())
        # Lambda replaces a provisioned environment that died; one that never initialised is a
        # broken function, and retrying it forever would only burn CPU.
        if env.provisioned and env.initialised and not self._closed:
            self._reconcile_warm()

    def _in_background(self, coroutine: Coroutine[object, object, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ------------------------------------------------------------------ warm concurrency
    async def set_warm_concurrency(self, n: int, *, wait: bool = False) -> None:
        """Keep n provisioned environments; with wait=True return once they are all ready."""
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= self.config.max_concurrency:
            raise FunctionConfigError(
                f"warm concurrency: {n!r} is invalid (allowed: integer in [0, {self.config.max_concurrency}],"
                f" the function's max_concurrency)")
        if self._closed:
            raise FunctionStopped(f"function {self.config.function_name} is stopped")
        self._warm_target = n
        self.ledger.set_warm_target(n)
        self._reconcile_warm()
        if wait and self._warm_ups:
            errors = [e for e in await asyncio.gather(*self._warm_ups) if e is not None]
            if errors:
                raise WarmUpFailed(f"provisioned environment failed to initialise: {_error_message(errors[0])}")

    def _reconcile_warm(self) -> None:
        provisioned = [env for env in self._environments if env.provisioned]
        excess = len(provisioned) - self._warm_target
        # Shed the cheapest first: idle ones, then ones still in INIT; busy ones are only
        # demoted, finish their invocation and then age out like any on-demand environment.
        rank = {"idle": 0, "initializing": 1, "busy": 2}
        for env in sorted(provisioned, key=lambda e: rank[self._state(e)])[:max(excess, 0)]:
            state = self._state(env)
            env.provisioned = False
            if state != "busy":
                self._forget(env)
                self._in_background(env.close())
        for _ in range(-excess):
            task = asyncio.ensure_future(self._warm_up(self._launch(provisioned=True)))
            self._warm_ups.add(task)
            task.add_done_callback(self._warm_ups.discard)

    async def _warm_up(self, env: ExecutionEnvironment) -> bytes | None:
        error = await env.wait_ready()
        if error is not None:
            log.warning("provisioned environment failed to initialise: %s", _error_message(error))
            self._forget(env)
            await env.close()
        elif env.provisioned and env.is_ready:
            self._idle_provisioned.append(env)
        return error

    # ------------------------------------------------------------------ observation, shutdown
    def _state(self, env: ExecutionEnvironment) -> str:
        if env in self._busy:
            return "busy"
        return "idle" if env.is_ready else "initializing"

    def environments(self) -> tuple[EnvironmentInfo, ...]:
        return tuple(EnvironmentInfo(env.pid, env.port, self._state(env), env.provisioned, env.invocations)
                     for env in self._environments)

    def stats(self) -> FunctionRuntimeStats:
        states = [self._state(env) for env in self._environments]
        return self.ledger.snapshot(EnvironmentCounts(
            initializing=states.count("initializing"), busy=states.count("busy"),
            idle=states.count("idle"), provisioned=sum(env.provisioned for env in self._environments)))

    async def close(self) -> None:
        """Kill every worker and wait until all are gone; idempotent."""
        self._closed = True
        self._warm_target = 0
        self.ledger.set_warm_target(0)
        for timer in self._expiry.values():
            timer.cancel()
        self._expiry.clear()
        while self._environments or self._background or self._warm_ups:
            await asyncio.gather(*(env.close() for env in list(self._environments)),
                                 *list(self._background), *list(self._warm_ups), return_exceptions=True)
            # Closing resolves in-flight invocations, whose tasks may have queued more closes.
            await asyncio.sleep(0)
