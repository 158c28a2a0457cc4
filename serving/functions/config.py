"""Configuration of one local function (Lambda-like), validated with one-line errors.

Ranges follow Lambda's own limits so a config that works here is a legal Lambda config:
memory 128-10,240 MB, timeout up to 900 s, function names of 1-64 letters/digits/-/_.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

LAMBDA_MIN_MEMORY_MB = 128
LAMBDA_MAX_MEMORY_MB = 10_240
LAMBDA_MAX_TIMEOUT_S = 900.0
# Lambda's default per-region concurrency quota; a local host would run out of cores long before.
MAX_LOCAL_CONCURRENCY = 1_000
_FUNCTION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_HANDLER = re.compile(r"^[A-Za-z_][\w.]*\.[A-Za-z_]\w*$")


class FunctionConfigError(ValueError):
    """A function runtime setting outside its allowed range (message names key, value, range)."""


def _fail(key: str, value: object, allowed: str) -> None:
    raise FunctionConfigError(f"function runtime config: {key} = {value!r} is invalid (allowed: {allowed})")


def _check_number(key: str, value: object, low: float, high: float, *, integer: bool,
                  low_inclusive: bool = True) -> None:
    kind = int if integer else (int, float)
    ok = isinstance(value, kind) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value >= low if low_inclusive else value > low) and value <= high
    if not ok:
        bracket = "[" if low_inclusive else "("
        what = "integer" if integer else "number"
        _fail(key, value, f"{what} in {bracket}{low:g}, {high:g}]")


@dataclass(frozen=True)
class FunctionRuntimeConfig:
    """One function: what to run, how big its environments are, and how many may exist."""

    function_name: str = "spillway-resnet8"
    handler: str = "serving.functions.handler.handler"   # module.function, importable from the project root
    memory_mb: int = 2048          # Lambda size; billing (GB-s) scales with it, CPU is not capped here
    max_concurrency: int = 4       # in-flight invocations (Lambda's reserved concurrency); more -> 429
    keep_alive_s: float = 60.0     # an idle on-demand environment is terminated after this long
    warm_concurrency: int = 0      # provisioned environments started at start(); never expire
    timeout_s: float = 30.0        # invoke-phase limit, as Lambda's function timeout
    bills_init: bool = True        # Lambda bills the INIT phase of on-demand cold starts since Aug 2025

    def __post_init__(self) -> None:
        if not isinstance(self.function_name, str) or not _FUNCTION_NAME.match(self.function_name):
            _fail("function_name", self.function_name, "1-64 characters of letters, digits, '-' and '_'")
        if not isinstance(self.handler, str) or not _HANDLER.match(self.handler):
            _fail("handler", self.handler, "'package.module.function', e.g. 'serving.functions.handler.handler'")
        _check_number("memory_mb", self.memory_mb, LAMBDA_MIN_MEMORY_MB, LAMBDA_MAX_MEMORY_MB, integer=True)
        _check_number("max_concurrency", self.max_concurrency, 1, MAX_LOCAL_CONCURRENCY, integer=True)
        _check_number("keep_alive_s", self.keep_alive_s, 0, 24 * 3600, integer=False, low_inclusive=False)
        _check_number("warm_concurrency", self.warm_concurrency, 0, self.max_concurrency, integer=True)
        _check_number("timeout_s", self.timeout_s, 0, LAMBDA_MAX_TIMEOUT_S, integer=False, low_inclusive=False)
        if not isinstance(self.bills_init, bool):
            _fail("bills_init", self.bills_init, "true or false")

    @property
    def memory_gb(self) -> float:
        """Lambda's GB for GB-s billing is 1,024 MB: 2,048 MB -> 2.0 GB."""
        return self.memory_mb / 1024

# Lambda's limit for a synchronous (RequestResponse) invocation's request and response payloads.
LAMBDA_SYNC_PAYLOAD_LIMIT_BYTES = 6 * 1024 * 1024
