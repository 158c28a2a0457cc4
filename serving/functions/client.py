"""Async invoke client for the spill path: one call = one synchronous Lambda invocation.

FunctionClient speaks Lambda's Invoke API over plain HTTP to the local runtime
(serving.functions.runtime) and reads our X-Spillway-* headers for cold start and billing.

An AWS-backed client can be added later behind the same `invoke(payload) -> InvokeResult`
(the FunctionInvoker protocol): boto3's lambda.invoke (SigV4, run in a thread or via aioboto3)
gives StatusCode, FunctionError and, with LogType="Tail", the base64 tail of the log whose
`REPORT ... Billed Duration: 13 ms ... Init Duration: 2412.37 ms` line carries the billed time
and, only on cold starts, the init time -- that line is how cold starts are detected on AWS.
A throttle there is botocore's TooManyRequestsException (HTTP 429), mapped to throttled=True.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import aiohttp

FUNCTION_ERROR_HEADER = "X-Amz-Function-Error"
COLD_START_HEADER = "X-Spillway-Cold-Start"
BILLED_MS_HEADER = "X-Spillway-Billed-Duration-Ms"
INIT_MS_HEADER = "X-Spillway-Init-Duration-Ms"
# The function's own timeout (30 s by default) plus a cold start of a few seconds.
DEFAULT_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class InvokeResult:
    status: int            # HTTP status of the Invoke API: 200, 429, 404, 413, 500, ...
    body: bytes            # the function's JSON result, its error document, or the API error
    cold_start: bool
    billed_ms: int
    init_ms: int           # 0 unless cold_start
    throttled: bool        # 429: the function is at its concurrency limit; nothing ran
    function_error: bool   # 200 but the function failed (handler raised, timeout, crash)

    @property
    def ok(self) -> bool:
        """The function ran and returned a result (which may still be a 400-style 'error' body)."""
        return self.status == 200 and not self.function_error


class FunctionInvokeError(RuntimeError):
    """The Invoke API could not be reached or did not answer in time (one-line message)."""


class FunctionInvoker(Protocol):
    async def invoke(self, payload: bytes) -> InvokeResult: ...


class FunctionClient:
    """Invoke one function by URL. Pass a shared session to pool connections with other callers;
    without one the client opens its own and close() (or `async with`) releases it."""

    def __init__(self, invoke_url: str, session: aiohttp.ClientSession | None = None,
                 timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        if timeout_s <= 0:
            raise ValueError(f"FunctionClient: timeout_s must be > 0, got {timeout_s}")
        self.invoke_url = invoke_url
        self._session = session
        self._owns_session = session is None
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def invoke(self, payload: bytes) -> InvokeResult:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            async with self._session.post(self.invoke_url, data=payload, timeout=self._timeout,
                                          headers={"Content-Type": "application/json"}) as response:
                body = await response.read()
                headers = response.headers
                return InvokeResult(
                    status=response.status, body=body,
                    cold_start=headers.get(COLD_START_HEADER) == "true",
                    billed_ms=int(headers.get(BILLED_MS_HEADER, 0)),
                    init_ms=int(headers.get(INIT_MS_HEADER, 0)),
                    throttled=response.status == 429,
                    function_error=FUNCTION_ERROR_HEADER in headers)
        except TimeoutError:
            raise FunctionInvokeError(
                f"function invoke {self.invoke_url}: no answer within {self._timeout.total:g} s") from None
        except aiohttp.ClientError as error:
            raise FunctionInvokeError(f"function invoke {self.invoke_url}: {error}") from None

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> FunctionClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
