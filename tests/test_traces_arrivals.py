"""Chunked, seeded expansion of traces into arrival times."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from traces.arrivals import effective_chunk_s, expand_to_arrivals, iter_arrivals
from traces.errors import TraceError
from traces.model import Trace
from traces.registry import load_trace
from traces.synthetic import poisson_trace
from traces.transforms import rescale_to_mean, slice_trace


@pytest.fixture(scope="module")
def wiki_200():
    """6 h of Wikipedia rescaled (smoothed) to 200 req/s."""
    return rescale_to_mean(slice_trace(load_trace("wikipedia"), 0, 6 * 3600), 200.0)


def test_chunks_concatenate_to_expand(wiki_200):
    chunks = list(iter_arrivals(wiki_200, seed=7))
    assert len(chunks) == 360      # 6 h in the default 1-minute chunks
    full = expand_to_arrivals(wiki_200, seed=7)
    assert np.array_equal(np.concatenate(chunks), full)
    n = full.size
    assert abs(n - 200 * 21600) < 5 * np.sqrt(200 * 21600)  # Poisson total: sd = 2,078
    assert np.all(np.diff(full) >= 0) and full[0] >= 0 and full[-1] < 21600


def test_determinism_per_seed(wiki_200):
    a = expand_to_arrivals(wiki_200, seed=3)
    b = expand_to_arrivals(wiki_200, seed=3)
    c = expand_to_arrivals(wiki_200, seed=4)
    assert np.array_equal(a, b)
    assert a.size != c.size or not np.array_equal(a, c)


def test_chunk_independence(wiki_200):
    full = list(iter_arrivals(wiki_200, seed=11, chunk_s=3600))
    # starting mid-way (even mid-chunk) reproduces the same arrivals from there on
    late = list(iter_arrivals(wiki_200, seed=11, chunk_s=3600, start_s=3 * 3600 + 1800, end_s=5 * 3600))
    assert len(late) == 2
    assert np.array_equal(late[0], full[3][full[3] >= 3 * 3600 + 1800])
    assert np.array_equal(late[1], full[4])
    # a different chunk size changes the windows, but each window stays reproducible alone
    h = list(iter_arrivals(wiki_200, seed=11, chunk_s=1800))
    assert len(h) == 12 and np.array_equal(h[5], list(iter_arrivals(wiki_200, 11, 1800, 2.5 * 3600, 3 * 3600))[0])


def test_chunk_rounded_to_bins():
    t = poisson_trace(10.0, 100.0, bin_s=7.0)
    assert effective_chunk_s(t, 30.0) == 35.0
    chunks = list(iter_arrivals(t, seed=0, chunk_s=30.0))
    assert len(chunks) == 3  # 100 s / 35 s
    for k, c in enumerate(chunks):
        assert c.size == 0 or (c[0] >= k * 35 and c[-1] < (k + 1) * 35)


def test_exact_counts_reproduced():
    t = Trace(name="x", source="s", licence="l", start="", duration_s=5.5, bin_s=1.0,
              counts=[3, 0, 2, 1, 0, 4])
    a = expand_to_arrivals(t, seed=0)
    assert np.bincount(a.astype(int), minlength=6).tolist() == [3, 0, 2, 1, 0, 4]
    assert a[-1] < 5.5  # partial last bin is [5, 5.5)


def test_per_request_passthrough():
    t = load_trace("azure-code")
    assert np.array_equal(expand_to_arrivals(t, seed=0), t.arrivals_s)
    parts = list(iter_arrivals(t, seed=0, chunk_s=600))
    assert sum(p.size for p in parts) == t.arrivals_s.size


def test_bad_window():
    t = poisson_trace(1.0, 10.0)
    with pytest.raises(TraceError, match="bad arrival window"):
        list(iter_arrivals(t, 0, start_s=20))
    with pytest.raises(TraceError, match="chunk_s"):
        list(iter_arrivals(t, 0, chunk_s=0))


@settings(max_examples=40, deadline=None)
@given(
    counts=st.lists(st.floats(0, 30, allow_nan=False), min_size=1, max_size=40),
    bin_s=st.sampled_from([0.1, 1.0, 7.0, 60.0]),
    partial=st.floats(0.05, 1.0),
    rates=st.booleans(),
    chunk_s=st.floats(0.5, 500.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_expansion_sorted_in_range(counts, bin_s, partial, rates, chunk_s, seed):
    duration_s = (len(counts) - 1 + partial) * bin_s
    t = Trace(name="h", source="s", licence="l", start="", duration_s=duration_s, bin_s=bin_s,
              counts=counts, counts_are_rates=rates)
    chunks = list(iter_arrivals(t, seed, chunk_s=chunk_s))
    a = np.concatenate(chunks)
    assert np.all(np.diff(a) >= 0)
    assert a.size == 0 or (a[0] >= 0 and a[-1] < t.duration_s)
    eff = effective_chunk_s(t, chunk_s)
    for k, c in enumerate(chunks):
        assert c.size == 0 or (c[0] >= k * eff - 1e-9 and c[-1] < (k + 1) * eff + 1e-9)
    if not rates:  # exact (possibly fractional) counts: within floor..ceil of the total
        assert np.floor(t.counts).sum() <= a.size <= np.ceil(t.counts).sum()
