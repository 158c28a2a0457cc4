"""`spillway profile`: measure the model's latency on a real Triton server and on the local
function runtime, and write a profile file (serving/profiles.py format) the simulator and the
planner read.

Instance (Triton). The simulator models a batch of b requests as taking latency(b) from the
moment the batch starts, with the batcher's max_queue_delay before it on an idle server. So we
measure what the router sees: rounds of b single-request JSON POSTs sent at once (the router
forwards single requests; Triton's dynamic batcher forms the batch). One round's batch latency
is its slowest request, less the queue delay the batcher waited when b is below max batch
(it fires at once only on a full batch). Triton's own statistics (execution count per round)
tell whether each round really ran as one batch; we print the mean batch size seen.
Then a concurrency sweep: c closed-loop clients for a few seconds each, throughput and p50/p99,
written to the profile as information (`concurrency_sweep`).

Function (local runtime, one environment). Cold start: a fresh runtime per sample, the init
duration it reports (process start, torch import, model build). Warm latency: round trip of
one invocation through the invoke API, which is what the router waits for.
"""
from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import numpy as np

from serving.model import MODEL_NAME
from serving.replay import request_body


@dataclass(frozen=True)
class InstanceMeasurement:
    batches: tuple[int, ...]
    latency_ms: tuple[float, ...]        # median batch latency per batch size
    jitter_cv: float                     # median over batch sizes of std/mean of a round's latency
    executions_per_round: tuple[float, ...]   # Triton executions per round (1.0 = one batch)
    sweep: tuple[dict, ...]              # concurrency sweep rows


@dataclass(frozen=True)
class FunctionMeasurement:
    memory_mb: int
    warm_ms: float                       # median round trip of a warm invocation
    jitter_cv: float
    cold_starts_s: tuple[float, ...]     # init durations


async def _post(session: aiohttp.ClientSession, url: str, body: bytes) -> float:
    t0 = time.perf_counter()
    async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
        await resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{url}: HTTP {resp.status}")
    return (time.perf_counter() - t0) * 1000.0


def _executions(triton_http: str) -> int:
    import tritonclient.http as httpclient
    client = httpclient.InferenceServerClient(triton_http)
    stats = client.get_inference_statistics(MODEL_NAME)["model_stats"][0]
    return int(stats["execution_count"])


async def measure_instance(triton_http: str, batches: tuple[int, ...], max_batch: int,
                           max_queue_delay_ms: float, rounds: int = 30, sweep: tuple[int, ...] = (1, 2, 4, 8, 16),
                           sweep_s: float = 3.0, progress=None) -> InstanceMeasurement:
    """`triton_http` is host:port of a running Triton server with the model loaded."""
    url = f"http://{triton_http}/v2/models/{MODEL_NAME}/infer"
    body = request_body()
    medians, cvs, execs, rows = [], [], [], []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        for _ in range(5):                          # warm-up: first inferences allocate
            await _post(session, url, body)
        for b in batches:
            samples = []
            before = await asyncio.to_thread(_executions, triton_http)
            for _ in range(rounds):
                lat = await asyncio.gather(*(_post(session, url, body) for _ in range(b)))
                waited = max_queue_delay_ms if b < max_batch else 0.0
                samples.append(max(max(lat) - waited, 0.1))
                if progress:
                    progress()
            after = await asyncio.to_thread(_executions, triton_http)
            execs.append((after - before) / rounds)
            a = np.asarray(samples)
            medians.append(float(np.median(a)))
            cvs.append(float(a.std() / a.mean()))
        for c in sweep:
            rows.append(await _closed_loop(session, url, body, c, sweep_s))
            if progress:
                progress()
    # Latency must not fall with batch size (the simulator's tables assume it); measurement noise
    # at small b can break that by a fraction of a ms, so keep the running maximum.
    table = tuple(float(x) for x in np.maximum.accumulate(medians))
    return InstanceMeasurement(tuple(batches), table, float(np.median(cvs)), tuple(execs), tuple(rows))


async def _closed_loop(session, url: str, body: bytes, clients: int, seconds: float) -> dict:
    lat: list[float] = []
    stop = time.perf_counter() + seconds

    async def client():
        while time.perf_counter() < stop:
            lat.append(await _post(session, url, body))

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    wall = time.perf_counter() - t0
    a = np.asarray(lat)
    return {"concurrency": clients, "throughput_rps": round(len(a) / wall, 1),
            "p50_ms": round(float(np.percentile(a, 50)), 2), "p99_ms": round(float(np.percentile(a, 99)), 2)}


async def measure_function(memory_mb: int, cold_samples: int = 5, warm_samples: int = 50,
                           progress=None) -> FunctionMeasurement:
    from serving.functions.client import FunctionClient
    from serving.functions.runtime import FunctionRuntimeConfig, LocalFunctionRuntime

    body = request_body()
    colds: list[float] = []
    warm: list[float] = []
    for i in range(cold_samples):
        runtime = await LocalFunctionRuntime(FunctionRuntimeConfig(memory_mb=memory_mb, max_concurrency=1)).start()
        try:
            client = FunctionClient(runtime.invoke_url)
            first = await client.invoke(body)
            if first.status != 200 or not first.cold_start:
                raise RuntimeError(f"function runtime: first invocation gave HTTP {first.status}, "
                                   f"cold start {first.cold_start}")
            colds.append(first.init_ms / 1000.0)
            if i == 0:
                for _ in range(warm_samples):
                    t0 = time.perf_counter()
                    result = await client.invoke(body)
                    warm.append((time.perf_counter() - t0) * 1000.0)
                    if result.cold_start:
                        raise RuntimeError("function runtime: a warm invocation started cold")
            await client.close()
        finally:
            await runtime.stop()
        if progress:
            progress()
    a = np.asarray(warm)
    return FunctionMeasurement(memory_mb, float(np.median(a)), float(a.std() / a.mean()), tuple(colds))


def cold_start_distribution(samples_s: tuple[float, ...]) -> dict:
    """A lognormal through the samples' median and 90th percentile, clipped well outside them.
    E.g. samples 2.1, 2.3, 2.4, 2.6, 3.0 s: median 2.4, p90 2.84, clipped to [1.05, 6.0]."""
    a = np.asarray(samples_s, dtype=float)
    median = float(np.median(a))
    p90 = max(float(np.percentile(a, 90)), median * 1.01)   # a lognormal needs p90 > median
    return {"kind": "lognormal", "median": round(median, 3), "p90": round(p90, 3),
            "low": round(float(a.min()) * 0.5, 3), "high": round(float(a.max()) * 2.0, 3)}


def profile_toml(instance_type: str, inst: InstanceMeasurement, max_batch: int, max_queue_delay_ms: float,
                 preferred: tuple[int, ...], fn: FunctionMeasurement | None, command: str, when: str) -> str:
    """The profile file's text (serving/profiles.py format), with the command in `source`."""
    def arr(xs, fmt="{:.3f}"):
        return "[" + ", ".join(fmt.format(x) for x in xs) + "]"

    lines = [f"# Measured on this host by `{command}` ({when}).",
             "# Instance: batch latency = slowest of b single JSON requests sent at once to a real Triton",
             "# server (dynamic batching), less the batcher's queue delay below max batch; median of rounds.",
             f'model = "{MODEL_NAME}"', "", f'[backends."{instance_type}"]', 'kind = "instance"',
             f"max_batch = {max_batch}", f"measured_batches = {arr(inst.batches, '{}')}",
             f"measured_latency_ms = {arr(inst.latency_ms)}", f"jitter_cv = {inst.jitter_cv:.4f}",
             f"max_queue_delay_ms = {max_queue_delay_ms:g}"]
    if preferred:
        lines.append(f"preferred_batch_sizes = {arr(preferred, '{}')}")
    sweep = ", ".join("{ " + ", ".join(f"{k} = {v}" for k, v in row.items()) + " }" for row in inst.sweep)
    lines += [f"concurrency_sweep = [{sweep}]",
              f'source = "measured: {command} ({when}); Triton executions per round '
              f'{", ".join(f"b={b}: {e:.2f}" for b, e in zip(inst.batches, inst.executions_per_round))}"']
    if fn is not None:
        cold = cold_start_distribution(fn.cold_starts_s)
        cold_text = "{ " + ", ".join(f'{k} = "{v}"' if isinstance(v, str) else f"{k} = {v}"
                                     for k, v in cold.items()) + " }"
        lines += ["", f'[backends."lambda-{fn.memory_mb}"]', 'kind = "function"', f"memory_mb = {fn.memory_mb}",
                  "max_batch = 1", f"batch_latency_ms = [{fn.warm_ms:.3f}]", f"jitter_cv = {fn.jitter_cv:.4f}",
                  "max_queue_delay_ms = 0", f"cold_start_s = {cold_text}",
                  f'source = "measured: {command} ({when}); warm = round trip through the local invoke API, '
                  f'cold = init duration of {len(fn.cold_starts_s)} fresh environments '
                  f'({", ".join(f"{s:.2f}" for s in fn.cold_starts_s)} s)"']
    return "\n".join(lines) + "\n"


def default_batches(max_batch: int) -> tuple[int, ...]:
    """1, 2, 4, ... up to max_batch, which is always included (the profile format needs it)."""
    out = [1 << k for k in range(int(math.log2(max_batch)) + 1)]
    return tuple(out if out[-1] == max_batch else out + [max_batch])


def write_profile(path: Path, text: str) -> Path:
    from serving.profiles import load_profile
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    load_profile(str(path))          # what we wrote must load (raises ProfileError otherwise)
    return path
