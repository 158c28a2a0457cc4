"""Open-loop load generator: replay arrival times against an HTTP inference endpoint.

Open loop means each request is sent at its scheduled time whatever the earlier ones are
doing: a slow server does not slow the sender down (a closed loop would, and would hide the
very queueing we want to see -- "coordinated omission"). Latency is measured from the
SCHEDULED time, so when the client itself falls behind, that lateness counts against the
latency too; lateness (send time - scheduled time) is recorded per request as well.

One process (uvloop, the minimal keep-alive HTTP/1.1 client of serving/router/upstream.py)
sustains a few thousand req/s on a small body (~100-170 us of CPU per request here);
`processes=N` splits the arrivals across N processes (request i goes to process i mod N, so
each sees the same rate shape) that start together and merge their results.

Every request gets a row: status 0 and path -1 when the connection failed or timed out.
Paths come from the router's `X-Spillway-Path` header: 0 instance, 1 function-warm,
2 function-cold, -1 none (no header, or an error).
"""
from __future__ import annotations

import asyncio
import math
import pickle
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

import numpy as np

from serving.router.upstream import Pool

try:
    from uvloop import run as run_loop
except ImportError:            # uvloop is optional: the stock loop is slower, not wrong
    from asyncio import run as run_loop

PATH_CODES = {"instance": 0, "function-warm": 1, "function-cold": 2}
PATH_NAMES = {code: name for name, code in PATH_CODES.items()} | {-1: "none"}
# Times are taken with perf_counter: uvloop's loop.time() has 1 ms resolution, too coarse for
# latencies of a millisecond or two.
clock = time.perf_counter
TIMER_RESOLUTION_S = 0.001
START_LEAD_S = 0.2          # time between "go" and the first arrival: sessions are ready by then
PROGRESS_EVERY_S = 1.0


class LoadgenError(ValueError):
    """Bad replay input (one line naming the argument and the problem)."""


@dataclass(frozen=True)
class LoadResult:
    scheduled_s: np.ndarray    # float64, seconds from the start (the arrivals given)
    latency_ms: np.ndarray     # float64, from scheduled time to response (or failure)
    status: np.ndarray         # int32 HTTP status; 0 = connection failed / timed out
    path: np.ndarray           # int8 path code (see module docstring)
    late_ms: np.ndarray        # float64, send time - scheduled time

    def summary(self) -> dict[str, Any]:
        n = len(self.status)
        ok = (self.status >= 200) & (self.status < 300)
        n_ok = int(ok.sum())
        lat = self.latency_ms[ok]

        def pct(q: float) -> float | None:
            return round(float(np.percentile(lat, q)), 3) if n_ok else None

        span_s = float(self.scheduled_s[-1] - self.scheduled_s[0]) if n > 1 else 0.0
        codes, counts = np.unique(self.status, return_counts=True)
        return {
            "requests": n, "ok": n_ok, "errors": n - n_ok,
            "offered_rps": round(n / span_s, 1) if span_s > 0 else None,
            "p50_ms": pct(50), "p95_ms": pct(95), "p99_ms": pct(99), "p999_ms": pct(99.9),
            "share": {PATH_NAMES[c]: round(float((self.path[ok] == c).sum()) / n_ok, 4) if n_ok else 0.0
                      for c in (0, 1, 2, -1)},
            "status_counts": {int(c): int(k) for c, k in zip(codes, counts)},
            "max_late_ms": round(float(self.late_ms.max()), 3) if n else 0.0,
            "p99_late_ms": round(float(np.percentile(self.late_ms, 99)), 3) if n else 0.0,
        }

    def to_csv(self, path: str | Path) -> None:
        table = np.column_stack([self.scheduled_s, self.latency_ms, self.status, self.path, self.late_ms])
        np.savetxt(path, table, delimiter=",", fmt=["%.6f", "%.3f", "%d", "%d", "%.3f"],
                   header="scheduled_s,latency_ms,status,path,late_ms", comments="")


def _check(url: str, arrivals_s: Any, body: Any, max_connections: int, timeout_s: float,
           processes: int) -> np.ndarray:
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise LoadgenError(f"replay: url = {url!r}: must be an http(s) URL")
    if not isinstance(body, (bytes, bytearray)):
        raise LoadgenError(f"replay: body: must be bytes, got {type(body).__name__}")
    try:
        a = np.asarray(arrivals_s, dtype=np.float64)
    except (TypeError, ValueError):
        raise LoadgenError("replay: arrivals_s: must be an array of seconds") from None
    if a.ndim != 1 or a.size == 0:
        raise LoadgenError(f"replay: arrivals_s: must be a non-empty 1-D array, got shape {a.shape}")
    if not np.isfinite(a).all() or a[0] < 0:
        raise LoadgenError("replay: arrivals_s: must be finite seconds >= 0")
    if (np.diff(a) < 0).any():
        raise LoadgenError("replay: arrivals_s: must be sorted")
    for name, value, low in (("max_connections", max_connections, 1), ("processes", processes, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise LoadgenError(f"replay: {name} = {value!r}: must be a whole number >= {low}")
    if not (isinstance(timeout_s, (int, float)) and math.isfinite(timeout_s) and timeout_s > 0):
        raise LoadgenError(f"replay: timeout_s = {timeout_s!r}: must be a number > 0")
    return a


async def _replay_here(url: str, arrivals: np.ndarray, body: bytes, headers: Mapping[str, str] | None,
                       max_connections: int, timeout_s: float, progress: bool,
                       start_epoch_s: float | None = None, ready=None) -> LoadResult:
    """Replay in this process. start_epoch_s: wall-clock time of arrival 0 (to line up several
    processes); ready: a callable that reports readiness and returns start_epoch_s."""
    n = len(arrivals)
    latency = np.full(n, np.nan)
    status = np.zeros(n, np.int32)
    path = np.full(n, -1, np.int8)
    late = np.zeros(n)
    loop = asyncio.get_running_loop()
    pool = Pool(url, max_connections)
    parts = urlsplit(url)
    request = pool.build_post((parts.path or "/") + (f"?{parts.query}" if parts.query else ""), body,
                              {"Content-Type": "application/json", **(headers or {})})
    done = 0

    async def one(i: int, scheduled: float) -> None:
        nonlocal done
        late[i] = (clock() - scheduled) * 1000.0
        try:
            response = await pool.send(request, timeout_s)
            status[i] = response.status
            path[i] = PATH_CODES.get(response.headers.get("x-spillway-path"), -1)
        except (OSError, TimeoutError):               # refused, reset, unparsable reply, timeout
            status[i] = 0
        latency[i] = (clock() - scheduled) * 1000.0
        done += 1

    if ready is not None:
        start_epoch_s = await loop.run_in_executor(None, ready)
    t0 = clock() + (START_LEAD_S if start_epoch_s is None else start_epoch_s - time.time())
    tasks: set[asyncio.Task] = set()
    next_report = t0 + PROGRESS_EVERY_S
    try:
        for i in range(n):
            scheduled = t0 + arrivals[i]
            # Loop timers have 1 ms resolution: a shorter sleep returns at once, and spinning
            # through the loop until the time comes cost ~100 us of CPU per request at
            # 1,000 req/s. So sleep at least 1 ms: never early, at most ~1 ms late, and the
            # lateness is recorded and counted in the latency.
            while (wait := scheduled - clock()) > 0:
                await asyncio.sleep(max(wait, TIMER_RESOLUTION_S))
            task = loop.create_task(one(i, scheduled))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            if progress and clock() >= next_report:
                next_report += PROGRESS_EVERY_S
                print(f"loadgen: sent {i + 1}/{n}, answered {done}", file=sys.stderr, flush=True)
        while tasks:
            await asyncio.gather(*list(tasks))
    finally:
        pool.close()
    return LoadResult(arrivals.copy(), latency, status, path, late)


def _worker_main() -> None:
    """A replay process (`python -m serving.loadgen --worker`): read its job from stdin, say
    "ready", read the common start time, replay, write the arrays to stdout (pickles)."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    job = pickle.load(stdin)

    def ready() -> float:
        stdout.write(b"ready\n")
        stdout.flush()
        return pickle.load(stdin)

    result = run_loop(_replay_here(**job, progress=False, ready=ready))
    pickle.dump((result.latency_ms, result.status, result.path, result.late_ms), stdout)
    stdout.flush()


def _replay_processes(url: str, arrivals: np.ndarray, body: bytes, headers, max_connections: int,
                      timeout_s: float, processes: int) -> LoadResult:
    procs = []
    try:
        for k in range(processes):
            proc = subprocess.Popen([sys.executable, "-m", "serving.loadgen", "--worker"],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            procs.append(proc)
            pickle.dump({"url": url, "arrivals": arrivals[k::processes], "body": body, "headers": dict(headers or {}),
                         "max_connections": max(1, max_connections // processes), "timeout_s": timeout_s},
                        proc.stdin)
            proc.stdin.flush()
        for proc in procs:
            if proc.stdout.readline() != b"ready\n":
                raise LoadgenError("replay: a load generator process failed to start (see its stderr)")
        start_epoch_s = time.time() + START_LEAD_S
        for proc in procs:
            pickle.dump(start_epoch_s, proc.stdin)
            proc.stdin.flush()
        n = len(arrivals)
        latency, status = np.full(n, np.nan), np.zeros(n, np.int32)
        path, late = np.full(n, -1, np.int8), np.zeros(n)
        for k, proc in enumerate(procs):
            try:
                latency[k::processes], status[k::processes], path[k::processes], late[k::processes] = \
                    pickle.load(proc.stdout)
            except (EOFError, pickle.UnpicklingError):
                raise LoadgenError("replay: a load generator process died (see its stderr)") from None
        return LoadResult(arrivals.copy(), latency, status, path, late)
    finally:
        for proc in procs:
            proc.stdin.close()           # a worker still waiting for its start time gets EOF and exits
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def replay(url: str, arrivals_s: np.ndarray, body: bytes, *, headers: Mapping[str, str] | None = None,
                 max_connections: int = 512, timeout_s: float = 30.0, progress: bool = False,
                 processes: int = 1) -> LoadResult:
    """Send `body` to `url` at each arrival time (seconds from the start, sorted), open loop."""
    arrivals = _check(url, arrivals_s, body, max_connections, timeout_s, processes)
    if processes == 1:
        return await _replay_here(url, arrivals, bytes(body), headers, max_connections, timeout_s, progress)
    return await asyncio.get_running_loop().run_in_executor(
        None, _replay_processes, url, arrivals, bytes(body), headers, max_connections, timeout_s, processes)


def run_replay(url: str, arrivals_s: np.ndarray, body: bytes, **kwargs: Any) -> LoadResult:
    """replay() from synchronous code (runs its own event loop, uvloop when available)."""
    return run_loop(replay(url, arrivals_s, body, **kwargs))


def main(argv: list[str] | None = None) -> int:
    """`python -m serving.loadgen URL --rate-rps R --duration-s D [--body FILE]`: Poisson
    arrivals at R req/s for D s (seeded), open loop; prints the summary as JSON."""
    import argparse
    import json
    p = argparse.ArgumentParser(prog="python -m serving.loadgen", description=main.__doc__.splitlines()[0])
    p.add_argument("url")
    p.add_argument("--rate-rps", type=float, required=True)
    p.add_argument("--duration-s", type=float, default=10.0)
    p.add_argument("--body", help="file with the request body (default: a 1x4 FP32 v2 request)")
    p.add_argument("--processes", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--csv", help="write one row per request here")
    args = p.parse_args(argv)
    try:
        body = Path(args.body).read_bytes() if args.body else (
            b'{"inputs": [{"name": "INPUT", "shape": [1, 4], "datatype": "FP32", "data": [0.1, 0.2, 0.3, 0.4]}]}')
        if not (args.rate_rps > 0 and args.duration_s > 0):
            raise LoadgenError("loadgen: --rate-rps and --duration-s must be > 0")
        gaps = np.random.default_rng(args.seed).exponential(1.0 / args.rate_rps, int(args.rate_rps * args.duration_s) + 1)
        arrivals = np.cumsum(gaps) - gaps[0]
        result = run_replay(args.url, arrivals[arrivals < args.duration_s], body, processes=args.processes)
    except (LoadgenError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.csv:
        result.to_csv(args.csv)
    print(json.dumps(result.summary()))
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--worker"]:
        _worker_main()
    else:
        sys.exit(main())
