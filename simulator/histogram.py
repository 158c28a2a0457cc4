"""Streaming latency histogram with log-linear bins: flat memory, bounded relative error.

Like HdrHistogram: each power-of-two octave of milliseconds is split into SUB = 128 equal bins,
so a bin spans at most 1/128 = 0.78% of its lower edge. Reporting a bin's geometric midpoint is
then off by at most sqrt(1 + 1/128) - 1 = 0.39% from any value inside it, so every percentile read
from the histogram is within 0.5% of the exact one. The bin index comes from math.frexp (the
float's exponent and mantissa) rather than a logarithm, which keeps the kernel's per-request cost
low. 36 octaves span 2**-10 ms (1 us) to 2**26 ms (18.6 h); slower requests land in the last bin.
"""
from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

SUB = 128
E_MIN = -10                  # the first octave starts at 2**E_MIN ms
N_OCTAVES = 36
N_BINS = SUB * N_OCTAVES
PATHS = ("instance", "function_warm", "function_cold")


def edges_ms() -> np.ndarray:
    """Lower edges of all bins, plus the upper edge of the last (N_BINS + 1 values)."""
    k = np.arange(N_BINS + 1)
    return np.ldexp(1.0 + (k % SUB) / SUB, E_MIN + k // SUB)


def bin_of(latency_ms: float) -> int:
    """Same rule as the kernel's: frexp gives latency = m * 2**e with 0.5 <= m < 1."""
    if latency_ms < 2.0 ** E_MIN:
        return 0
    m, e = math.frexp(latency_ms)
    return min((e - 1 - E_MIN) * SUB + int((2.0 * m - 1.0) * SUB), N_BINS - 1)


@intrinsic
def _float_bits(typingctx, x):
    """The IEEE-754 bits of a float64 as an int64 (an LLVM bitcast: free)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))
    return types.int64(types.float64), codegen


_SUB_BITS = SUB.bit_length() - 1          # 7: the top 7 mantissa bits pick the bin in an octave


@njit(cache=True, inline="always")
def bin_index(latency_s):
    """The kernel's bin of a latency in seconds: bin_of's rule read off the float's exponent and
    top mantissa bits, with no logarithm or frexp call per request: for ms = m * 2**e with
    1 <= m < 2, the bin is (e - E_MIN) * 128 + floor((m - 1) * 128)."""
    ms = latency_s * 1000.0
    if ms < 2.0 ** E_MIN:
        return 0
    bits = _float_bits(ms)
    b = (((bits >> 52) & 0x7FF) - 1023 - E_MIN) * SUB + ((bits >> (52 - _SUB_BITS)) & (SUB - 1))
    return b if b < N_BINS else N_BINS - 1


_EDGES = edges_ms()
MIDS_MS = np.sqrt(_EDGES[:-1] * _EDGES[1:])     # geometric midpoints, the values reported


def percentile_ms(counts: np.ndarray, q: float) -> float:
    """The q-quantile (0..1) of the histogram, as its bin's geometric midpoint; NaN if empty."""
    cum = np.cumsum(counts)
    total = cum[-1]
    if total <= 0:
        return math.nan
    k = min(int(np.searchsorted(cum, q * total, side="left")), N_BINS - 1)
    return float(MIDS_MS[k])
