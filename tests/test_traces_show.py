"""summarize() and plot_rate()."""
import json

import pytest

from traces.paths import raw_dir
from traces.registry import load_trace
from traces.show import plot_rate, summarize
from traces.transforms import rescale_to_mean

KEYS = {"name", "source", "licence", "start", "duration_s", "requests", "mean_rps",
        "peak_to_mean_1min", "cv_1min", "p99_1min_rps", "diurnal_ratio", "masked_s", "notes"}


def test_summary_wikipedia_matches_sources_md():
    s = summarize(load_trace("wikipedia"))
    assert KEYS <= set(s)
    assert s["mean_rps"] == pytest.approx(2067, rel=0.001)
    assert s["peak_to_mean_1min"] == pytest.approx(1.42, abs=0.01)  # hourly-resolution source
    assert s["cv_1min"] == pytest.approx(0.18, abs=0.01)
    assert s["diurnal_ratio"] == pytest.approx(1.49, abs=0.01)
    json.dumps(s)  # serialisable for summary.json


def test_summary_azure_code_bursty():
    s = summarize(load_trace("azure-code"))
    assert s["peak_to_mean_1min"] == pytest.approx(4.1, abs=0.15)
    assert s["cv_1min"] == pytest.approx(1.04, abs=0.03)
    assert s["diurnal_ratio"] is None and s["masked_s"] == 0


def test_summary_reports_rescale_method():
    s = summarize(rescale_to_mean(load_trace("azure-conv"), 100.0))
    assert any("smoothed" in n for n in s["notes"])
    assert s["mean_rps"] == pytest.approx(100.0)


@pytest.mark.skipif(not raw_dir().is_dir(), reason="shared raw traces not found")
def test_summary_twitter_masked():
    s = summarize(load_trace("twitter"))
    assert s["masked_s"] == pytest.approx(21 * 1739 + 2)
    assert s["diurnal_ratio"] == pytest.approx(3.9, abs=0.1)
    assert s["peak_to_mean_1min"] == pytest.approx(4.72, abs=0.02)


def test_plot_rate(tmp_path):
    p = plot_rate(load_trace("azure-code"), tmp_path / "sub" / "a.png")
    assert p.exists() and p.stat().st_size > 5000
    p = plot_rate(load_trace("wikipedia"), tmp_path / "w.png", bin_s=3600)
    assert p.read_bytes()[:4] == b"\x89PNG"
