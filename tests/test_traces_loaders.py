"""Loaders for every named trace, the registry and the parse cache."""
import time

import numpy as np
import pytest

from traces import sources
from traces.errors import TraceError
from traces.paths import raw_dir
from traces.registry import list_traces, load_trace

needs_shared = pytest.mark.skipif(
    not raw_dir().is_dir(), reason=f"shared raw traces not found at {raw_dir()} (set SPILLWAY_SHARED_DIR)")


@pytest.fixture(scope="module")
def twitter():
    return load_trace("twitter")


@pytest.fixture(scope="module")
def nasa():
    return load_trace("nasa")


def test_bundled_wikipedia():
    t = load_trace("wikipedia")
    assert t.bin_s == 3600 and t.counts.size == 744 and not t.counts_are_rates
    assert t.start.startswith("2016-01-01T00:00:00")
    assert t.expected_requests() == pytest.approx(5.54e9, rel=0.01)
    assert t.mean_rps() == pytest.approx(2067, rel=0.001)
    d = load_trace("default")
    assert np.array_equal(d.counts, t.counts) and any("default" in n for n in d.notes)


@pytest.mark.parametrize("name, n, mean", [("azure-code", 8819, 2.57), ("azure-conv", 19366, 5.53)])
def test_bundled_azure(name, n, mean):
    t = load_trace(name)
    assert t.arrivals_s.size == n and t.arrivals_s[0] == 0.0
    assert np.all(np.diff(t.arrivals_s) >= 0)
    assert t.mean_rps() == pytest.approx(mean, rel=0.01)
    assert t.start.startswith("2023-11-16T18:1")
    assert "CC-BY" in t.licence and "Splitwise" in t.source
    # ms precision: every offset is a whole number of milliseconds
    assert np.allclose(np.round(t.arrivals_s * 1000), t.arrivals_s * 1000)


@needs_shared
def test_bundled_azure_matches_raw():
    import pandas as pd
    raw = pd.to_datetime(pd.read_csv(raw_dir() / "azure_llm_2023/AzureLLMInferenceTrace_code.csv").TIMESTAMP)
    off = (raw - raw.iloc[0]).dt.total_seconds().to_numpy()
    assert np.max(np.abs(load_trace("azure-code").arrivals_s - off)) <= 0.0005 + 1e-9


@needs_shared
def test_twitter(twitter):
    assert twitter.bin_s == 1.0 and twitter.counts.size == 1_899_061
    assert twitter.mean_rps() == pytest.approx(63.6, rel=0.01)
    assert len(twitter.masked) == 21
    for k, (a, b) in enumerate(twitter.masked):
        # the run is found from the data: twice a genuine zero second precedes it
        expected = 84_661 + k * 86_400
        assert expected - 1 <= a <= expected and b == expected + 1_739
    assert twitter.counts[84_660] > 0 and twitter.counts[84_661:86_400].sum() == 0


@needs_shared
def test_nasa(nasa):
    assert nasa.counts.size == 5_059_950 and nasa.expected_requests() == 3_461_610
    assert (2_435_065.0, 2_435_065.0 + 135_851) in nasa.masked
    assert all(b - a >= 600 for a, b in nasa.masked)
    assert any("splice" in n and "2381545" in n for n in nasa.notes)
    assert nasa.start == "1995-07-01T00:00:01-04:00"


@needs_shared
def test_mooncake():
    t = load_trace("mooncake")
    assert t.arrivals_s.size == 12_031 and t.duration_s == 3537
    assert t.mean_rps() == pytest.approx(3.40, rel=0.01)


@needs_shared
@pytest.mark.parametrize("model, days, mean", [
    ("m-large", 14, 195.8), ("m-mid", 14, 1790), ("m-small", 14, 1174),
    ("deepseek-r1", 1, 16.0), ("mm-image", 1, 9.5)])
def test_servegen(model, days, mean):
    t = load_trace(f"servegen-{model}")
    assert t.bin_s == 600 and t.counts_are_rates and t.duration_s == days * 86400
    assert t.mean_rps() == pytest.approx(mean, rel=0.01)
    for a, b in t.masked:
        assert t.counts[int(a // 600):int(b // 600)].sum() == 0
    if model == "m-mid":
        assert t.masked[0][0] == 313_200 and sum(b - a for a, b in t.masked) == 84 * 600


def test_missing_shared_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("SPILLWAY_SHARED_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(TraceError) as e:
        load_trace("twitter")
    msg = str(e.value)
    assert msg.startswith("twitter: raw file not found at ") and "SPILLWAY_SHARED_DIR" in msg
    assert "\n" not in msg
    # bundled traces still work without the shared dir
    assert load_trace("wikipedia").counts.size == 744
    avail = {i.name: i.available for i in list_traces()}
    assert avail["twitter"] is False and avail["azure-code"] is True


@needs_shared
def test_parse_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("SPILLWAY_CACHE_DIR", str(tmp_path))
    path = raw_dir() / "nasa_http_1995" / "workload.tbz2"
    t0 = time.perf_counter()
    a = sources.read_workload_tbz2(path)
    t1 = time.perf_counter()
    b = sources.read_workload_tbz2(path)
    t2 = time.perf_counter()
    assert len(list(tmp_path.glob("*.npy"))) == 1
    assert np.array_equal(a, b)
    assert (t2 - t1) < (t1 - t0)


def test_list_traces_names():
    names = [i.name for i in list_traces()]
    for n in ["default", "wikipedia", "azure-code", "azure-conv", "twitter", "nasa", "mooncake",
              "servegen-m-large", "servegen-m-mid", "servegen-m-small", "servegen-deepseek-r1",
              "servegen-mm-image", "synthetic:diurnal", "synthetic:flash-crowd", "synthetic:mmpp",
              "synthetic:on-off", "synthetic:poisson"]:
        assert n in names


@pytest.mark.parametrize("name", ["synthetic:poisson", "synthetic:diurnal", "synthetic:flash-crowd",
                                  "synthetic:mmpp", "synthetic:on-off"])
def test_synthetic_by_name(name):
    t = load_trace(name)
    assert t.name == name and t.duration_s == 86400
    assert 90 < t.mean_rps() < 140


def test_zero_runs():
    c = np.array([0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 0])
    assert sources.zero_runs(c, 3) == [(3, 6), (7, 11)]
    assert sources.zero_runs(c, 1) == [(0, 2), (3, 6), (7, 11)]
