"""Trace dataclass: validation and rate queries."""
import numpy as np
import pytest

from traces.errors import TraceError
from traces.model import Trace


def mk_counts(counts, bin_s=1.0, duration_s=None, **kw):
    counts = np.asarray(counts, dtype=float)
    return Trace(name="t", source="s", licence="l", start="",
                 duration_s=duration_s if duration_s is not None else counts.size * bin_s,
                 bin_s=bin_s, counts=counts, **kw)


def mk_arrivals(ts, duration_s):
    return Trace(name="t", source="s", licence="l", start="", duration_s=duration_s, arrivals_s=ts)


@pytest.mark.parametrize("kw, problem", [
    (dict(counts=[1.0, np.nan]), "NaN"),
    (dict(counts=[1.0, -1.0]), "negative"),
    (dict(counts=[]), "empty"),
])
def test_bad_counts(kw, problem):
    with pytest.raises(TraceError, match=problem):
        mk_counts(kw["counts"], duration_s=max(1, len(kw["counts"])))


@pytest.mark.parametrize("ts, problem", [
    ([0.0, 2.0, 1.0], "not sorted"),
    ([0.0, np.nan], "NaN"),
    ([-1.0, 0.5], "negative"),
    ([], "empty"),
    ([0.0, 5.0], "not before duration"),
])
def test_bad_arrivals(ts, problem):
    with pytest.raises(TraceError, match=problem) as e:
        mk_arrivals(ts, 5.0)
    assert str(e.value).startswith("t: ") and "\n" not in str(e.value)


def test_exactly_one_kind():
    with pytest.raises(TraceError, match="exactly one"):
        Trace(name="t", source="s", licence="l", start="", duration_s=2.0, bin_s=1.0,
              counts=[1, 2], arrivals_s=[0.5])
    with pytest.raises(TraceError, match="exactly one"):
        Trace(name="t", source="s", licence="l", start="", duration_s=2.0)


def test_bin_count_must_match_duration():
    with pytest.raises(TraceError, match="do not match"):
        mk_counts([1, 2, 3], duration_s=5.0)
    # partial last bin is fine: 2.5 s of 1 s bins = 3 bins
    t = mk_counts([2, 2, 1], duration_s=2.5)
    assert t.rate_series(1.0).tolist() == [2.0, 2.0, 2.0]


def test_arrays_are_frozen_copies():
    src = np.array([1.0, 2.0])
    t = mk_counts(src)
    src[0] = 99
    assert t.counts[0] == 1.0
    with pytest.raises(ValueError):
        t.counts[0] = 5


def test_rates_and_peak():
    t = mk_counts([60] * 60 + [120] * 60)  # 2 minutes, 60 then 120 req/s
    assert t.expected_requests() == 60 * 60 + 120 * 60
    assert t.mean_rps() == pytest.approx(90.0)
    assert t.rate_series(60).tolist() == [60.0, 120.0]
    assert t.peak_rps(60) == 120.0
    # finer than native: uniform within a bin
    assert np.allclose(mk_counts([10], bin_s=10).rate_series(2.5), 1.0)


def test_rate_series_arrivals_and_masks_normalised():
    t = Trace(name="t", source="s", licence="l", start="", duration_s=4.0,
              arrivals_s=[0.1, 0.2, 1.5, 3.9], masked=((3, 5), (0.5, 1), (0.8, 2)))
    assert t.rate_series(1.0).tolist() == [2, 1, 0, 1]
    assert t.masked == ((0.5, 2.0), (3.0, 4.0))
    assert t.masked_s() == 2.5
