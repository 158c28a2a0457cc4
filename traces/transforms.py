"""Trace transforms: slice, rescale, time-compress, splice, fill masked gaps.

All return new ``Trace`` objects (traces are immutable) and append a human-readable note
describing what was done, which ends up in summary.json.
"""
from __future__ import annotations

import math
from datetime import datetime, timedelta

import numpy as np

from traces.errors import TraceError
from traces.model import Trace, bin_edges, n_bins_for

_TOL = 1e-9
RESCALE_METHODS = ("smoothed", "multiply")


def _shift_iso(start: str, seconds: float) -> str:
    if not start or seconds == 0:
        return start
    try:
        return (datetime.fromisoformat(start) + timedelta(seconds=seconds)).isoformat()
    except ValueError:
        return ""


def _shift_masks(masked, offset_s: float):
    return tuple((a - offset_s, b - offset_s) for a, b in masked)


# ---------------------------------------------------------------- slice
def slice_trace(trace: Trace, start_s: float, duration_s: float | None) -> Trace:
    """The part [start_s, start_s + duration_s) (to the end if None), re-based to t=0.

    Counts-based traces are cut on bin edges: the start snaps down and the end up to the
    nearest edge (a note says so), because exact counts cannot be split inside a bin.
    """
    if not (math.isfinite(start_s) and start_s >= 0):
        raise TraceError(trace.name, f"slice start must be >= 0, got {start_s}")
    if start_s >= trace.duration_s:
        raise TraceError(trace.name, f"slice start {start_s:g} s is beyond the end ({trace.duration_s:g} s)")
    if duration_s is not None and not (duration_s > 0):
        raise TraceError(trace.name, f"slice duration must be positive, got {duration_s}")
    end_s = trace.duration_s if duration_s is None else min(start_s + duration_s, trace.duration_s)
    if trace.counts is not None:
        b = trace.bin_s
        i0 = math.floor(start_s / b + _TOL)
        i1 = min(trace.counts.size, math.ceil(end_s / b - _TOL))
        lo, hi = i0 * b, min(i1 * b, trace.duration_s)
        note = f"slice [{lo:g}, {hi:g}) s"
        if abs(lo - start_s) > _TOL or abs(hi - end_s) > _TOL:
            note += f" (requested [{start_s:g}, {end_s:g}) snapped to {b:g} s bins)"
        kw = dict(counts=trace.counts[i0:i1])
    else:
        lo, hi = float(start_s), float(end_s)
        i0, i1 = np.searchsorted(trace.arrivals_s, [lo, hi], side="left")
        if i1 == i0:
            raise TraceError(trace.name, f"no requests in slice [{lo:g}, {hi:g}) s")
        note = f"slice [{lo:g}, {hi:g}) s"
        kw = dict(arrivals_s=trace.arrivals_s[i0:i1] - lo)
    return trace.with_changes(
        duration_s=hi - lo, start=_shift_iso(trace.start, lo),
        masked=_shift_masks(trace.masked, lo), add_note=note, **kw,
    )


# ---------------------------------------------------------------- rescale
def _smoothed_rate(trace: Trace, smooth_s: float) -> tuple[np.ndarray, np.ndarray]:
    """(rate in req/s, width in s) of smooth_s bins covering the trace."""
    edges = bin_edges(n_bins_for(trace.duration_s, smooth_s), smooth_s, trace.duration_s)
    widths = np.diff(edges)
    if trace.counts is not None and trace.bin_s > smooth_s * (1 + _TOL):
        # Coarser than the target (hourly Wikipedia -> 60 s): a step function would put a
        # jump at every hour edge; interpolate between native bin centres instead. Example:
        # 2,000 req/s in hour 0 and 2,600 in hour 1 give 2,300 req/s at t=3600 s, rising
        # 10 req/s per minute, rather than a 600 req/s step.
        native_edges = trace.edges_s()
        native_centres = 0.5 * (native_edges[:-1] + native_edges[1:])
        native_rate = trace.counts / np.diff(native_edges)
        centres = 0.5 * (edges[:-1] + edges[1:])
        return np.interp(centres, native_centres, native_rate), widths
    return trace.counts_in(edges) / widths, widths


def rescale_to_mean(trace: Trace, mean_rps: float, method: str = "smoothed",
                    smooth_s: float = 60.0) -> Trace:
    """Scale the trace so its mean rate is mean_rps.

    "smoothed" (default): average the rate over smooth_s windows, scale it, and return
    expected counts (counts_are_rates=True) at bin_s=smooth_s, so arrivals are re-drawn as
    Poisson at the *target* rate. Why: Twitter's 1 % sample averages 64 req/s, so its
    per-second counts carry Poisson noise of 1/sqrt(64) = 12 %; multiplying by 80 to reach
    5,000 req/s keeps that 12 % where real 5,000 req/s traffic has 1/sqrt(5000) = 1.4 %
    (it inflated the cost of covering per-second peaks from 1.18x to 1.60x the fluid bound).

    "multiply": multiply the native counts (per-request traces are first binned per second)
    by the factor. Exact counts become non-integer expected counts, which expansion handles
    with floor + Bernoulli(frac); sources that are already rates (ServeGen, synthetic rate
    traces) stay rates (Poisson), since their values are expectations, not observations.
    """
    if not (isinstance(mean_rps, (int, float)) and math.isfinite(mean_rps) and mean_rps > 0):
        raise TraceError(trace.name, f"target mean must be a positive rate, got {mean_rps!r}")
    if method not in RESCALE_METHODS:
        raise TraceError(trace.name, f"unknown rescale method {method!r} (use {' or '.join(RESCALE_METHODS)})")
    current = trace.expected_requests()
    if current <= 0:
        raise TraceError(trace.name, "cannot rescale a trace with no requests")
    factor = mean_rps * trace.duration_s / current
    if method == "smoothed":
        if not (math.isfinite(smooth_s) and smooth_s > 0):
            raise TraceError(trace.name, f"smooth_s must be positive, got {smooth_s}")
        rate, widths = _smoothed_rate(trace, smooth_s)
        counts = rate * widths
        counts *= mean_rps * trace.duration_s / counts.sum()  # exact target even after interpolation
        note = (f"rescaled to mean {mean_rps:g} req/s (x{factor:.4g}), method 'smoothed': rate "
                f"averaged over {smooth_s:g} s windows, arrivals re-drawn as Poisson")
        return trace.with_changes(bin_s=float(smooth_s), counts=counts, counts_are_rates=True,
                                  arrivals_s=None, add_note=note)
    if trace.counts is not None:
        counts, bin_s, rates = trace.counts * factor, trace.bin_s, trace.counts_are_rates
    else:
        edges = bin_edges(n_bins_for(trace.duration_s, 1.0), 1.0, trace.duration_s)
        counts, bin_s, rates = trace.counts_in(edges) * factor, 1.0, False
    note = (f"rescaled to mean {mean_rps:g} req/s (x{factor:.4g}), method 'multiply': native "
            f"{bin_s:g} s counts multiplied (keeps the source's relative noise)")
    return trace.with_changes(bin_s=bin_s, counts=counts, counts_are_rates=rates,
                              arrivals_s=None, add_note=note)


# ---------------------------------------------------------------- compress
def time_compress(trace: Trace, factor: float) -> Trace:
    """Play the trace factor times faster: factor 10 plays 10 h in 1 h, rates x10.

    Counts per bin are unchanged; bins, arrivals and masks shrink by the factor.
    """
    if not (isinstance(factor, (int, float)) and math.isfinite(factor) and factor > 0):
        raise TraceError(trace.name, f"compression factor must be positive, got {factor!r}")
    duration_s = trace.duration_s / factor
    kw: dict = {}
    if trace.counts is not None:
        kw["bin_s"] = trace.bin_s / factor
    else:
        # a < d implies a/f <= d/f in floating point; clamp the rare equality case.
        kw["arrivals_s"] = np.minimum(trace.arrivals_s / factor, np.nextafter(duration_s, 0.0))
    masked = tuple((a / factor, b / factor) for a, b in trace.masked)
    return trace.with_changes(duration_s=duration_s, masked=masked,
                              add_note=f"time-compressed x{factor:g} (rates x{factor:g})", **kw)


# ---------------------------------------------------------------- splice
def _as_counts(trace: Trace, bin_s: float) -> np.ndarray:
    edges = bin_edges(n_bins_for(trace.duration_s, bin_s), bin_s, trace.duration_s)
    return trace.counts_in(edges)


def splice(first: Trace, second: Trace) -> Trace:
    """second played right after first; duration = first + second.

    Two per-request traces concatenate exactly. Otherwise both are put on the coarser bin
    (per-request traces count as 1 s bins); first's duration must then be a whole number of
    those bins, so the second trace's bins line up.
    """
    name = f"{first.name}+{second.name}"
    masked = first.masked + _shift_masks(second.masked, -first.duration_s)
    notes = tuple(f"[{first.name}] {n}" for n in first.notes) + \
        tuple(f"[{second.name}] {n}" for n in second.notes) + \
        (f"splice: {first.name} ({first.duration_s:g} s) then {second.name} ({second.duration_s:g} s)",)
    common = dict(name=name, source=f"{first.source} + {second.source}",
                  licence=first.licence if first.licence == second.licence else f"{first.licence}; {second.licence}",
                  start=first.start, duration_s=first.duration_s + second.duration_s, masked=masked)
    if first.counts is None and second.counts is None:
        arrivals = np.concatenate([first.arrivals_s, second.arrivals_s + first.duration_s])
        return Trace(arrivals_s=arrivals, notes=notes, **common)
    bin_s = max(t.bin_s if t.counts is not None else 1.0 for t in (first, second))
    n_first = first.duration_s / bin_s
    if abs(n_first - round(n_first)) > 1e-6:
        raise TraceError(name, f"cannot splice: {first.name} lasts {first.duration_s:g} s, not a "
                               f"whole number of {bin_s:g} s bins (slice it first)")
    counts = np.concatenate([_as_counts(first, bin_s), _as_counts(second, bin_s)])
    rates = first.counts_are_rates or second.counts_are_rates
    if rates and not (first.counts_are_rates and second.counts_are_rates):
        notes += ("exact counts treated as Poisson rates after splicing with a rate trace",)
    return Trace(bin_s=bin_s, counts=counts, counts_are_rates=rates, notes=notes, **common)


# ---------------------------------------------------------------- fill gaps
EDGE_LEVEL_S = 300.0   # gap edges take the centred mean over this much unmasked time (the last 150 s)


def _moving_average(x: np.ndarray, width: int) -> np.ndarray:
    """Centred mean over `width` samples, over fewer at the ends (no zero padding); the window of
    np.convolve(x, ones(width), "same"), from cumulative sums in O(n)."""
    x = np.asarray(x, dtype=float)
    if width <= 1 or x.size == 0:
        return x
    width = min(width, x.size)
    i = np.arange(x.size)
    hi = np.minimum(i + (width - 1) // 2 + 1, x.size)   # exclusive end of each window
    lo = np.maximum(i + (width - 1) // 2 - width + 1, 0)
    sums = np.concatenate(([0.0], np.cumsum(x)))
    return (sums[hi] - sums[lo]) / (hi - lo)


def fill_masked(trace: Trace, period_s: float = 86400.0) -> Trace:
    """Fill masked bins from the same phase one period earlier (or later), else by linear
    interpolation between the nearest unmasked bins; clears ``masked`` and adds a note.

    A bin counts as masked if it overlaps a masked interval. Example: Twitter's daily gap at
    84,661 s is masked on every day, so neither neighbouring day helps and the 1,739 s are
    interpolated between the levels on each side (EDGE_LEVEL_S). Per-request traces are
    first binned per second.
    """
    if not trace.masked:
        return trace
    if not (math.isfinite(period_s) and period_s > 0):
        raise TraceError(trace.name, f"period must be positive, got {period_s}")
    if trace.counts is not None:
        counts, bin_s, rates = np.array(trace.counts), trace.bin_s, trace.counts_are_rates
    else:
        counts, bin_s, rates = _as_counts(trace, 1.0), 1.0, False
    n = counts.size
    edges = bin_edges(n, bin_s, trace.duration_s)
    is_masked = np.zeros(n, dtype=bool)
    for a, b in trace.masked:  # bins overlapping [a, b): left edge < b and right edge > a
        is_masked[np.searchsorted(edges[1:], a, side="right"):np.searchsorted(edges[:-1], b, side="left")] = True
    idx = np.flatnonzero(is_masked)
    filled = counts.copy()
    done = np.zeros(idx.size, dtype=bool)
    p = int(round(period_s / bin_s))
    n_periodic = 0
    if p >= 1:
        for shift in (-p, p):
            src = idx + shift
            ok = ~done & (src >= 0) & (src < n)
            ok[ok] = ~is_masked[src[ok]]
            filled[idx[ok]] = counts[src[ok]]
            done |= ok
            n_periodic += int(ok.sum())
    rest = idx[~done]
    good = np.flatnonzero(~is_masked)
    if rest.size:
        if good.size == 0:
            raise TraceError(trace.name, "cannot fill: every bin is masked")
        # Interpolate between the levels around the gap, not between the single bins at its
        # edges: Twitter's last second before the daily gap is often nearly empty (the capture
        # stops mid-second), which made a 29-minute ramp from ~10 to ~35 req/s where the
        # minutes around it hold ~46 req/s.
        filled[rest] = np.interp(rest, good, _moving_average(counts[good], int(round(EDGE_LEVEL_S / bin_s))))
    if not rates:  # exact counts stay integers where the source was integral
        if np.all(counts == np.floor(counts)):
            filled[rest] = np.round(filled[rest])
    masked_s = trace.masked_s()
    note = (f"filled {masked_s:g} s of masked gaps: {n_periodic} bins from +/-{period_s:g} s, "
            f"{rest.size} bins by linear interpolation")
    return trace.with_changes(bin_s=bin_s, counts=filled, counts_are_rates=rates,
                              arrivals_s=None, masked=(), add_note=note)
