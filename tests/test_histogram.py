"""The streaming latency histogram: percentiles within 0.5% of exact, and the kernel's bin rule."""
from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from simulator.histogram import N_BINS, bin_index, bin_of, percentile_ms


@njit
def _kernel_bins(latencies_ms):
    out = np.empty(latencies_ms.shape[0], np.int64)
    for j in range(latencies_ms.shape[0]):
        out[j] = bin_index(latencies_ms[j] / 1000.0)
    return out


def test_kernel_bins_follow_the_documented_rule():
    xs = np.exp(np.random.default_rng(0).uniform(np.log(1e-4), np.log(1e9), 50_000))
    assert np.array_equal(_kernel_bins(xs), [bin_of(x) for x in xs])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_percentiles_within_half_a_percent(seed):
    rng = np.random.default_rng(seed)
    latencies = np.concatenate([rng.lognormal(np.log(8.0), 0.3, 200_000), rng.lognormal(np.log(2000), 1.0, 2_000)])
    counts = np.bincount(_kernel_bins(latencies), minlength=N_BINS)
    for q in (0.5, 0.9, 0.95, 0.99, 0.999):
        exact = np.quantile(latencies, q, method="inverted_cdf")
        assert percentile_ms(counts, q) == pytest.approx(exact, rel=0.005)
