"""The canonical in-memory trace: counts per fixed bin, or per-request arrival times.

Conventions
-----------
* Times are seconds since t=0 (the trace's first instant), float64.
* Counts-based traces: ``counts[i]`` covers ``[i*bin_s, min((i+1)*bin_s, duration_s))``.
  The number of bins is ``ceil(duration_s / bin_s)``, so only the *last* bin may be partial
  (e.g. 10.5 s of 1 s bins = 11 bins, the last covering 0.5 s); its count refers to that
  partial width. ``counts_are_rates=True`` means the values are *expected* counts (Poisson
  means), not observations.
* Per-request traces: ``arrivals_s`` sorted, every value in ``[0, duration_s)``.
* ``masked`` holds ``[start_s, end_s)`` intervals that are known data gaps (capture artifacts,
  outages); they are kept in the data as zeros and only flagged, so rates are not silently
  altered. ``transforms.fill_masked`` fills them when a user wants that.

Within a bin, requests are assumed spread uniformly. That one assumption gives
``rate_series`` for any bin width (finer, coarser or unaligned) from the cumulative count
curve, and matches how ``arrivals.iter_arrivals`` places requests.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from traces.errors import TraceError

_REL_TOL = 1e-9


def n_bins_for(duration_s: float, bin_s: float) -> int:
    """Bins needed to cover duration_s; a tolerance absorbs float noise (3600/60 -> 60, not 61)."""
    return max(1, math.ceil(duration_s / bin_s - _REL_TOL * max(1.0, duration_s / bin_s)))


def bin_edges(n_bins: int, bin_s: float, duration_s: float) -> np.ndarray:
    """Edges of n_bins bins of width bin_s, the last one clipped to duration_s."""
    edges = np.arange(n_bins + 1, dtype=np.float64) * bin_s
    edges[-1] = duration_s
    return np.minimum(edges, duration_s)


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


def normalize_intervals(intervals, duration_s: float) -> tuple[tuple[float, float], ...]:
    """Clip to [0, duration_s], drop empty ones, sort and merge overlapping/adjacent ones."""
    clipped = sorted(
        (max(0.0, float(a)), min(float(duration_s), float(b)))
        for a, b in intervals
    )
    merged: list[list[float]] = []
    for a, b in clipped:
        if not b > a:
            continue
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return tuple((a, b) for a, b in merged)


@dataclass(frozen=True)
class Trace:
    name: str
    source: str  # citation (repo/paper), for the report
    licence: str
    start: str  # ISO-8601 wall time of t=0 if known, else ""
    duration_s: float
    bin_s: float | None = None  # set for counts-based traces
    counts: np.ndarray | None = field(default=None, repr=False)
    counts_are_rates: bool = False  # True: expansion draws Poisson(counts[i]) per bin
    arrivals_s: np.ndarray | None = field(default=None, repr=False)
    masked: tuple[tuple[float, float], ...] = ()
    notes: tuple[str, ...] = ()

    # ------------------------------------------------------------------ validation
    def __post_init__(self) -> None:
        where = self.name or "trace"
        if not self.name:
            raise TraceError("trace", "empty name")
        try:
            duration_s = float(self.duration_s)
        except (TypeError, ValueError):
            raise TraceError(where, f"duration_s is not a number ({self.duration_s!r})") from None
        if not math.isfinite(duration_s) or duration_s <= 0:
            raise TraceError(where, f"duration_s must be positive and finite, got {self.duration_s}")
        object.__setattr__(self, "duration_s", duration_s)
        if (self.counts is None) == (self.arrivals_s is None):
            raise TraceError(where, "exactly one of counts / arrivals_s must be set")
        if self.counts is not None:
            self._validate_counts(where, duration_s)
        else:
            self._validate_arrivals(where, duration_s)
        object.__setattr__(self, "masked", normalize_intervals(self.masked, duration_s))
        object.__setattr__(self, "notes", tuple(str(n) for n in self.notes))

    def _validate_counts(self, where: str, duration_s: float) -> None:
        if self.bin_s is None:
            raise TraceError(where, "counts given without bin_s")
        bin_s = float(self.bin_s)
        if not math.isfinite(bin_s) or bin_s <= 0:
            raise TraceError(where, f"bin_s must be positive and finite, got {self.bin_s}")
        try:
            counts = np.array(self.counts, dtype=np.float64)  # copy: we freeze it below
        except (TypeError, ValueError):
            raise TraceError(where, "counts are not numeric") from None
        if counts.ndim != 1:
            raise TraceError(where, f"counts must be 1-D, got shape {counts.shape}")
        if counts.size == 0:
            raise TraceError(where, "empty (no counts)")
        if np.isnan(counts).any():
            raise TraceError(where, f"NaN in counts (first at bin {int(np.argmax(np.isnan(counts)))})")
        if not np.isfinite(counts).all():
            raise TraceError(where, "infinite value in counts")
        if (counts < 0).any():
            raise TraceError(where, f"negative count at bin {int(np.argmax(counts < 0))}")
        expected_bins = n_bins_for(duration_s, bin_s)
        if counts.size != expected_bins:
            raise TraceError(
                where,
                f"{counts.size} bins of {bin_s:g} s do not match duration {duration_s:g} s "
                f"(expected {expected_bins})",
            )
        object.__setattr__(self, "bin_s", bin_s)
        object.__setattr__(self, "counts", _readonly(counts))
        object.__setattr__(self, "counts_are_rates", bool(self.counts_are_rates))

    def _validate_arrivals(self, where: str, duration_s: float) -> None:
        try:
            arr = np.array(self.arrivals_s, dtype=np.float64)
        except (TypeError, ValueError):
            raise TraceError(where, "arrival times are not numeric") from None
        if arr.ndim != 1:
            raise TraceError(where, f"arrivals_s must be 1-D, got shape {arr.shape}")
        if arr.size == 0:
            raise TraceError(where, "empty (no requests)")
        if np.isnan(arr).any():
            raise TraceError(where, f"NaN arrival time (request {int(np.argmax(np.isnan(arr)))})")
        if (arr < 0).any():
            raise TraceError(where, f"negative arrival time (request {int(np.argmax(arr < 0))})")
        if arr.size > 1 and (np.diff(arr) < 0).any():
            raise TraceError(
                where, f"arrival times not sorted (request {int(np.argmax(np.diff(arr) < 0)) + 1})"
            )
        if arr[-1] >= duration_s:
            raise TraceError(where, f"arrival at {arr[-1]:g} s is not before duration {duration_s:g} s")
        object.__setattr__(self, "bin_s", None)
        object.__setattr__(self, "counts_are_rates", False)
        object.__setattr__(self, "arrivals_s", _readonly(arr))

    # ------------------------------------------------------------------ queries
    @property
    def is_counts(self) -> bool:
        return self.counts is not None

    def edges_s(self) -> np.ndarray:
        """Bin edges of a counts-based trace (last bin possibly partial)."""
        if self.counts is None:
            raise TraceError(self.name, "per-request trace has no bins")
        return bin_edges(self.counts.size, self.bin_s, self.duration_s)

    def expected_requests(self) -> float:
        if self.counts is not None:
            return float(self.counts.sum())
        return float(self.arrivals_s.size)

    def mean_rps(self) -> float:
        return self.expected_requests() / self.duration_s

    def cumulative_at(self, t_s: np.ndarray) -> np.ndarray:
        """Expected number of requests in [0, t) for each t (uniform spread within a bin)."""
        t_s = np.clip(np.asarray(t_s, dtype=np.float64), 0.0, self.duration_s)
        if self.counts is not None:
            cum = np.concatenate(([0.0], np.cumsum(self.counts)))
            return np.interp(t_s, self.edges_s(), cum)
        # searchsorted 'left' counts arrivals strictly before t, matching [start, end) bins.
        return np.searchsorted(self.arrivals_s, t_s, side="left").astype(np.float64)

    def counts_in(self, edges_s: np.ndarray) -> np.ndarray:
        """Expected requests between consecutive edges."""
        return np.diff(self.cumulative_at(edges_s))

    def rate_series(self, bin_s: float) -> np.ndarray:
        """Requests per second in consecutive bins of width bin_s.

        The last bin may be partial (duration not a multiple of bin_s); its rate is divided
        by its own width, so a 16 s tail holding 32 requests reads 2 req/s, not 0.53.
        """
        bin_s = float(bin_s)
        if not math.isfinite(bin_s) or bin_s <= 0:
            raise TraceError(self.name, f"rate bin must be positive, got {bin_s}")
        edges = bin_edges(n_bins_for(self.duration_s, bin_s), bin_s, self.duration_s)
        return self.counts_in(edges) / np.diff(edges)

    def peak_rps(self, window_s: float = 60.0) -> float:
        """Max of rate_series(window_s), ignoring a partial last window when full ones exist
        (a 2 s tail with 3 requests would otherwise read as a 1.5 req/s 'peak' artefact)."""
        rates = self.rate_series(window_s)
        n_full = int(self.duration_s // window_s + _REL_TOL)
        if 0 < n_full < rates.size:
            rates = rates[:n_full]
        return float(rates.max())

    def masked_s(self) -> float:
        return float(sum(b - a for a, b in self.masked))

    def with_changes(self, **kw) -> "Trace":
        """dataclasses.replace that also appends notes: with_changes(add_note="...")."""
        note = kw.pop("add_note", None)
        if note:
            kw["notes"] = tuple(kw.get("notes", self.notes)) + (note,)
        return replace(self, **kw)
