"""Expand a trace into per-request arrival times, chunk by chunk, reproducibly.

Chunks are the windows [k*chunk_s, (k+1)*chunk_s), k counted from t=0. Window k draws from
substream k of the seed's stream (traces.rng), so each chunk can be regenerated on its own and
the result never depends on where a caller starts (``start_s``) or how many chunks it reads.
Only one chunk is materialised at a time: a week at 5,000 req/s is 3 G arrivals (24 GB of
float64), but the default 1-minute chunk is 300 k (2.4 MB). Chunks that small are also reused
by the memory allocator from one to the next, where 10-minute ones were fresh memory each time
(their page faults cost 10% of a 20-minute simulation).

Counts-based traces: chunk_s is rounded *up* to a whole number of bins (chunk_s=3600 with
600 s bins stays 3600; with 7 s bins it becomes 3605), so no bin straddles two chunks. Within a
bin requests are spread uniformly at random, generated already sorted, in O(N) with no sort:
  * counts_are_rates=True: a Poisson process of rate counts[i] / width across the bin, i.e.
    exponential gaps until the bin's end; its count is Poisson(counts[i]) and, given the count,
    its times are uniform, which is the model's assumption;
  * exact integer counts: N = counts[i] times, the order statistics of N uniforms: the partial
    sums of N+1 exponential spacings divided by their total (E_1, E_1+E_2, ... over E_1+...+E_{N+1});
  * exact non-integer counts (after a "multiply" rescale): N = floor(c) + Bernoulli(c - floor(c)),
    e.g. 2.3 -> 2 or 3 with P(3) = 0.3, which keeps E[N] = c with the least extra noise.
Per-request traces yield their own timestamps (no randomness).
"""
from __future__ import annotations

import math
from typing import Iterator

import numpy as np
from numba import njit

from traces.errors import TraceError
from traces.model import Trace
from traces.rng import exponential, new_state, substream, uniform


def effective_chunk_s(trace: Trace, chunk_s: float) -> float:
    """chunk_s rounded up to a multiple of the trace's bin (unchanged for per-request traces)."""
    if not (math.isfinite(chunk_s) and chunk_s > 0):
        raise TraceError(trace.name, f"chunk_s must be positive, got {chunk_s}")
    if trace.counts is None:
        return float(chunk_s)
    return _bins_per_chunk(trace, chunk_s) * trace.bin_s


def _bins_per_chunk(trace: Trace, chunk_s: float) -> int:
    return max(1, math.ceil(chunk_s / trace.bin_s - 1e-9))


@njit(cache=True)
def _fill(out, counts, starts, widths, as_rates, state, limit_s):
    """The sorted arrival times of the bins [starts[i], starts[i] + widths[i]) into out (see the
    module docstring); returns how many, or -1 if out is too small."""
    pos = 0
    for b in range(counts.shape[0]):
        c, start, width = counts[b], starts[b], widths[b]
        if as_rates:
            if c <= 0.0:
                continue
            gap, end = width / c, start + width
            t = start + exponential(state) * gap
            while t < end:
                if pos == out.shape[0]:
                    return -1
                out[pos] = t
                pos += 1
                t += exponential(state) * gap
            continue
        m = int(c)
        if uniform(state) < c - m:
            m += 1
        if pos + m > out.shape[0]:
            return -1
        acc = 0.0
        for j in range(m):
            acc += exponential(state)
            out[pos + j] = acc
        scale = width / (acc + exponential(state))
        for j in range(m):
            # start + u*width can round up to the next bin edge; never let it reach the end.
            out[pos + j] = min(start + out[pos + j] * scale, limit_s)
        pos += m
    return pos


def _counts_chunk(trace: Trace, k: int, bins_per_chunk: int, stream: np.ndarray) -> np.ndarray:
    i0 = k * bins_per_chunk
    i1 = min(i0 + bins_per_chunk, trace.counts.size)
    counts = trace.counts[i0:i1]
    edges = np.minimum(np.arange(i0, i1 + 1, dtype=np.float64) * trace.bin_s, trace.duration_s)
    # Room for every request: the ceiling of exact counts, or a Poisson total's mean plus 8 sd
    # (exceeded with probability below 1e-15; the chunk is then drawn again, identically, twice
    # as large).
    total = float(counts.sum())
    size = total + 8.0 * math.sqrt(total) + 16.0 if trace.counts_are_rates else float(np.ceil(counts).sum())
    while True:
        out = np.empty(int(size))
        n = _fill(out, counts, edges[:-1], np.diff(edges), trace.counts_are_rates, substream(stream, k),
                  np.nextafter(trace.duration_s, 0.0))
        if n >= 0:
            return out[:n]
        size *= 2


DEFAULT_CHUNK_S = 60.0   # 1 minute: 240 k arrivals (1.9 MB) at 4,000 req/s


def iter_arrivals(trace: Trace, seed: int, chunk_s: float = DEFAULT_CHUNK_S, start_s: float = 0.0,
                  end_s: float | None = None) -> Iterator[np.ndarray]:
    """Yield sorted float64 arrival times (seconds since t=0), one array per window.

    Windows are [k*chunk_s, (k+1)*chunk_s) for k = floor(start_s/chunk_s) .. covering end_s
    (default: the trace's duration); the first and last are clipped to [start_s, end_s).
    Empty windows yield empty arrays. For counts-based traces chunk_s is rounded up to a
    multiple of bin_s (see module docstring).
    """
    end_s = trace.duration_s if end_s is None else min(float(end_s), trace.duration_s)
    if start_s < 0 or not start_s < end_s:
        raise TraceError(trace.name, f"bad arrival window [{start_s:g}, {end_s:g}) s")
    chunk = effective_chunk_s(trace, chunk_s)
    k_first = int(start_s // chunk)
    k_last = math.ceil(end_s / chunk) - 1
    if trace.counts is not None:
        bpc = _bins_per_chunk(trace, chunk_s)
        stream = new_state(np.random.SeedSequence(seed))
        for k in range(k_first, k_last + 1):
            t = _counts_chunk(trace, k, bpc, stream)
            if k == k_first or k == k_last:
                lo, hi = np.searchsorted(t, [start_s, end_s], side="left")   # t is sorted
                t = t[lo:hi]
            yield t
    else:
        arr = trace.arrivals_s
        for k in range(k_first, k_last + 1):
            lo = max(k * chunk, start_s)
            hi = min((k + 1) * chunk, end_s)
            i0, i1 = np.searchsorted(arr, [lo, hi], side="left")
            yield arr[i0:i1]


def expand_to_arrivals(trace: Trace, seed: int) -> np.ndarray:
    """All arrival times at once (= concatenation of iter_arrivals with default chunks)."""
    return np.concatenate(list(iter_arrivals(trace, seed)))
