"""A minimal keep-alive HTTP/1.1 client for the hot paths: router -> instance, and the load
generator -> router.

Why not aiohttp's client: on this machine it costs about 240 us of CPU per request (measured:
an aiohttp proxy used 412 us/request against 172 us for the same server answering itself),
which alone would cap one router process near 2,000 req/s. This client sends a pre-built
request and parses only the status line, the headers and a Content-Length or chunked body,
for a fraction of that.

One request at a time per connection (no pipelining); idle connections are reused, at most
`limit` are open, and requests beyond wait in FIFO order. A reused connection that the server
had closed while idle is retried once on a fresh one (what every HTTP client does; inference
requests are safe to repeat).
"""
from __future__ import annotations

import asyncio
from collections import deque
from typing import Mapping, NamedTuple
from urllib.parse import urlsplit


class Response(NamedTuple):
    status: int
    headers: dict[str, str]     # names lower-cased
    body: bytes


class Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future | None = None
        self.alive = True
        self.used = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.alive = False
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionResetError("connection closed by the server"))

    def send(self, request: bytes, waiter: asyncio.Future) -> None:
        self.buf.clear()
        self.waiter = waiter
        self.used = True
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.waiter is None or self.waiter.done():
            return
        try:
            parsed = parse_response(self.buf)
        except (ValueError, IndexError) as exc:        # not HTTP: fail this request, drop the connection
            self.waiter.set_exception(ConnectionResetError(f"unparsable response: {exc}"))
            self.abort()
            return
        if parsed is not None:
            self.waiter.set_result(parsed)

    def abort(self) -> None:
        self.alive = False
        if self.transport is not None:
            self.transport.abort()


def parse_response(buf: bytearray) -> tuple[Response, bool] | None:
    """(response, keep-alive) once the whole response is in buf, else None."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    at = end + 4
    if "content-length" in headers:
        stop = at + int(headers["content-length"])
        if len(buf) < stop:
            return None
        body = bytes(buf[at:stop])
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while True:                                    # size line, data, CRLF ... a 0-size chunk, CRLF
            eol = buf.find(b"\r\n", at)
            if eol < 0:
                return None
            size = int(bytes(buf[at:eol]).split(b";")[0], 16)
            if size == 0:
                if buf.find(b"\r\n", eol + 2) < 0:       # trailers (if any) end with an empty line
                    return None
                break
            at = eol + 2 + size + 2
            if len(buf) < at:
                return None
            chunks.append(bytes(buf[eol + 2:eol + 2 + size]))
        body = b"".join(chunks)
    elif status in (204, 304) or 100 <= status < 200:
        body = b""
    else:
        return None                                    # body until the connection closes: unsupported
    return Response(status, headers, body), headers.get("connection", "").lower() != "close"


class Pool:
    """Keep-alive connections to the host of `base_url`."""

    def __init__(self, base_url: str, limit: int = 1024) -> None:
        parts = urlsplit(base_url)
        self.host, self.ssl = parts.hostname, parts.scheme == "https"
        self.port = parts.port or (443 if self.ssl else 80)
        self.netloc = parts.netloc
        self.limit = limit
        self.open = 0
        self.idle: list[Connection] = []
        self.waiters: deque[asyncio.Future] = deque()
        self._loop = asyncio.get_running_loop()

    def build_post(self, target: str, body: bytes, headers: Mapping[str, str]) -> bytes:
        """The bytes of a POST to `target` (a path), built once and sent as often as needed."""
        lines = [f"POST {target} HTTP/1.1", f"Host: {self.netloc}", f"Content-Length: {len(body)}",
                 *(f"{k}: {v}" for k, v in headers.items())]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body

    async def _acquire(self) -> Connection:
        while self.idle:
            conn = self.idle.pop()
            if conn.alive:
                return conn
            self.open -= 1
        if self.open >= self.limit:
            fut = self._loop.create_future()
            self.waiters.append(fut)
            return await fut
        self.open += 1
        try:
            _, conn = await self._loop.create_connection(Connection, self.host, self.port, ssl=self.ssl or None)
        except BaseException:
            self.open -= 1
            self._wake_for_new_connection()
            raise
        return conn

    def _wake_for_new_connection(self) -> None:
        """A slot freed up: the oldest waiter opens a fresh connection."""
        while self.waiters and self.open < self.limit:
            fut = self.waiters.popleft()
            if fut.done():
                continue
            task = self._loop.create_task(self._acquire())
            task.add_done_callback(lambda t, fut=fut: self._hand_over(t, fut))
            return

    def _hand_over(self, task: asyncio.Task, fut: asyncio.Future) -> None:
        failed = task.cancelled() or task.exception() is not None
        if fut.done():                                 # the waiter left: keep the connection for others
            if not failed:
                self._release(task.result(), True)
        elif failed:
            fut.set_exception(task.exception() if not task.cancelled() else ConnectionResetError("cancelled"))
        else:
            fut.set_result(task.result())

    def _release(self, conn: Connection, reusable: bool) -> None:
        if not (reusable and conn.alive):
            conn.abort()
            self.open -= 1
            self._wake_for_new_connection()
            return
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_result(conn)
                return
        self.idle.append(conn)

    def close(self) -> None:
        for conn in self.idle:
            conn.abort()
        self.idle.clear()

    async def send(self, request: bytes, timeout_s: float) -> Response:
        """Send pre-built request bytes; raises OSError (refused, reset) or TimeoutError."""
        for attempt in range(2):
            conn = await self._acquire()
            waiter = self._loop.create_future()
            timer = self._loop.call_later(timeout_s, _expire, waiter, timeout_s)
            reused = conn.used
            conn.send(request, waiter)
            try:
                response, keep_alive = await waiter
            except ConnectionResetError:
                self._release(conn, False)
                if reused and not conn.buf and attempt == 0:
                    continue                           # the server had closed it while idle
                raise
            except BaseException:                      # timeout, or our caller was cancelled
                self._release(conn, False)
                raise
            finally:
                timer.cancel()
            self._release(conn, keep_alive)
            return response
        raise AssertionError("unreachable")


def _expire(waiter: asyncio.Future, timeout_s: float) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError(f"no response within {timeout_s:g} s"))
