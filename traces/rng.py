"""Seeded random streams for compiled code: arrival generation and the simulator's kernel.

Plain arithmetic on one uint64 of state, with no error paths. numba's own np.random draws are
calls that return an error status, and a numba function with an error path keeps the reference
counting of all its array arguments (an atomic increment and decrement per array per call,
which in the simulator's kernel cost more than the simulation itself).

- uniform: SplitMix64 (Steele, Lea and Flood, OOPSLA 2014; passes BigCrush), 53-bit doubles.
- normal and exponential: Marsaglia and Tsang's ziggurat with 256 layers (J. Stat. Software
  5(8), 2000), as numpy's Generator draws them: one 64-bit draw and a table lookup 99% of the time.

The state is a one-element uint64 array, advanced in place, so a stream continues across calls.
SplitMix64's state is a counter, so `substream(state, k)` starts substream k 2**32 draws after
substream k-1: each can be regenerated on its own, and they never overlap while each takes fewer
than 2**32 draws (a one-minute chunk of arrivals takes a few hundred thousand).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

_GAMMA = 0x9E3779B97F4A7C15
_U_GAMMA = np.uint64(_GAMMA)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_S3, _S8, _S11, _S27, _S30, _S31 = (np.uint64(s) for s in (3, 8, 11, 27, 30, 31))
_BYTE = np.uint64(0xFF)
_ONE = np.uint64(1)
_BITS52 = np.uint64((1 << 52) - 1)
_TO_UNIT = 2.0 ** -53
_SUBSTREAM_DRAWS = 1 << 32


def new_state(seed_seq: np.random.SeedSequence) -> np.ndarray:
    return seed_seq.generate_state(1, np.uint64)


def substream(state: np.ndarray, k: int) -> np.ndarray:
    """The state of substream k of the stream at `state`: 2**32 draws after substream k-1."""
    return np.array([(int(state[0]) + k * _SUBSTREAM_DRAWS * _GAMMA) % (1 << 64)], np.uint64)


@njit(cache=True, inline="always")
def next_u64(state):
    s = state[0] + _U_GAMMA
    state[0] = s
    z = (s ^ (s >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    return z ^ (z >> _S31)


@njit(cache=True, inline="always")
def uniform(state):
    """In [0, 1)."""
    return float(next_u64(state) >> _S11) * _TO_UNIT


def _ziggurat(density, inverse, r: float, v: float, bits: int, layers: int = 256):
    """Marsaglia and Tsang's zigset for a decreasing density f on [0, inf) (unnormalised, f(0) = 1)
    and `bits`-bit magnitudes: layer i > 0 spans [0, x_i), with x_i falling to x_255 = r; layer 0
    is the base strip plus the tail beyond r; each has area v. k[i] = x_{i-1} / x_i (scaled): a
    magnitude below it lies under the density with no need to evaluate f."""
    m = 2.0 ** bits
    k, w, f = np.zeros(layers, np.uint64), np.zeros(layers), np.zeros(layers)
    q = v / density(r)
    k[0], w[0], f[0] = np.uint64(r / q * m), q / m, 1.0
    w[-1], f[-1] = r / m, density(r)
    x, prev = r, r
    for i in range(layers - 2, 0, -1):
        x = inverse(v / x + density(x))
        k[i + 1] = np.uint64(x / prev * m)
        prev = x
        f[i] = density(x)
        w[i] = x / m
    return k, w, f


_NORMAL_R = 3.6541528853610088
_NORMAL_K, _NORMAL_W, _NORMAL_F = _ziggurat(lambda x: math.exp(-0.5 * x * x),
                                            lambda y: math.sqrt(-2.0 * math.log(y)),
                                            _NORMAL_R, 4.92867323399e-3, 52)
_EXP_R = 7.69711747013104972
_EXP_K, _EXP_W, _EXP_F = _ziggurat(lambda x: math.exp(-x), lambda y: -math.log(y),
                                   _EXP_R, 3.949659822581572e-3, 53)


@njit(cache=True, inline="always")
def normal(state):
    while True:
        r = next_u64(state)
        layer = int(r & _BYTE)
        r >>= _S8
        magnitude = (r >> _ONE) & _BITS52
        x = float(magnitude) * _NORMAL_W[layer]
        if r & _ONE:
            x = -x
        if magnitude < _NORMAL_K[layer]:
            return x
        if layer == 0:
            # The tail beyond r (Marsaglia 1964).
            while True:
                xx = -math.log1p(-uniform(state)) / _NORMAL_R
                yy = -math.log1p(-uniform(state))
                if yy + yy > xx * xx:
                    return -(_NORMAL_R + xx) if x < 0.0 else _NORMAL_R + xx
        elif (_NORMAL_F[layer - 1] - _NORMAL_F[layer]) * uniform(state) + _NORMAL_F[layer] < math.exp(-0.5 * x * x):
            return x


@njit(cache=True, inline="always")
def exponential(state):
    """Mean 1."""
    while True:
        r = next_u64(state) >> _S3
        layer = int(r & _BYTE)
        r >>= _S8
        x = float(r) * _EXP_W[layer]
        if r < _EXP_K[layer]:
            return x
        if layer == 0:
            # Memoryless: the tail beyond r is r plus an exponential.
            return _EXP_R - math.log1p(-uniform(state))
        if (_EXP_F[layer - 1] - _EXP_F[layer]) * uniform(state) + _EXP_F[layer] < math.exp(-x):
            return x
