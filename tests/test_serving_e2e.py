"""End to end on this host: the local stack (router + one real Triton server + local functions)
under an open-loop bursty replay. Every request must succeed, the load beyond the instance's
capacity must go to functions, and killing the Triton process mid-run must lose no request."""
from __future__ import annotations

import asyncio
import dataclasses

import aiohttp
import numpy as np

from controller.config import load_config
from serving.loadgen import replay
from serving.replay import replay_from_own_process, request_body
from serving.stack import LocalStack, spec_from_config
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PATH_INSTANCE = 0


def _spec(environments: int = 2):
    """The example stack with provisioned function environments, ready before the load: a cold
    start takes 2-7 s here (process start, torch import, model build on a busy core), longer
    than the burst, and initialising environments count against the concurrency limit. A
    throttled request that no instance can take is retried for up to 6.3 s (0.1 s doubling, 6
    times) before the router gives up: on 2 shared cores an environment can take 50 ms."""
    spec = spec_from_config(load_config(ROOT / "examples" / "local-stack.toml"))
    functions = dataclasses.replace(spec.functions, warm_concurrency=environments, max_concurrency=environments)
    router = dataclasses.replace(spec.router, throttle_retries=6)
    return dataclasses.replace(spec, port=0, functions=functions, router=router)


def _arrivals(phases, seed=0) -> np.ndarray:
    """Poisson arrivals, piecewise constant: phases = [(seconds, req/s), ...]."""
    rng = np.random.default_rng(seed)
    out, t0 = [], 0.0
    for seconds, rate in phases:
        n = rng.poisson(rate * seconds)
        out.append(np.sort(t0 + rng.uniform(0, seconds, n)))
        t0 += seconds
    return np.concatenate(out)


def _run(coro):
    return asyncio.run(coro)


def test_burst_beyond_capacity_spills_to_functions_and_every_request_succeeds():
    spec = _spec()
    # The profile's throughput at max batch, e.g. 16 / 156 ms = 103 req/s: a burst of 1.3x that
    # cannot be served by the one instance, the quiet phases easily can.
    p = spec.instance_profile
    capacity = p.throughput_rps(p.max_batch)
    quiet, burst = 0.1 * capacity, 1.3 * capacity
    arrivals = _arrivals([(3.0, quiet), (4.0, burst), (3.0, quiet)])

    async def scenario():
        async with LocalStack(spec) as stack:
            await replay(stack.infer_url(), arrivals[:5], request_body())        # warm the path
            return await replay_from_own_process(stack.infer_url(), arrivals, request_body())

    result = _run(scenario())
    assert (result.status == 200).all(), result.summary()
    on_functions = result.path > PATH_INSTANCE
    assert on_functions.sum() > 0, result.summary()
    # Functions took load only once the burst began: the quiet phase fits the instance.
    assert result.scheduled_s[on_functions].min() >= 3.0
    assert (result.path[result.scheduled_s < 3.0] == PATH_INSTANCE).all()


def test_killing_triton_mid_run_loses_no_request():
    spec = _spec(environments=3)      # all 40 req/s land on functions once the instance is gone
    arrivals = _arrivals([(6.0, 40.0)], seed=1)

    async def scenario():
        async with LocalStack(spec) as stack:
            run = asyncio.ensure_future(replay_from_own_process(stack.infer_url(), arrivals, request_body()))
            # Kill the only Triton server (SIGKILL: no goodbye) once it has served ~2 s of the
            # replay; the replay runs in its own process, so count what the router has seen.
            while stack.router.stats()["counters"].get("instance_200", 0) < 80 and not run.done():
                await asyncio.sleep(0.05)
            stack.tritons[0].kill()
            return await run

    result = _run(scenario())
    assert (result.status == 200).all(), result.summary()
    assert (result.path == PATH_INSTANCE).sum() >= 80
    # After the kill every request is served by functions (the router marked the instance down;
    # requests in flight on it when it died were retried there).
    assert (result.path[result.scheduled_s > 4.5] > PATH_INSTANCE).all()


def test_bad_input_gets_a_json_error_and_the_stack_keeps_serving():
    spec = _spec()

    async def scenario():
        async with LocalStack(spec) as stack, aiohttp.ClientSession() as session:
            url = stack.infer_url()
            async with session.post(url, data=b"{not json") as r:
                bad = (r.status, await r.json())
            async with session.post(url.replace("resnet8", "nope"), data=request_body()) as r:
                unknown = (r.status, await r.json())
            async with session.post(url, data=request_body()) as r:
                good = (r.status, await r.json())
            return bad, unknown, good

    bad, unknown, good = _run(scenario())
    assert bad[0] == 400 and "error" in bad[1]
    assert unknown[0] == 404 and "error" in unknown[1]
    assert good[0] == 200 and good[1]["outputs"][0]["shape"] == [1, 10]

