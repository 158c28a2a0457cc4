"""Synthetic arrival processes, each returned as a ``Trace``.

Rate-based generators (poisson, diurnal, flash crowd) return expected counts per bin
(``counts_are_rates=True``); arrivals are drawn later, seeded, by ``traces.arrivals``.
State-based ones (MMPP-2, on/off) sample the hidden state path exactly and return
per-request arrival times.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
from scipy.optimize import brentq
from scipy.special import i0e

from traces.errors import TraceError
from traces.model import Trace, bin_edges, n_bins_for

SYNTH_LICENCE = "generated (no licence needed)"


def _check_positive(name: str, **vals: float) -> None:
    for k, v in vals.items():
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise TraceError(f"synthetic:{name}", f"{k} must be positive and finite, got {v!r}")


def _check_nonneg(name: str, **vals: float) -> None:
    for k, v in vals.items():
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
            raise TraceError(f"synthetic:{name}", f"{k} must be >= 0 and finite, got {v!r}")


def _grid(duration_s: float, bin_s: float) -> tuple[np.ndarray, np.ndarray]:
    """(bin centres, bin widths) covering duration_s; the last bin may be partial."""
    edges = bin_edges(n_bins_for(duration_s, bin_s), bin_s, duration_s)
    return 0.5 * (edges[:-1] + edges[1:]), np.diff(edges)


def _rate_trace(kind: str, params: str, rate_rps: np.ndarray, widths_s: np.ndarray,
                duration_s: float, bin_s: float, notes=()) -> Trace:
    return Trace(name=f"synthetic:{kind}", source=f"synthetic: {params}", licence=SYNTH_LICENCE,
                 start="", duration_s=duration_s, bin_s=bin_s, counts=rate_rps * widths_s,
                 counts_are_rates=True, notes=tuple(notes))


# ---------------------------------------------------------------- Poisson
def poisson_trace(rate_rps: float | Callable[[np.ndarray], np.ndarray] | np.ndarray,
                  duration_s: float, bin_s: float = 1.0) -> Trace:
    """Inhomogeneous Poisson process, rate piecewise constant per bin.

    rate_rps: a constant; a function of time (evaluated at bin centres, vectorised); or an
    array with one rate per bin (ceil(duration_s / bin_s) values).
    """
    _check_positive("poisson", duration_s=duration_s, bin_s=bin_s)
    centres, widths = _grid(duration_s, bin_s)
    if callable(rate_rps):
        rates = np.asarray(rate_rps(centres), dtype=np.float64)
        desc = f"rate=<function>, duration_s={duration_s:g}, bin_s={bin_s:g}"
    elif np.ndim(rate_rps) == 0:
        _check_nonneg("poisson", rate_rps=float(rate_rps))
        rates = np.full(centres.size, float(rate_rps))
        desc = f"rate_rps={float(rate_rps):g}, duration_s={duration_s:g}, bin_s={bin_s:g}"
    else:
        rates = np.asarray(rate_rps, dtype=np.float64)
        desc = f"rate=<array of {rates.size}>, duration_s={duration_s:g}, bin_s={bin_s:g}"
    if rates.shape != centres.shape:
        raise TraceError("synthetic:poisson", f"rate gives {rates.size} values for {centres.size} bins")
    if not np.isfinite(rates).all() or (rates < 0).any():
        raise TraceError("synthetic:poisson", "rates must be finite and >= 0")
    return _rate_trace("poisson", desc, rates, widths, float(duration_s), float(bin_s))


# ---------------------------------------------------------------- MMPP-2 / on-off
def _sample_two_state_path(switch_per_s, duration_s, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact CTMC path: (segment starts, segment lengths, states), clipped to duration_s.

    The first state is drawn from the stationary law pi_0 = q10 / (q01 + q10), so the
    process is stationary from t=0. Sojourns are drawn in vectorised batches sized to cover
    the expected number of switches (duration * mean switch rate) with a 25 % margin.
    """
    q = np.asarray(switch_per_s, dtype=np.float64)  # q[s] = rate of leaving state s
    pi0 = q[1] / (q[0] + q[1])
    state0 = 0 if rng.random() < pi0 else 1
    lengths: list[np.ndarray] = []
    states: list[np.ndarray] = []
    total, next_state = 0.0, state0
    mean_cycle_s = 1.0 / q[0] + 1.0 / q[1]
    while total < duration_s:
        n = int(min(5_000_000, max(16, 1.25 * 2 * (duration_s - total) / mean_cycle_s + 16)))
        st = (next_state + np.arange(n)) % 2  # states alternate
        ln = rng.exponential(1.0 / q[st])
        lengths.append(ln)
        states.append(st)
        total += float(ln.sum())
        next_state = (int(st[-1]) + 1) % 2
    ln = np.concatenate(lengths)
    st = np.concatenate(states)
    starts = np.concatenate(([0.0], np.cumsum(ln)[:-1]))
    keep = starts < duration_s
    starts, ln, st = starts[keep], ln[keep], st[keep]
    ln = np.minimum(ln, duration_s - starts)
    return starts, ln, st


def _mmpp_arrivals(rate_rps, switch_per_s, duration_s, seed):
    rng = np.random.default_rng(seed)
    starts, lengths, states = _sample_two_state_path(switch_per_s, duration_s, rng)
    r = np.asarray(rate_rps, dtype=np.float64)[states]
    n = rng.poisson(r * lengths)  # given the path, arrivals are Poisson within each segment
    t = np.repeat(starts, n) + rng.random(int(n.sum())) * np.repeat(lengths, n)
    t.sort()
    # start + u*length can round up to exactly duration_s; keep times strictly inside.
    np.minimum(t, np.nextafter(duration_s, 0.0), out=t)
    return t, float((lengths * (states == 0)).sum())


def mmpp2(rate_rps: tuple[float, float], switch_per_s: tuple[float, float],
          duration_s: float, seed: int) -> Trace:
    """Two-state Markov-modulated Poisson process.

    rate_rps[s] is the arrival rate in state s; switch_per_s[s] the rate of leaving state s.
    Stationary mean = pi0*r0 + pi1*r1 with pi0 = q1/(q0+q1); e.g. rates (60, 220), switches
    (1/300, 1/100): pi0 = 0.75, mean = 45 + 55 = 100 req/s.
    """
    _check_nonneg("mmpp", r0=rate_rps[0], r1=rate_rps[1])
    _check_positive("mmpp", q0=switch_per_s[0], q1=switch_per_s[1], duration_s=duration_s)
    t, time_in_0 = _mmpp_arrivals(rate_rps, switch_per_s, float(duration_s), seed)
    if t.size == 0:
        raise TraceError("synthetic:mmpp", "no arrivals generated (rates too low for the duration)")
    params = (f"rate_rps={tuple(rate_rps)}, switch_per_s={tuple(switch_per_s)}, "
              f"duration_s={duration_s:g}, seed={seed}")
    return Trace(name="synthetic:mmpp", source=f"synthetic: {params}", licence=SYNTH_LICENCE,
                 start="", duration_s=float(duration_s), arrivals_s=t,
                 notes=(f"state 0 occupied {time_in_0 / duration_s:.1%} of the time",))


def mmpp_mean_rps(rate_rps, switch_per_s) -> float:
    q0, q1 = switch_per_s
    pi0 = q1 / (q0 + q1)
    return pi0 * rate_rps[0] + (1 - pi0) * rate_rps[1]


def on_off(on_rps: float, off_rps: float, mean_on_s: float, mean_off_s: float,
           duration_s: float, seed: int) -> Trace:
    """Bursts: exponential on/off periods (an MMPP-2 with state 0 = on).

    Mean = (on*mean_on + off*mean_off) / (mean_on + mean_off); e.g. 260 req/s for 120 s,
    20 req/s for 240 s: (31,200 + 4,800) / 360 = 100 req/s.
    """
    _check_positive("on-off", mean_on_s=mean_on_s, mean_off_s=mean_off_s, duration_s=duration_s)
    _check_nonneg("on-off", on_rps=on_rps, off_rps=off_rps)
    t, time_on = _mmpp_arrivals((on_rps, off_rps), (1.0 / mean_on_s, 1.0 / mean_off_s),
                                float(duration_s), seed)
    if t.size == 0:
        raise TraceError("synthetic:on-off", "no arrivals generated (rates too low for the duration)")
    params = (f"on_rps={on_rps:g}, off_rps={off_rps:g}, mean_on_s={mean_on_s:g}, "
              f"mean_off_s={mean_off_s:g}, duration_s={duration_s:g}, seed={seed}")
    return Trace(name="synthetic:on-off", source=f"synthetic: {params}", licence=SYNTH_LICENCE,
                 start="", duration_s=float(duration_s), arrivals_s=t,
                 notes=(f"on {time_on / duration_s:.1%} of the time",))


# ---------------------------------------------------------------- diurnal
def _von_mises_k(peak_to_mean: float) -> float:
    """Concentration k with peak/mean of exp(k cos x) equal to peak_to_mean.

    mean of exp(k cos x) over a period is I0(k), so peak/mean = e^k / I0(k) = 1 / i0e(k).
    k = 1.0 gives 2.72/1.27 = 2.14; k = 0 gives 1 (flat). The shape stays positive for any
    ratio, unlike 1 + a*sin, which goes negative for ratios above 2.
    """
    if peak_to_mean <= 1.0 + 1e-12:
        return 0.0
    return brentq(lambda k: 1.0 / i0e(k) - peak_to_mean, 1e-9, 1e4)


def diurnal(mean_rps: float, peak_to_mean: float, duration_s: float, period_s: float = 86400.0,
            noise_cv: float = 0.05, seed: int = 0, bin_s: float = 60.0) -> Trace:
    """Daily cycle (peak at mid-period) times independent lognormal noise per bin.

    The shape is exp(k cos(2 pi (t - period/2) / period)), normalised so its mean over the
    bins is exactly mean_rps; noise has mean 1 and the given CV (sigma^2 = ln(1 + cv^2)).
    """
    _check_positive("diurnal", mean_rps=mean_rps, duration_s=duration_s, period_s=period_s, bin_s=bin_s)
    _check_nonneg("diurnal", noise_cv=noise_cv)
    if not peak_to_mean >= 1.0:
        raise TraceError("synthetic:diurnal", f"peak_to_mean must be >= 1, got {peak_to_mean!r}")
    k = _von_mises_k(float(peak_to_mean))
    centres, widths = _grid(duration_s, bin_s)
    shape = np.exp(k * (np.cos(2 * np.pi * (centres - period_s / 2) / period_s) - 1.0))
    shape /= np.average(shape, weights=widths)
    rates = mean_rps * shape
    if noise_cv > 0:
        sigma2 = math.log1p(noise_cv ** 2)
        rng = np.random.default_rng(seed)
        rates = rates * rng.lognormal(-sigma2 / 2, math.sqrt(sigma2), size=rates.size)
    params = (f"mean_rps={mean_rps:g}, peak_to_mean={peak_to_mean:g}, duration_s={duration_s:g}, "
              f"period_s={period_s:g}, noise_cv={noise_cv:g}, seed={seed}, bin_s={bin_s:g}")
    return _rate_trace("diurnal", params, rates, widths, float(duration_s), float(bin_s))


# ---------------------------------------------------------------- flash crowd
def flash_crowd(base_rps: float, peak_rps: float, start_s: float, ramp_s: float, hold_s: float,
                decay_s: float, duration_s: float, bin_s: float = 1.0) -> Trace:
    """Base rate, then a linear ramp to peak over ramp_s, a hold, and an exponential decay
    back towards base with time constant decay_s (after 3*decay_s, 95 % of the excess is gone).
    """
    _check_positive("flash-crowd", duration_s=duration_s, bin_s=bin_s)
    _check_nonneg("flash-crowd", base_rps=base_rps, peak_rps=peak_rps, start_s=start_s,
                  ramp_s=ramp_s, hold_s=hold_s, decay_s=decay_s)
    centres, widths = _grid(duration_s, bin_s)
    excess = peak_rps - base_rps
    t = centres - start_s
    ramp_frac = np.clip(t / ramp_s, 0.0, 1.0) if ramp_s > 0 else (t >= 0).astype(np.float64)
    after = t - ramp_s - hold_s
    decay = np.exp(-np.maximum(after, 0.0) / decay_s) if decay_s > 0 else (after < 0).astype(np.float64)
    rates = base_rps + excess * ramp_frac * np.where(after > 0, decay, 1.0)
    params = (f"base_rps={base_rps:g}, peak_rps={peak_rps:g}, start_s={start_s:g}, ramp_s={ramp_s:g}, "
              f"hold_s={hold_s:g}, decay_s={decay_s:g}, duration_s={duration_s:g}, bin_s={bin_s:g}")
    return _rate_trace("flash-crowd", params, np.maximum(rates, 0.0), widths, float(duration_s), float(bin_s))
