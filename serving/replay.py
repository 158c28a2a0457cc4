"""What a replay sends: a trace slice turned into arrival times (time-compressed), and the body
of one inference request. Shared by `spillway loadgen`, the end-to-end tests and the fidelity
benchmark, so that the simulator can be given exactly the arrivals the real stack received:
`replay_arrivals` returns the Trace too, and the simulator expands the same Trace with the same
seed into the same arrival times (traces.arrivals.expand_to_arrivals).
"""
from __future__ import annotations

import numpy as np
import orjson

from controller.config import Config
from controller.run import prepare_trace
from traces.arrivals import expand_to_arrivals
from traces.model import Trace
from traces.transforms import rescale_to_mean, time_compress


def replay_trace(name: str, cfg: Config, start_s: float, duration_s: float, speedup: float = 1.0,
                 mean_rps: float | None = None) -> Trace:
    """A slice of the trace, compressed by `speedup` (duration_s of trace time plays in
    duration_s / speedup), then rescaled to `mean_rps` when given.
    E.g. 10 min of Twitter at speedup 5 plays in 120 s at 5x the rate before rescaling."""
    trace = prepare_trace(name, cfg, start_s, duration_s)
    if speedup != 1.0:
        trace = time_compress(trace, speedup)
    if mean_rps is not None:
        trace = rescale_to_mean(trace, mean_rps, method=cfg.simulation.rescale, smooth_s=cfg.simulation.smooth_s)
    return trace


def replay_arrivals(name: str, cfg: Config, start_s: float, duration_s: float, speedup: float = 1.0,
                    mean_rps: float | None = None) -> tuple[np.ndarray, Trace]:
    trace = replay_trace(name, cfg, start_s, duration_s, speedup, mean_rps)
    return expand_to_arrivals(trace, cfg.simulation.seed), trace


def request_body(seed: int = 0) -> bytes:
    """One KServe v2 JSON request for the reference model (one image)."""
    from serving.model import example_inputs, v2_request
    return orjson.dumps(v2_request(example_inputs(1, seed)), option=orjson.OPT_SERIALIZE_NUMPY)


async def replay_from_own_process(url: str, arrivals_s: np.ndarray, body: bytes, **options):
    """serving.loadgen.run_replay in a separate (spawned) process, returning its LoadResult.

    The load generator must not share a Python interpreter with the stack it measures: on this
    2-core machine, sending ~200 req/s costs the sender a good part of a core, and in the same
    process that time would show up as router latency."""
    import asyncio
    import functools
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from serving.loadgen import run_replay

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return await asyncio.get_running_loop().run_in_executor(
            pool, functools.partial(run_replay, url, arrivals_s, body, **options))
