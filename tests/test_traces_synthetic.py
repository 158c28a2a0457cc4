"""Synthetic generators: means, shapes, determinism."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from traces.arrivals import expand_to_arrivals
from traces.errors import TraceError
from traces.synthetic import diurnal, flash_crowd, mmpp2, mmpp_mean_rps, on_off, poisson_trace


def test_poisson_constant_and_function():
    t = poisson_trace(50.0, 3600.0)
    assert t.counts_are_rates and t.mean_rps() == pytest.approx(50.0)
    assert t.name == "synthetic:poisson" and t.source.startswith("synthetic: ")
    f = poisson_trace(lambda x: 10.0 + x / 100.0, 1000.0, bin_s=10.0)
    assert f.mean_rps() == pytest.approx(15.0)  # mean of 10 + t/100 over [0, 1000)
    a = poisson_trace(np.array([1.0, 3.0]), 20.0, bin_s=10.0)
    assert a.counts.tolist() == [10.0, 30.0]
    with pytest.raises(TraceError, match="2 values for 3 bins"):
        poisson_trace(np.array([1.0, 3.0]), 30.0, bin_s=10.0)
    n = expand_to_arrivals(t, seed=0).size
    assert abs(n - 180_000) < 5 * np.sqrt(180_000)


def test_mmpp_mean_and_determinism():
    rates, q = (60.0, 220.0), (1 / 300, 1 / 100)
    assert mmpp_mean_rps(rates, q) == pytest.approx(100.0)
    t = mmpp2(rates, q, 86400.0, seed=1)
    assert t.mean_rps() == pytest.approx(100.0, rel=0.1)
    assert np.array_equal(t.arrivals_s, mmpp2(rates, q, 86400.0, seed=1).arrivals_s)
    # burstier than Poisson: 1-min CV well above Poisson's 1/sqrt(6000) = 1.3 %
    per_min = t.rate_series(60)
    assert per_min.std() / per_min.mean() > 0.3


def test_on_off_mean():
    t = on_off(260.0, 20.0, 120.0, 240.0, 86400.0, seed=2)
    assert t.mean_rps() == pytest.approx(100.0, rel=0.15)
    assert t.name == "synthetic:on-off"


def test_diurnal_shape():
    t = diurnal(100.0, 3.0, 2 * 86400.0, noise_cv=0.0)
    assert t.mean_rps() == pytest.approx(100.0)
    hourly = t.rate_series(3600)
    assert hourly.max() / 100.0 == pytest.approx(3.0, rel=0.05)  # hour-averaged peak
    assert np.argmax(hourly[:24]) in (11, 12)  # peak at mid-period
    noisy = diurnal(100.0, 2.0, 86400.0, noise_cv=0.1, seed=5)
    ratio = noisy.rate_series(60) / diurnal(100.0, 2.0, 86400.0, noise_cv=0.0).rate_series(60)
    assert ratio.std() == pytest.approx(0.1, rel=0.15)
    assert np.array_equal(noisy.counts, diurnal(100.0, 2.0, 86400.0, noise_cv=0.1, seed=5).counts)
    with pytest.raises(TraceError, match="peak_to_mean"):
        diurnal(100.0, 0.5, 86400.0)


def test_flash_crowd_profile():
    t = flash_crowd(100.0, 1000.0, start_s=1000, ramp_s=100, hold_s=200, decay_s=50, duration_s=3000)
    r = t.rate_series(1.0)
    assert r[500] == pytest.approx(100.0)
    assert r[1050] == pytest.approx(100 + 900 * 0.505, rel=0.01)  # mid-ramp (bin centre 1050.5)
    assert r[1150] == pytest.approx(1000.0) and r[1299] == pytest.approx(1000.0)
    assert r[1300 + 50] == pytest.approx(100 + 900 * np.exp(-50.5 / 50), rel=0.01)
    assert r[2999] == pytest.approx(100.0, abs=0.1)
    assert t.peak_rps(1.0) == pytest.approx(1000.0)


@settings(max_examples=25, deadline=None)
@given(r0=st.floats(0, 50), r1=st.floats(0.1, 50), q0=st.floats(0.01, 2), q1=st.floats(0.01, 2),
       duration_s=st.floats(50, 2000), seed=st.integers(0, 10**6))
def test_mmpp_times_sorted_in_range(r0, r1, q0, q1, duration_s, seed):
    try:
        t = mmpp2((r0, r1), (q0, q1), duration_s, seed)
    except TraceError as e:
        assert "no arrivals" in str(e)
        return
    a = t.arrivals_s
    assert np.all(np.diff(a) >= 0) and a[0] >= 0 and a[-1] < duration_s


@settings(max_examples=25, deadline=None)
@given(mean=st.floats(0.1, 1000), ptm=st.floats(1.0, 8.0), cv=st.floats(0, 0.5),
       days=st.floats(0.1, 3), seed=st.integers(0, 1000))
def test_diurnal_mean_invariant(mean, ptm, cv, days, seed):
    t = diurnal(mean, ptm, days * 86400, noise_cv=cv, seed=seed)
    assert np.all(t.counts >= 0)
    if cv == 0:
        assert t.mean_rps() == pytest.approx(mean, rel=1e-9)
