import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from provisioners.distributions import Distribution, DistributionError

CASES = [
    {"kind": "fixed", "value": 42.0},
    {"kind": "uniform", "low": 30, "high": 90},
    {"kind": "normal", "mean": 120, "sd": 30},
    {"kind": "normal", "mean": 1.0, "sd": 2.0},                    # heavy truncation at 0
    {"kind": "normal", "mean": 100, "sd": 50, "low": 60, "high": 150},
    {"kind": "lognormal", "median": 150, "p90": 210},
    {"kind": "lognormal", "median": 150, "p90": 210, "low": 75, "high": 180},
    {"kind": "lognormal", "median": 6, "p90": 11, "low": 2, "high": 30},
    {"kind": "empirical", "samples": [1.0, 2.0, 2.0, 10.0]},
    {"kind": "empirical", "samples": [1.0, 2.0, 2.0, 10.0], "high": 5},
]


@pytest.mark.parametrize("spec", CASES, ids=lambda d: str(d))
def test_sample_mean_matches_mean(spec):
    d = Distribution.from_dict(spec, "test")
    x = d.sample(np.random.default_rng(1), 200_000)
    assert isinstance(x, np.ndarray) and x.shape == (200_000,)
    assert (x >= 0).all()
    m = d.mean()
    se = x.std() / math.sqrt(x.size)
    assert abs(x.mean() - m) <= max(5 * se, 1e-9), (x.mean(), m)


@pytest.mark.parametrize("spec", CASES, ids=lambda d: str(d))
def test_quantile_matches_samples(spec):
    d = Distribution.from_dict(spec, "test")
    x = d.sample(np.random.default_rng(2), 100_000)
    for q in (0.1, 0.5, 0.9):
        emp = np.quantile(x, q)
        assert d.quantile(q) == pytest.approx(emp, rel=0.03, abs=0.05)


def test_single_sample_is_float():
    d = Distribution(kind="lognormal", median=150, p90=210)
    v = d.sample(np.random.default_rng(0))
    assert isinstance(v, float) and v > 0


def test_lognormal_parameterised_by_median_and_p90():
    d = Distribution.from_dict({"kind": "lognormal", "median": 150, "p90": 210}, "x")
    assert d.sigma == pytest.approx(math.log(210 / 150) / 1.2816, rel=1e-4)
    assert d.quantile(0.5) == pytest.approx(150)
    assert d.quantile(0.9) == pytest.approx(210, rel=1e-6)
    assert d.mean() == pytest.approx(150 * math.exp(d.sigma ** 2 / 2))


def test_bare_number_is_fixed_and_round_trip():
    assert Distribution.from_dict(7, "x") == Distribution(kind="fixed", value=7.0)
    for spec in CASES:
        d = Distribution.from_dict(spec, "x")
        assert Distribution.from_dict(d.to_dict(), "x") == d
        assert d.kind in d.describe()


@pytest.mark.parametrize("spec, needle", [
    ({"kind": "gamma", "shape": 2}, "unknown kind 'gamma'"),
    ({"median": 5, "p90": 9}, "missing 'kind'"),
    ({"kind": "lognormal", "median": 150}, "needs p90"),
    ({"kind": "lognormal", "median": 150, "p90": 100}, "p90 (100) must be >= median"),
    ({"kind": "lognormal", "median": -1, "p90": 3}, "median must be >= 0"),
    ({"kind": "fixed", "value": -3}, "value must be >= 0"),
    ({"kind": "uniform", "low": 10, "high": 5}, "high (5) must be >= low (10)"),
    ({"kind": "normal", "mean": 5, "sd": -1}, "sd must be >= 0"),
    ({"kind": "fixed", "value": "ten"}, "value must be a number"),
    ({"kind": "lognormal", "median": 5, "p90": 9, "meadian": 4}, "unknown key(s) meadian"),
    ({"kind": "empirical", "samples": []}, "samples must be a non-empty list"),
    ({"kind": "empirical", "samples": [1, -2]}, "samples must be finite and >= 0"),
    ("lognormal", "expected a table"),
])
def test_bad_specs_name_where_in_one_line(spec, needle):
    with pytest.raises(DistributionError) as ei:
        Distribution.from_dict(spec, "cat.toml: instance_types.x.launch_to_ready_s")
    msg = str(ei.value)
    assert msg.startswith("cat.toml: instance_types.x.launch_to_ready_s: ")
    assert needle in msg and "\n" not in msg


def test_direct_construction_is_validated():
    with pytest.raises(DistributionError):
        Distribution(kind="lognormal", median=0, p90=1)
    with pytest.raises(DistributionError):
        Distribution(kind="weibull")
    with pytest.raises(DistributionError):
        Distribution(kind="fixed", value=1).quantile(1.5)


nonneg = st.floats(min_value=0, max_value=1e4, allow_nan=False, allow_infinity=False)
pos = st.floats(min_value=1e-3, max_value=1e4, allow_nan=False, allow_infinity=False)


@st.composite
def distributions(draw):
    kind = draw(st.sampled_from(["fixed", "uniform", "normal", "lognormal", "empirical"]))
    if kind == "fixed":
        return Distribution(kind=kind, value=draw(nonneg))
    if kind == "uniform":
        a, b = sorted((draw(nonneg), draw(nonneg)))
        return Distribution(kind=kind, low=a, high=b)
    clip = draw(st.booleans())
    lo, hi = (sorted((draw(nonneg), draw(nonneg))) if clip else (0.0, 0.0))
    if clip and hi == 0:
        lo = 0.0
    if kind == "normal":
        return Distribution(kind=kind, mean_=draw(nonneg), sd=draw(nonneg), low=lo, high=hi)
    if kind == "lognormal":
        med = draw(pos)
        return Distribution(kind=kind, median=med, p90=med * draw(st.floats(1.0, 20.0)), low=lo, high=hi)
    return Distribution(kind=kind, samples=tuple(draw(st.lists(nonneg, min_size=1, max_size=20))),
                        low=lo, high=hi)


@settings(max_examples=150, deadline=None)
@given(distributions(), st.integers(0, 2**32 - 1))
def test_samples_never_negative(d, seed):
    x = d.sample(np.random.default_rng(seed), 500)
    assert np.isfinite(x).all() and (x >= 0).all()
    assert d.sample(np.random.default_rng(seed)) >= 0


@settings(max_examples=150, deadline=None)
@given(distributions(), st.lists(st.floats(0, 1), min_size=2, max_size=10))
def test_quantile_monotone_and_nonnegative(d, qs):
    qs = sorted(qs)
    vals = [d.quantile(q) for q in qs]
    assert all(v >= 0 for v in vals)
    assert all(b >= a or b >= a - 1e-9 * max(1.0, abs(a)) for a, b in zip(vals, vals[1:]))


@settings(max_examples=100, deadline=None)
@given(distributions())
def test_mean_within_quantile_range(d):
    m = d.mean()
    assert m >= 0 and math.isfinite(m)
    assert d.quantile(0.0) - 1e-6 * max(1, m) <= m <= d.quantile(1.0) + 1e-6 * max(1, m)
