"""Stand-in backends for the router's tests and benchmarks: one small loopback HTTP/1.1 server
that answers like a Triton instance (/v2/models/{model}/infer, health, metadata) and like a
Lambda Invoke endpoint (POST /2015-03-31/functions/{name}/invocations).

Its behaviour can be changed while it runs: a delay before answering, and a mode --
"ok", "close" (drop the connection mid-request, as a killed server does), "500", "400",
"hang" (never answer) or "throttle" (the invoke endpoint answers 429). Health answers 200
only in mode "ok". Function answers carry `X-Spillway-Cold-Start: true` while `cold_starts` > 0 (else false),
as the local function runtime (serving/functions/runtime.py) does.

Written on raw asyncio streams (no framework) so that, run as its own process
(`python -m serving.router.fakes`), it answers fast enough to measure the router's overhead.
"""
from __future__ import annotations

import argparse
import asyncio
import signal
import time
from dataclasses import dataclass, field

import orjson

BACKLOG = 1024          # a load generator opening hundreds of connections at once must not see SYN drops
INVOKE_PREFIX = "/2015-03-31/functions/"
MODES = ("ok", "close", "500", "400", "hang", "throttle")
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 429: "Too Many Requests", 500: "Internal Server Error",
            503: "Service Unavailable"}


@dataclass
class FakeBackend:
    name: str = "fake"
    model: str = "resnet8"
    delay_s: float = 0.0
    mode: str = "ok"
    cold_starts: int = 0
    # What it saw: inference/invoke requests received (and when, time.monotonic()), and how
    # many were in progress at once.
    requests: int = 0
    received_s: list = field(default_factory=list, repr=False)
    in_flight: int = 0
    max_in_flight: int = 0
    url: str = ""
    _server: asyncio.base_events.Server | None = field(default=None, repr=False)
    _tasks: set = field(default_factory=set, repr=False)

    @property
    def invoke_url(self) -> str:
        return f"{self.url}{INVOKE_PREFIX}{self.model}/invocations"

    def set(self, *, mode: str | None = None, delay_s: float | None = None) -> None:
        if mode is not None:
            if mode not in MODES:
                raise ValueError(f"fake backend: mode {mode!r} not in {MODES}")
            self.mode = mode
        if delay_s is not None:
            self.delay_s = delay_s

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> "FakeBackend":
        self._server = await asyncio.start_server(self._connection, host, port, backlog=BACKLOG)
        bound = self._server.sockets[0].getsockname()
        self.url = f"http://{bound[0]}:{bound[1]}"
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    # ------------------------------------------------------------------ HTTP
    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if line:
                        k, _, v = line.partition(":")
                        headers[k.strip().lower()] = v.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                answer = await self._answer(method, target.split("?", 1)[0], body)
                if answer is None:          # mode "close": drop the connection, no reply
                    writer.transport.abort()
                    return
                status, payload, extra = answer
                out = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}",
                       "Content-Type: application/json", f"Content-Length: {len(payload)}",
                       f"X-Fake-Backend: {self.name}", *(f"{k}: {v}" for k, v in extra.items())]
                writer.write(("\r\n".join(out) + "\r\n\r\n").encode("latin-1") + payload)
                if headers.get("connection", "").lower() == "close":
                    await writer.drain()
                    return
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, ValueError):
            return
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _answer(self, method: str, path: str, body: bytes) -> tuple[int, bytes, dict] | None:
        if method == "GET" and path == "/v2/health/live":
            return 200, b"", {}
        if method == "GET" and path in ("/v2/health/ready", f"/v2/models/{self.model}/ready"):
            return (200, b"", {}) if self.mode == "ok" else (503, b'{"error":"not ready"}', {})
        if method == "GET" and path == f"/v2/models/{self.model}":
            return 200, orjson.dumps({"name": self.model, "versions": ["1"], "platform": "fake",
                                      "inputs": [], "outputs": []}), {}
        infer = method == "POST" and path == f"/v2/models/{self.model}/infer"
        invoke = method == "POST" and path.startswith(INVOKE_PREFIX) and path.endswith("/invocations")
        if not (infer or invoke):
            return 404, b'{"error":"not found"}', {}
        self.requests += 1
        self.received_s.append(time.monotonic())
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._work(invoke)
        finally:
            self.in_flight -= 1

    async def _work(self, invoke: bool) -> tuple[int, bytes, dict] | None:
        if self.mode == "throttle" and invoke:
            return 429, b'{"Type":"User","message":"Rate Exceeded."}', {}
        if self.delay_s > 0:
            await asyncio.sleep(self.delay_s)
        if self.mode == "hang":
            await asyncio.Event().wait()
        if self.mode == "close":
            return None
        if self.mode == "500":
            return 500, b'{"error":"fake failure"}', {}
        if self.mode == "400":
            return 400, b'{"error":"fake bad request"}', {}
        payload = orjson.dumps({"model_name": self.model, "backend": self.name,
                                "outputs": [{"name": "OUTPUT", "datatype": "FP32", "shape": [1, 1], "data": [0.5]}]})
        if not invoke:
            return 200, payload, {}
        cold = self.cold_starts > 0
        self.cold_starts -= cold
        return 200, payload, {"X-Spillway-Cold-Start": "true" if cold else "false"}


async def _serve(args: argparse.Namespace) -> None:
    backend = await FakeBackend(name=args.name, model=args.model, delay_s=args.delay_ms / 1000.0).start(port=args.port)
    print(backend.url, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await backend.stop()


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m serving.router.fakes", description="a fake Triton/Lambda backend")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--delay-ms", type=float, default=0.0)
    p.add_argument("--name", default="fake")
    p.add_argument("--model", default="resnet8")
    args = p.parse_args()
    try:
        from uvloop import run
    except ImportError:
        from asyncio import run
    run(_serve(args))


if __name__ == "__main__":
    main()
