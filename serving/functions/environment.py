"""One execution environment: a worker process running the UNCHANGED `awslambdaric` entrypoint,
and the Lambda Runtime API listener (its own 127.0.0.1 port) that the worker polls.

awslambdaric takes the Runtime API as `host:port` without a path prefix, so environments cannot
share one listener; each gets an aiohttp site on the runtime's event loop. The worker's lifecycle
is Lambda's: INIT (process start, torch import, model build) ends with its first
`GET /runtime/invocation/next`; then one invocation at a time is handed out in the response to
that long-poll and comes back as `POST .../response` or `.../error`.

Every worker fault becomes an InvocationOutcome with Lambda's error shape, never an exception or
a hang: the process is watched, and its exit resolves whatever it was doing.
"""
from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from aiohttp import web

from serving.functions.config import LAMBDA_SYNC_PAYLOAD_LIMIT_BYTES, FunctionRuntimeConfig

PROJECT_ROOT = Path(__file__).resolve().parents[2]
RUNTIME_API_PREFIX = "/2018-06-01/runtime"
LOCAL_REGION = "us-east-1"
FUNCTION_ARN_PREFIX = f"arn:aws:lambda:{LOCAL_REGION}:000000000000:function:"
# Lambda gives an on-demand INIT 10 s, then retries a slow init under the function timeout, so
# the worst case before giving up is 10 s + timeout_s (40 s at the default 30 s timeout).
LAMBDA_INIT_LIMIT_S = 10.0
# Settings the worker must not inherit from whoever started the runtime: AWS_LAMBDA_MAX_CONCURRENCY
# would switch awslambdaric into its multi-concurrent mode, the others would point it elsewhere.
_INHERITED_ENV_DROP_PREFIXES = ("AWS_LAMBDA_", "_LAMBDA_", "_HANDLER", "LAMBDA_", "AWS_EXECUTION_ENV")


def function_arn(function_name: str) -> str:
    return FUNCTION_ARN_PREFIX + function_name


def lambda_error_body(request_id: str, error_type: str, message: str) -> bytes:
    """The error document Lambda returns for platform-side failures (timeouts, crashed runtimes)."""
    prefix = f"RequestId: {request_id} Error: " if request_id else ""
    return json.dumps({"errorType": error_type, "errorMessage": prefix + message}).encode()


@dataclass(frozen=True)
class InvocationOutcome:
    body: bytes            # the handler's JSON result, or a Lambda error document
    function_error: bool   # True -> X-Amz-Function-Error: Unhandled
    duration_ms: float | None  # from hand-off to the worker until its result; None if never handed off


@dataclass
class _Invocation:
    request_id: str
    payload: bytes
    result: asyncio.Future[InvocationOutcome]
    handed_at_s: float | None = None


def _exit_reason(returncode: int) -> str:
    """Lambda's wording, e.g. 'signal: killed' for SIGKILL, 'exit status 1' for sys.exit(1)."""
    if returncode < 0:
        return f"Runtime exited with error: signal: {signal.strsignal(-returncode).lower()}"
    return f"Runtime exited with error: exit status {returncode}"


class ExecutionEnvironment:
    """A worker process plus its Runtime API listener. Create inside a running event loop."""

    def __init__(self, config: FunctionRuntimeConfig, *, provisioned: bool,
                 on_exit: Callable[[ExecutionEnvironment], None]) -> None:
        self.config = config
        self.provisioned = provisioned
        self.invocations = 0
        self.pid: int | None = None
        self.port: int | None = None
        loop = asyncio.get_running_loop()
        self._on_exit = on_exit
        self._process: asyncio.subprocess.Process | None = None
        self._runner: web.AppRunner | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._close_task: asyncio.Task[None] | None = None
        self._spawned_at_s = time.monotonic()
        self._init_ended_at_s: float | None = None
        # None once the worker is ready, else the init error document (init error or early exit).
        self._init_result: asyncio.Future[bytes | None] = loop.create_future()
        self._current: _Invocation | None = None
        self._next_waiter: asyncio.Future[_Invocation | None] | None = None
        self._start_task = asyncio.ensure_future(self._start())

    # ------------------------------------------------------------------ state
    @property
    def initialised(self) -> bool:
        """INIT completed successfully (the worker asked for its first invocation)."""
        return self._init_result.done() and self._init_result.result() is None

    @property
    def is_ready(self) -> bool:
        return self.initialised and self.is_alive

    @property
    def is_alive(self) -> bool:
        return self._close_task is None and (self._process is None or self._process.returncode is None)

    @property
    def init_duration_ms(self) -> float:
        """Spawn until the first GET /next (or until init failed); still running: so far."""
        end_s = self._init_ended_at_s if self._init_ended_at_s is not None else time.monotonic()
        return (end_s - self._spawned_at_s) * 1000

    async def wait_ready(self) -> bytes | None:
        """Wait for INIT to end (bounded); None when ready, else the init error document."""
        await self._start_task
        limit_s = LAMBDA_INIT_LIMIT_S + self.config.timeout_s
        try:
            async with asyncio.timeout(limit_s):
                return await asyncio.shield(self._init_result)
        except TimeoutError:
            self._end_init(lambda_error_body("", "Runtime.InitTimeout", f"Init timed out after {limit_s:.2f} seconds"))
            await self.close()
            return self._init_result.result()

    # ------------------------------------------------------------------ lifecycle
    async def _start(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        self.port = listener.getsockname()[1]
        app = web.Application(client_max_size=LAMBDA_SYNC_PAYLOAD_LIMIT_BYTES)
        app.add_routes([
            web.get(f"{RUNTIME_API_PREFIX}/invocation/next", self._next_invocation),
            web.post(f"{RUNTIME_API_PREFIX}/invocation/{{request_id}}/response", self._invocation_response),
            web.post(f"{RUNTIME_API_PREFIX}/invocation/{{request_id}}/error", self._invocation_error),
            web.post(f"{RUNTIME_API_PREFIX}/init/error", self._init_error),
        ])
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.SockSite(self._runner, listener).start()
        self._spawned_at_s = time.monotonic()
        try:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "awslambdaric", self.config.handler,
                env=self._worker_environment(), cwd=PROJECT_ROOT, stdin=asyncio.subprocess.DEVNULL,
                # Worker logs go to our stderr (Lambda would send them to CloudWatch); stdout of
                # the runtime CLI is reserved for the invoke URL.
                stdout=2,
                # Own session: Ctrl-C on a terminal reaches the runtime, which stops workers in order.
                start_new_session=True)
        except OSError as error:
            self._end_init(lambda_error_body("", "Runtime.InvalidEntrypoint", f"cannot start worker: {error}"))
            self._on_exit(self)
            return
        self.pid = self._process.pid
        self._watch_task = asyncio.ensure_future(self._watch())

    def _worker_environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(_INHERITED_ENV_DROP_PREFIXES)}
        python_path = [str(PROJECT_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
        env.update({
            "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{self.port}",
            "LAMBDA_TASK_ROOT": str(PROJECT_ROOT),
            "_HANDLER": self.config.handler,
            "AWS_LAMBDA_FUNCTION_NAME": self.config.function_name,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(self.config.memory_mb),
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{self.config.function_name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": f"{time.strftime('%Y/%m/%d')}/[$LATEST]{secrets.token_hex(16)}",
            "AWS_LAMBDA_INITIALIZATION_TYPE": "provisioned-concurrency" if self.provisioned else "on-demand",
            "AWS_EXECUTION_ENV": "AWS_Lambda_python3.11",
            "AWS_REGION": LOCAL_REGION,
            "AWS_DEFAULT_REGION": LOCAL_REGION,
            "PYTHONPATH": os.pathsep.join(python_path),
        })
        return env

    async def _watch(self) -> None:
        assert self._process is not None
        reason = _exit_reason(await self._process.wait())
        self._end_init(lambda_error_body("", "Runtime.ExitError", reason))
        current = self._current
        if current is not None and not current.result.done():
            current.result.set_result(InvocationOutcome(
                lambda_error_body(current.request_id, "Runtime.ExitError", reason), True,
                self._elapsed_ms(current)))
        self._wake_next_waiter(None)
        self._on_exit(self)

    async def close(self) -> None:
        """Kill the worker and close the listener; idempotent, safe to call concurrently."""
        if self._close_task is None:
            self._close_task = asyncio.ensure_future(self._close())
        await asyncio.shield(self._close_task)

    async def _close(self) -> None:
        try:
            await self._start_task
        except Exception:  # a listener that failed to start leaves nothing to stop but itself
            pass
        # SIGKILL, not SIGTERM: awslambdaric installs no SIGTERM handler (so nothing is lost), and
        # a worker that hung or was stopped must not delay shutdown.
        if self._process is not None and self._process.returncode is None:
            self._process.kill()
        if self._watch_task is not None:
            await self._watch_task
        self._wake_next_waiter(None)
        if self._runner is not None:
            await self._runner.cleanup()

    # ------------------------------------------------------------------ invocations
    async def invoke(self, request_id: str, payload: bytes) -> InvocationOutcome:
        """Run one invocation to an outcome; worker faults and timeouts come back as outcomes."""
        init_error = await self.wait_ready()
        if init_error is not None:
            await self.close()
            return InvocationOutcome(init_error, True, None)
        invocation = _Invocation(request_id, payload, asyncio.get_running_loop().create_future())
        self._current = invocation
        self.invocations += 1
        self._wake_next_waiter(invocation)
        try:
            async with asyncio.timeout(self.config.timeout_s):
                return await asyncio.shield(invocation.result)
        except TimeoutError:
            # As Lambda: the environment of a timed-out invocation is discarded, and the whole
            # timeout is billed.
            await self.close()
            return InvocationOutcome(
                lambda_error_body(request_id, "Sandbox.Timedout",
                                  f"Task timed out after {self.config.timeout_s:.2f} seconds"),
                True, self._elapsed_ms(invocation))
        finally:
            self._current = None

    def _elapsed_ms(self, invocation: _Invocation) -> float | None:
        if invocation.handed_at_s is None:
            return None
        return (time.monotonic() - invocation.handed_at_s) * 1000

    def _end_init(self, error_body: bytes | None) -> None:
        if not self._init_result.done():
            self._init_ended_at_s = time.monotonic()
            self._init_result.set_result(error_body)

    def _wake_next_waiter(self, invocation: _Invocation | None) -> None:
        if self._next_waiter is not None and not self._next_waiter.done():
            self._next_waiter.set_result(invocation)

    def _finish(self, request_id: str, outcome_of: Callable[[_Invocation], InvocationOutcome]) -> web.Response:
        current = self._current
        if current is None or current.request_id != request_id or current.handed_at_s is None \
                or current.result.done():
            return web.json_response({"errorType": "InvalidRequestID",
                                      "errorMessage": f"no invocation {request_id} in progress"}, status=400)
        current.result.set_result(outcome_of(current))
        return web.json_response({"status": "OK"}, status=202)

    # ------------------------------------------------------------------ Runtime API handlers
    async def _next_invocation(self, request: web.Request) -> web.StreamResponse:
        self._end_init(None)
        invocation = self._current
        if invocation is None or invocation.handed_at_s is not None:
            self._next_waiter = asyncio.get_running_loop().create_future()
            invocation = await self._next_waiter
            self._next_waiter = None
            if invocation is None:  # the environment is shutting down
                return web.json_response({"errorType": "EnvironmentShutdown"}, status=410)
        invocation.handed_at_s = time.monotonic()
        deadline_ms = int((time.time() + self.config.timeout_s) * 1000)
        trace_id = f"Root=1-{int(time.time()):08x}-{secrets.token_hex(12)};Parent={secrets.token_hex(8)};Sampled=0"
        return web.Response(body=invocation.payload, headers={
            "Lambda-Runtime-Aws-Request-Id": invocation.request_id,
            "Lambda-Runtime-Deadline-Ms": str(deadline_ms),
            "Lambda-Runtime-Invoked-Function-Arn": function_arn(self.config.function_name),
            "Lambda-Runtime-Trace-Id": trace_id,
            "Content-Type": "application/json",  # without it awslambdaric's client hangs
        })

    async def _invocation_response(self, request: web.Request) -> web.Response:
        body = await request.read()
        return self._finish(request.match_info["request_id"],
                            lambda inv: InvocationOutcome(body, False, self._elapsed_ms(inv)))

    async def _invocation_error(self, request: web.Request) -> web.Response:
        body = await request.read() or lambda_error_body(
            request.match_info["request_id"],
            request.headers.get("Lambda-Runtime-Function-Error-Type", "Runtime.Unknown"), "function error")
        return self._finish(request.match_info["request_id"],
                            lambda inv: InvocationOutcome(body, True, self._elapsed_ms(inv)))

    async def _init_error(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self._init_result.done():
            return web.json_response({"errorType": "InvalidStateTransition",
                                      "errorMessage": "init already finished"}, status=403)
        self._end_init(body or lambda_error_body(
            "", request.headers.get("Lambda-Runtime-Function-Error-Type", "Runtime.Unknown"), "init error"))
        return web.json_response({"status": "OK"}, status=202)
