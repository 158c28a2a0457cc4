"""Local Lambda-like function runtime: Lambda's Invoke API in front of an EnvironmentPool.

    POST /2015-03-31/functions/{function_name}/invocations   (body = the event JSON)

answers as Lambda does: 200 with the handler's JSON result; 200 plus `X-Amz-Function-Error:
Unhandled` and Lambda's error document when the function failed (handler raised, init failed,
timeout, worker died); 429 TooManyRequestsException at the concurrency limit; 404
ResourceNotFoundException for another function name; 413 above the 6 MB payload limit.
Errors carry `x-amzn-ErrorType` as Lambda's do. Our own headers report what the billing sees:
`X-Spillway-Cold-Start`, `X-Spillway-Billed-Duration-Ms` and, on cold starts,
`X-Spillway-Init-Duration-Ms` (on AWS the same figures come from the REPORT log line).

Run as its own process: `python -m serving.functions.runtime --port 0 --max-concurrency 4`
prints the invoke URL on stdout and serves until SIGINT/SIGTERM (worker logs go to stderr).
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import signal
import sys

import orjson
from aiohttp import web

from serving.functions.accounting import FunctionRuntimeStats
from serving.functions.config import LAMBDA_SYNC_PAYLOAD_LIMIT_BYTES, FunctionConfigError, FunctionRuntimeConfig
from serving.functions.environment import function_arn
from serving.functions.pool import EnvironmentInfo, EnvironmentPool, FunctionStopped

__all__ = ["FunctionRuntimeConfig", "FunctionRuntimeStats", "LocalFunctionRuntime", "EnvironmentInfo"]

INVOKE_PATH = "/2015-03-31/functions/{function_name}/invocations"


def _aws_error(status: int, error_type: str, message: str, **extra: str) -> web.Response:
    return web.json_response({"Type": error_type, "message": message, **extra}, status=status,
                             headers={"x-amzn-ErrorType": error_type})


class LocalFunctionRuntime:
    """One function served locally; use `async with LocalFunctionRuntime(cfg) as rt` or start/stop."""

    def __init__(self, config: FunctionRuntimeConfig | None = None) -> None:
        self.config = config or FunctionRuntimeConfig()
        self._pool = EnvironmentPool(self.config)
        self._runner: web.AppRunner | None = None
        self._url: str | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> LocalFunctionRuntime:
        app = web.Application(client_max_size=LAMBDA_SYNC_PAYLOAD_LIMIT_BYTES)
        app.router.add_post(INVOKE_PATH, self._invoke)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound_port = self._runner.addresses[0][1]
        self._url = f"http://{host}:{bound_port}"
        if self.config.warm_concurrency:
            await self._pool.set_warm_concurrency(self.config.warm_concurrency)
        return self

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("LocalFunctionRuntime: call start() first")
        return self._url

    @property
    def invoke_url(self) -> str:
        return self.url + INVOKE_PATH.format(function_name=self.config.function_name)

    async def set_warm_concurrency(self, n: int, *, wait: bool = False) -> None:
        """Provisioned environments that never expire and serve first (wait: until all ready)."""
        await self._pool.set_warm_concurrency(n, wait=wait)

    def stats(self) -> FunctionRuntimeStats:
        return self._pool.stats()

    def environments(self) -> tuple[EnvironmentInfo, ...]:
        """Live environments with their worker pids (for tests and debugging)."""
        return self._pool.environments()

    async def stop(self) -> None:
        """Terminate every worker and the listeners; idempotent."""
        # Workers first: in-flight invocations then end at once (as Runtime.ExitError) instead
        # of holding the HTTP shutdown; a second pool pass reaps what their handlers released.
        await self._pool.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self._pool.close()

    async def __aenter__(self) -> LocalFunctionRuntime:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ Invoke API
    def _is_this_function(self, name: str) -> bool:
        # Lambda accepts a name, a full ARN, or either with a :qualifier; only $LATEST exists here.
        for candidate in (name, name.removesuffix(":$LATEST")):
            if candidate in (self.config.function_name, function_arn(self.config.function_name)):
                return True
        return False

    async def _invoke(self, request: web.Request) -> web.Response:
        name = request.match_info["function_name"]
        if not self._is_this_function(name):
            arn = name if name.startswith("arn:") else function_arn(name)
            return _aws_error(404, "ResourceNotFoundException", f"Function not found: {arn}")
        invocation_type = request.headers.get("X-Amz-Invocation-Type", "RequestResponse")
        if invocation_type == "DryRun":
            return web.Response(status=204)
        if invocation_type != "RequestResponse":
            return _aws_error(400, "InvalidParameterValueException",
                              f"invocation type {invocation_type!r} is not supported locally (RequestResponse, DryRun)")
        try:
            payload = await request.read() or b"{}"
        except web.HTTPRequestEntityTooLarge:
            return _aws_error(413, "RequestEntityTooLargeException",
                              f"Request must be smaller than {LAMBDA_SYNC_PAYLOAD_LIMIT_BYTES} bytes for the InvokeFunction operation")
        try:
            orjson.loads(payload)
        except orjson.JSONDecodeError:
            return _aws_error(400, "InvalidRequestContentException", "Could not parse request body into json")
        try:
            result = await self._pool.invoke(payload)
        except FunctionStopped as error:
            return _aws_error(500, "ServiceException", str(error))
        if result is None:
            return _aws_error(429, "TooManyRequestsException", "Rate Exceeded.",
                              Reason="ReservedFunctionConcurrentInvocationLimitExceeded")
        headers = {
            "Content-Type": "application/json",
            "X-Amz-Executed-Version": "$LATEST",
            "x-amzn-RequestId": result.request_id,
            "X-Spillway-Cold-Start": "true" if result.cold_start else "false",
            "X-Spillway-Billed-Duration-Ms": str(result.billed_ms),
        }
        if result.cold_start:
            headers["X-Spillway-Init-Duration-Ms"] = str(result.init_ms)
        if result.outcome.function_error:
            headers["X-Amz-Function-Error"] = "Unhandled"
        return web.Response(body=result.outcome.body, headers=headers)


# ---------------------------------------------------------------------- CLI
def _parse_args(argv: list[str] | None) -> tuple[int, FunctionRuntimeConfig]:
    defaults = FunctionRuntimeConfig()
    parser = argparse.ArgumentParser(prog="python -m serving.functions.runtime",
                                     description="Serve one function locally through Lambda's Invoke API.")
    parser.add_argument("--port", type=int, default=0, help="Invoke API port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--function-name", default=defaults.function_name)
    parser.add_argument("--handler", default=defaults.handler)
    parser.add_argument("--memory-mb", type=int, default=defaults.memory_mb)
    parser.add_argument("--max-concurrency", type=int, default=defaults.max_concurrency)
    parser.add_argument("--keep-alive-s", type=float, default=defaults.keep_alive_s)
    parser.add_argument("--warm-concurrency", type=int, default=defaults.warm_concurrency)
    parser.add_argument("--timeout-s", type=float, default=defaults.timeout_s)
    parser.add_argument("--no-bills-init", dest="bills_init", action="store_false",
                        help="do not bill the INIT phase (Lambda before Aug 2025, zip functions)")
    args = parser.parse_args(argv)
    config = FunctionRuntimeConfig(
        function_name=args.function_name, handler=args.handler, memory_mb=args.memory_mb,
        max_concurrency=args.max_concurrency, keep_alive_s=args.keep_alive_s,
        warm_concurrency=args.warm_concurrency, timeout_s=args.timeout_s, bills_init=args.bills_init)
    return args.port, config


async def _serve(port: int, config: FunctionRuntimeConfig) -> None:
    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop_requested.set)
    runtime = await LocalFunctionRuntime(config).start(port=port)
    try:
        print(runtime.invoke_url, flush=True)
        await stop_requested.wait()
    finally:
        await runtime.stop()
        print(json.dumps({"final_stats": dataclasses.asdict(runtime.stats())}), file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    try:
        port, config = _parse_args(argv)
    except FunctionConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    asyncio.run(_serve(port, config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
