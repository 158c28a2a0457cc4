"""Functions path: the Lambda handler, and the local runtime with real worker processes that run
the unchanged awslambdaric entrypoint (real cold starts, throttling, keep-alive, warm
concurrency, crashes, timeouts, billing), driven through FunctionClient over loopback HTTP.

Worker start (process + torch import + model build) takes a few seconds here, so each runtime
test starts as few environments as its behaviour needs. Figures are printed (`pytest -s`),
never asserted.
"""
from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator, Callable

import numpy as np
import pytest

from serving.functions.client import FunctionClient, InvokeResult
from serving.functions.config import FunctionConfigError, FunctionRuntimeConfig
from serving.functions.pool import WarmUpFailed
from serving.functions.runtime import LocalFunctionRuntime
from serving.model import build_model, example_inputs, run_v2, v2_request

ROOT = Path(__file__).resolve().parents[1]
REQUEST = v2_request(example_inputs(2, seed=1))
PAYLOAD = json.dumps(REQUEST).encode()
WAIT_S = 60.0  # generous deadline for polls: worker start is CPU-bound on 2 shared cores


@pytest.fixture(scope="module")
def expected_response() -> dict:
    """The in-process model's answer, on one thread as in the worker."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_v2(build_model(), REQUEST)
    finally:
        torch.set_num_threads(threads)


def run(coroutine):
    return asyncio.run(coroutine)


@asynccontextmanager
async def running(config: FunctionRuntimeConfig) -> AsyncIterator[LocalFunctionRuntime]:
    runtime = LocalFunctionRuntime(config)
    try:
        yield await runtime.start()
    finally:
        await runtime.stop()


async def wait_until(predicate: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        await asyncio.sleep(0.02)


def pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def assert_same_outputs(result: InvokeResult, expected: dict) -> None:
    assert result.status == 200 and not result.function_error, result.body[:300]
    got = json.loads(result.body)
    assert got["model_name"] == expected["model_name"]
    assert got["outputs"][0]["shape"] == expected["outputs"][0]["shape"]
    np.testing.assert_allclose(got["outputs"][0]["data"], expected["outputs"][0]["data"], rtol=1e-5, atol=1e-6)


def error_type(result: InvokeResult) -> str:
    return json.loads(result.body)["errorType"]


# ---------------------------------------------------------------------- handler, config
def test_handler_in_process_matches_model(expected_response):
    import torch
    threads = torch.get_num_threads()
    from serving.functions import handler as handler_module  # sets 1 thread at import
    torch.set_num_threads(1)
    try:
        direct = handler_module.handler(REQUEST, None)
        assert direct["outputs"][0]["data"] == expected_response["outputs"][0]["data"]

        proxy = handler_module.handler({"body": json.dumps(REQUEST)}, None)
        assert proxy["statusCode"] == 200 and proxy["headers"]["Content-Type"] == "application/json"
        assert json.loads(proxy["body"]) == direct
        encoded = base64.b64encode(json.dumps(REQUEST).encode()).decode()
        assert json.loads(handler_module.handler({"body": encoded, "isBase64Encoded": True}, None)["body"]) == direct

        bad = handler_module.handler({"inputs": [{"name": "WRONG"}]}, None)
        assert bad["statusCode"] == 400 and "WRONG" in bad["error"] and "\n" not in bad["error"]
        bad_proxy = handler_module.handler({"body": "{not json"}, None)
        assert bad_proxy["statusCode"] == 400 and "not valid JSON" in json.loads(bad_proxy["body"])["error"]
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("key, value", [
    ("memory_mb", 64), ("memory_mb", 2048.0), ("max_concurrency", 0), ("keep_alive_s", 0),
    ("timeout_s", 901), ("function_name", "bad name"), ("handler", "nodots"), ("bills_init", "yes"),
])
def test_config_errors_name_key_value_and_range(key, value):
    with pytest.raises(FunctionConfigError) as caught:
        FunctionRuntimeConfig(**{key: value})
    message = str(caught.value)
    assert key in message and repr(value) in message and "allowed" in message and "\n" not in message


def test_warm_concurrency_above_max_concurrency_is_rejected():
    with pytest.raises(FunctionConfigError, match=r"warm_concurrency = 5 .*\[0, 4\]"):
        FunctionRuntimeConfig(max_concurrency=4, warm_concurrency=5)

    async def scenario():
        async with running(FunctionRuntimeConfig(max_concurrency=2)) as runtime:
            with pytest.raises(FunctionConfigError, match=r"warm concurrency: 3 .*\[0, 2\]"):
                await runtime.set_warm_concurrency(3)
            assert runtime.stats().environments_started == 0
    run(scenario())


# ---------------------------------------------------------------------- runtime
def test_cold_then_warm_throttle_billing_and_clean_stop(expected_response):
    async def scenario():
        config = FunctionRuntimeConfig(max_concurrency=1, keep_alive_s=60.0)
        async with running(config) as runtime, FunctionClient(runtime.invoke_url) as client:
            async with FunctionClient(runtime.url + "/2015-03-31/functions/other/invocations") as other:
                unknown = await other.invoke(PAYLOAD)
            assert unknown.status == 404 and json.loads(unknown.body)["Type"] == "ResourceNotFoundException"

            # max_concurrency=1: a second request while the first is in flight (here: in its
            # cold start) is throttled at once, as Lambda does.
            first = asyncio.ensure_future(client.invoke(PAYLOAD))
            await wait_until(lambda: runtime.stats().environments_busy == 1, "the first invocation in flight")
            second = await client.invoke(PAYLOAD)
            assert second.throttled and second.status == 429
            assert json.loads(second.body)["Type"] == "TooManyRequestsException"
            cold = await first
            assert_same_outputs(cold, expected_response)
            assert cold.cold_start and cold.init_ms > 0
            stats = runtime.stats()
            assert (stats.cold_starts, stats.throttles, stats.invocations) == (1, 1, 1)

            warm_round_trips_ms, warm_results = [], []
            for _ in range(20):
                started = time.perf_counter()
                warm_results.append(await client.invoke(PAYLOAD))
                warm_round_trips_ms.append((time.perf_counter() - started) * 1000)
            for warm in warm_results:
                assert not warm.cold_start and warm.init_ms == 0
                assert_same_outputs(warm, expected_response)

            bad = await client.invoke(json.dumps({"inputs": []}).encode())
            assert bad.ok and json.loads(bad.body)["statusCode"] == 400   # a result, not a crash
            not_json = await client.invoke(b"{oops")
            assert not_json.status == 400 and b"InvalidRequestContentException" in not_json.body

            stats = runtime.stats()
            results = [cold, *warm_results, bad]
            assert stats.invocations == len(results) and stats.errors == 0
            assert stats.billed_ms == sum(r.billed_ms for r in results)
            assert stats.init_ms == cold.init_ms
            assert stats.gb_s == pytest.approx((stats.billed_ms + stats.init_ms) / 1000 * 2048 / 1024)
            assert stats.environments_started == 1 and stats.environments_idle == 1
            pids = [env.pid for env in runtime.environments()]
            print(f"\n[functions] cold start (spawn to first GET /next): {cold.init_ms} ms; "
                  f"warm invoke round trip via Invoke API, batch 2: median "
                  f"{statistics.median(warm_round_trips_ms):.1f} ms, min {min(warm_round_trips_ms):.1f} ms; "
                  f"billed median {statistics.median(r.billed_ms for r in warm_results)} ms")
        assert pids and not any(pid_exists(pid) for pid in pids)
    run(scenario())


def test_warm_concurrency_worker_crash_and_timeout(expected_response):
    async def scenario():
        config = FunctionRuntimeConfig(max_concurrency=2, keep_alive_s=60.0, timeout_s=2.0)
        async with running(config) as runtime, FunctionClient(runtime.invoke_url) as client:
            await runtime.set_warm_concurrency(2, wait=True)
            stats = runtime.stats()
            assert (stats.environments_provisioned, stats.environments_idle, stats.environments_started) == (2, 2, 2)
            warm = await client.invoke(PAYLOAD)
            assert not warm.cold_start
            assert_same_outputs(warm, expected_response)
            assert runtime.stats().cold_starts == 0

            # A worker killed mid-invocation: freeze both idle workers so the invocation is
            # surely still in flight, then SIGKILL whichever received it.
            frozen = [env.pid for env in runtime.environments()]
            for pid in frozen:
                os.kill(pid, signal.SIGSTOP)
            in_flight = asyncio.ensure_future(client.invoke(PAYLOAD))
            await wait_until(lambda: any(e.state == "busy" for e in runtime.environments()), "a busy worker")
            victim = next(e.pid for e in runtime.environments() if e.state == "busy")
            survivor = next(pid for pid in frozen if pid != victim)
            os.kill(victim, signal.SIGKILL)
            crashed = await asyncio.wait_for(in_flight, WAIT_S)
            assert crashed.status == 200 and crashed.function_error
            assert error_type(crashed) == "Runtime.ExitError" and b"signal: killed" in crashed.body

            # A hung worker: the invocation times out after timeout_s and the worker is killed.
            # The survivor is the only idle environment (the crashed one's replacement is still
            # in INIT), so it takes the invocation while still frozen.
            timed_out = await asyncio.wait_for(client.invoke(PAYLOAD), WAIT_S)
            assert timed_out.function_error and error_type(timed_out) == "Sandbox.Timedout"
            assert timed_out.billed_ms >= 2000
            await wait_until(lambda: not pid_exists(survivor), "the timed-out worker to be killed")

            # Both provisioned environments are replaced, and the runtime keeps serving warm.
            await wait_until(lambda: runtime.stats().environments_idle == 2, "two replacement environments")
            again = await client.invoke(PAYLOAD)
            assert not again.cold_start
            assert_same_outputs(again, expected_response)
            stats = runtime.stats()
            assert stats.errors == 2 and stats.environments_started == 4 and stats.cold_starts == 0
            assert stats.provisioned_billed_ms == stats.billed_ms and stats.provisioned_gb_s > 0

            await runtime.set_warm_concurrency(0)
            await wait_until(lambda: not runtime.environments(), "provisioned environments to be released")
    run(scenario())


def test_keep_alive_expiry_then_cold_again():
    async def scenario():
        config = FunctionRuntimeConfig(max_concurrency=1, keep_alive_s=1.0)
        async with running(config) as runtime, FunctionClient(runtime.invoke_url) as client:
            first = await client.invoke(PAYLOAD)
            assert first.ok and first.cold_start
            (env,) = runtime.environments()
            await wait_until(lambda: runtime.stats().environments_expired == 1, "keep-alive expiry")
            assert not runtime.environments()
            await wait_until(lambda: not pid_exists(env.pid), "the expired worker to exit")
            second = await client.invoke(PAYLOAD)
            assert second.ok and second.cold_start
            stats = runtime.stats()
            assert stats.cold_starts == 2 and stats.init_ms == first.init_ms + second.init_ms
    run(scenario())


def test_init_failure_is_a_function_error_not_a_hang():
    async def scenario():
        config = FunctionRuntimeConfig(handler="serving.functions.no_such_module.handler", max_concurrency=1)
        async with running(config) as runtime, FunctionClient(runtime.invoke_url) as client:
            failed = await asyncio.wait_for(client.invoke(PAYLOAD), WAIT_S)
            assert failed.status == 200 and failed.function_error and failed.cold_start
            assert error_type(failed) == "Runtime.ImportModuleError"
            assert failed.billed_ms == 0 and failed.init_ms > 0   # never reached a handler
            await wait_until(lambda: not runtime.environments(), "the failed environment to be discarded")
            with pytest.raises(WarmUpFailed, match="Unable to import module"):
                await runtime.set_warm_concurrency(1, wait=True)
            stats = runtime.stats()
            assert (stats.errors, stats.cold_starts, stats.environments_started) == (1, 1, 2)
    run(scenario())


def test_cli_prints_invoke_url_and_stops_on_sigterm():
    process = subprocess.Popen(
        [sys.executable, "-m", "serving.functions.runtime", "--port", "0", "--max-concurrency", "2"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        invoke_url = process.stdout.readline().strip()
        assert invoke_url.startswith("http://127.0.0.1:")
        assert invoke_url.endswith("/2015-03-31/functions/spillway-resnet8/invocations")

        async def ask_unknown():
            async with FunctionClient(invoke_url.replace("spillway-resnet8", "nope")) as other:
                return await other.invoke(b"{}")
        assert run(ask_unknown()).status == 404
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        assert '"final_stats"' in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_cli_bad_setting_is_one_line_error():
    done = subprocess.run([sys.executable, "-m", "serving.functions.runtime", "--memory-mb", "64"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "memory_mb = 64" in done.stderr
