"""Tests for controller.report: render_report on synthetic run directories."""
from __future__ import annotations

import base64
import csv
import json
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from controller.report import ReportError, downsample, reason_kind, render_report
from controller.report_plots import time_axis

KINDS = ["n_g4dn.xlarge_on-demand", "n_g5.xlarge_spot"]

CONFIG = """# synthetic config for tests
[policy]
name = "spillway"
headroom = 0.1

[slo]
latency_ms = 500
attainment = 0.99
"""


def make_summary(**over) -> dict:
    s = {
        "policy": "spillway-test-policy", "trace": "azure-fn-2021",
        "trace_notes": ["rescaled to mean 40 req/s", "first 6 h only"],
        "requests": 1_234_567, "cost_usd": 12.3456, "iaas_usd": 10.0, "faas_usd": 2.3456,
        "slo_ms": 500.0, "slo_attainment_target": 0.99, "slo_attainment": 0.9935,
        "p50_ms": 80.0, "p95_ms": 210.0, "p99_ms": 430.0, "p999_ms": 1900.0,
        "faas_fraction": 0.071, "dropped": 0, "throttled": 3, "cold_starts": 17,
        "instance_hours": 21.5, "launches": 14, "wall_s": 3.2, "duration_s": 21600.0,
        "mean_rps": 40.2, "seed": 7, "start_s": 0.0,
        "latency_by_path": {
            "instance": {"requests": 1_140_000, "p50_ms": 75.0, "p99_ms": 300.0},
            "function_warm": {"requests": 94_000, "p50_ms": 140.0, "p99_ms": 420.0},
            "function_cold": {"requests": 567, "p50_ms": 2100.0, "p99_ms": 4800.0},
        },
        "config_file": "configs/test.toml", "spillway_version": "0.1.0",
        "extra_key_tolerated": {"anything": [1, 2]},
    }
    s.update(over)
    return s


def make_timeseries(n: int, interval_s: float = 60.0, seed: int = 0,
                    n_reasons: int | None = None) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    t = np.arange(n) * interval_s
    offered = 40 + 25 * np.sin(2 * np.pi * t / max(t[-1] + interval_s, 1) * 2) + rng.normal(0, 3, n)
    offered = np.clip(offered, 0, None)
    arrivals = np.round(offered * interval_s).astype(int)
    od = np.full(n, 2)
    spot = (np.clip(offered, 0, None) // 15).astype(int)
    ready = od + spot - 1
    pending = np.where(np.arange(n) % 17 == 0, 1, 0)
    draining = (od + spot) - ready - pending
    capacity = ready * 14.0
    served_inst = np.minimum(arrivals, np.round(capacity * interval_s)).astype(int)
    rest = arrivals - served_inst
    cold = np.minimum(rest, rng.integers(0, 3, n))
    warm = rest - cold
    p50 = rng.uniform(60, 120, n)
    p99 = rng.uniform(200, 900, n)
    empty = np.arange(n) % 37 == 5  # some intervals with no latency stats
    p50[empty] = np.nan
    p99[empty] = np.nan
    if n_reasons is None:
        # numbers change every row; the kind of decision changes with the load level
        reasons = [f"forecast q90={v:.0f} req/s, {'scale out' if v > 45 else 'hold'} 10%, "
                   f"spill <cold>" for v in offered]
    else:
        reasons = [f"reason {_letters(i % n_reasons)}, changed" for i in range(n)]
    df = pd.DataFrame({
        "t_s": t, "interval_s": interval_s, "arrivals": arrivals, "offered_rps": offered,
        "capacity_rps": capacity, "instances_pending": pending, "instances_ready": ready,
        "instances_draining": draining, KINDS[0]: od, KINDS[1]: spot,
        "served_instance": served_inst, "served_function_warm": warm,
        "served_function_cold": cold, "dropped": 0, "throttled": (np.arange(n) % 101 == 3).astype(int),
        "iaas_usd": (od * 0.526 + spot * 0.3) * interval_s / 3600,
        "faas_usd": rest * 2e-5, "p50_ms": p50, "p99_ms": p99,
        "slo_miss": (p99 > 500).astype(int) * 3, "reason": reasons,
    })
    return df


def _letters(i: int) -> str:
    s = ""
    while True:
        s = chr(ord("a") + i % 26) + s
        i = i // 26
        if i == 0:
            return s


def make_hist() -> pd.DataFrame:
    edges = np.geomspace(1, 20000, 41)
    mid = np.sqrt(edges[:-1] * edges[1:])
    inst = np.round(1e5 * np.exp(-((np.log(mid) - np.log(80)) ** 2) / 0.3))
    warm = np.round(1e4 * np.exp(-((np.log(mid) - np.log(150)) ** 2) / 0.4))
    cold = np.round(50 * np.exp(-((np.log(mid) - np.log(2500)) ** 2) / 0.2))
    return pd.DataFrame({"lo_ms": edges[:-1], "hi_ms": edges[1:], "instance": inst.astype(int),
                         "function_warm": warm.astype(int), "function_cold": cold.astype(int)})


def make_run(d: Path, n: int = 360, summary: dict | None = None, ts: pd.DataFrame | None = None,
             **ts_kw) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "summary.json").write_text(json.dumps(summary or make_summary(), indent=2))
    (ts if ts is not None else make_timeseries(n, **ts_kw)).to_csv(
        d / "timeseries.csv", index=False, quoting=csv.QUOTE_MINIMAL)
    make_hist().to_csv(d / "latency_hist.csv", index=False)
    (d / "config.toml").write_text(CONFIG)
    return d


def images(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', html)]


@pytest.fixture
def run(tmp_path) -> Path:
    return make_run(tmp_path / "run")


# ------------------------------------------------------------------------------ rendering


def test_renders_self_contained_report(run):
    out = render_report(run)
    assert out == run / "report.html" and out.is_file()
    html = out.read_text(encoding="utf-8")
    assert "http://" not in html and "https://" not in html
    for attr in re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', html):
        assert attr.startswith("data:"), attr
    assert "<script" not in html and "<link" not in html
    assert "spillway-test-policy" in html and "azure-fn-2021" in html
    assert "$12.35" in html  # total cost
    assert "$10.00" in html and "$2.35" in html  # split
    pngs = images(html)
    assert len(pngs) >= 4
    assert all(p.startswith(b"\x89PNG\r\n\x1a\n") for p in pngs)
    assert "rescaled to mean 40 req/s" in html
    assert "<details>" in html and "headroom = 0.1" in html
    assert not list(run.glob(".report*tmp"))


def test_accepts_str_path_and_rerenders(run):
    p1 = render_report(str(run))
    p2 = render_report(str(run))
    assert p1 == p2 == run / "report.html"


def test_headline_cards_and_slo_colouring(tmp_path):
    html = render_report(make_run(tmp_path / "ok")).read_text()
    card = re.search(r'<div class="card ([a-z]*)"><div class="label">SLO attainment', html)
    assert card and card.group(1) == "good"
    assert "99.350%" in html and "99.000%" in html
    assert "Cost per million requests" in html and "$10.00" in html  # 12.3456 / 1.234567 M
    card = re.search(r'<div class="card ([a-z]*)"><div class="label">Dropped', html)
    assert card and card.group(1) == "warn"  # nothing dropped, 3 throttled
    bad = make_summary(slo_attainment=0.95, p99_ms=900.0, dropped=12)
    html = render_report(make_run(tmp_path / "bad", summary=bad)).read_text()
    for label in ("SLO attainment", "p99 latency", "Dropped"):
        card = re.search(rf'<div class="card ([a-z]*)"><div class="label">{label}', html)
        assert card and card.group(1) == "bad", label
    assert "MISSED" in html


def test_decisions_table_only_changes_and_escaped(run):
    ts = pd.read_csv(run / "timeseries.csv")
    kind = ts["reason"].str.contains("scale out")
    n_changes = int((kind != kind.shift()).sum())
    html = render_report(run).read_text()
    body = html.split("<h2>Controller decisions</h2>")[1]
    assert 2 < body.count("<td class=reason>") == n_changes < len(ts)
    # commas survive CSV quoting, markup is escaped
    assert "scale out 10%, spill &lt;cold&gt;" in body and "<cold>" not in html
    assert "Truncated" not in body


def test_decisions_table_truncated(tmp_path):
    run = make_run(tmp_path / "r", n=600, n_reasons=1000)  # every row is a change
    body = render_report(run).read_text().split("<h2>Controller decisions</h2>")[1]
    assert body.count("<td class=reason>") == 200
    assert "Truncated" in body and "400 more" in body


def test_reason_values_kept_verbatim(tmp_path):
    ts = make_timeseries(5)
    ts["reason"] = ["NA", "NA", "", "None", 'quoted "x", y']
    body = render_report(make_run(tmp_path / "r", ts=ts)).read_text().split(
        "<h2>Controller decisions</h2>")[1]
    rows = re.findall(r"<td class=reason>(.*?)</td>", body)
    assert rows == ["NA", "(no reason)", "None", "quoted &quot;x&quot;, y"]


def test_latency_by_path_table(run):
    html = render_report(run).read_text()
    table = html.split("<h3>Latency by path</h3>")[1].split("</table>")[0]
    for name in ("instance", "function warm", "function cold"):
        assert f"<td>{name}</td>" in table
    assert "1,140,000" in table and "4,800 ms" in table and "&lt;0.1%" in table


def test_nan_summary_latency_and_empty_paths(tmp_path):
    s = make_summary(p999_ms=None, slo_attainment=float("nan"))
    s["latency_by_path"]["function_cold"] = {"requests": 0, "p50_ms": None, "p99_ms": None}
    html = render_report(make_run(tmp_path / "r", summary=s)).read_text()
    assert "—" in html


def test_single_row_and_no_instances(tmp_path):
    ts = make_timeseries(1).drop(columns=KINDS)
    html = render_report(make_run(tmp_path / "r", ts=ts)).read_text()
    assert len(images(html)) >= 4


def test_all_nan_latency_column(tmp_path):
    ts = make_timeseries(50)
    ts["p50_ms"] = np.nan
    ts["p99_ms"] = np.nan
    assert len(images(render_report(make_run(tmp_path / "r", ts=ts)).read_text())) >= 4


def test_large_run_is_downsampled_and_small(tmp_path):
    run = make_run(tmp_path / "big", n=50_000, interval_s=15.0)
    t0 = time.perf_counter()
    out = render_report(run)
    elapsed = time.perf_counter() - t0
    html = out.read_text()
    assert out.stat().st_size < 3 * 1024 * 1024
    assert len(images(html)) >= 4
    assert "aggregate 50,000 intervals into 2,000 bins" in html
    assert elapsed < 30, elapsed


# ---------------------------------------------------------------------------- downsampling


def test_downsample_preserves_totals_and_peaks():
    ts = make_timeseries(10_007, interval_s=10.0)
    ts["elapsed_s"] = ts["t_s"] - ts["t_s"].iloc[0]
    ts["p99_ms"] = ts["p99_ms"].astype(float)
    ts.loc[1234, "p99_ms"] = 99_999.0
    kinds = [(KINDS[0], "g4dn.xlarge", "on-demand"), (KINDS[1], "g5.xlarge", "spot")]
    ds = downsample(ts, kinds, max_points=500)
    assert len(ds) == 500
    for c in ("arrivals", "iaas_usd", "faas_usd", "served_function_warm", "interval_s", "slo_miss"):
        assert ds[c].sum() == pytest.approx(ts[c].sum()), c
    assert ds["p99_ms"].max() == 99_999.0
    assert ds["offered_rps_max"].max() == pytest.approx(ts["offered_rps"].max())
    # time-weighted mean of a gauge keeps the time integral (instance-seconds)
    inst_s = (ts[KINDS[1]] * ts["interval_s"]).sum()
    assert (ds[KINDS[1]] * ds["interval_s"]).sum() == pytest.approx(inst_s)
    assert ds["t_s"].is_monotonic_increasing
    assert downsample(ts.head(100), kinds, max_points=500) is not None
    assert len(downsample(ts.head(100), kinds, max_points=500)) == 100


def test_time_axis_units():
    assert time_axis(3 * 3600).label.endswith("(h)") and time_axis(3 * 3600).hi == 3
    assert time_axis(2 * 3600).label.endswith("(min)")
    assert time_axis(300).label.endswith("(s)")


# ---------------------------------------------------------------------------------- errors


def _one_line_error(run_dir, *fragments):
    with pytest.raises(ReportError) as ei:
        render_report(run_dir)
    msg = str(ei.value)
    assert "\n" not in msg
    for f in fragments:
        assert f in msg, msg
    assert isinstance(ei.value, ValueError)
    return msg


def test_missing_summary(run):
    (run / "summary.json").unlink()
    msg = _one_line_error(run, "summary.json", "not found")
    assert msg.startswith(str(run / "summary.json"))


def test_missing_directory(tmp_path):
    _one_line_error(tmp_path / "nope", "nope", "no such directory")


def test_malformed_summary_json(run):
    (run / "summary.json").write_text('{"policy": "x",\n  oops}')
    _one_line_error(run, "summary.json", "invalid JSON", "line 2")


def test_summary_missing_key(run):
    s = make_summary()
    del s["slo_ms"], s["launches"]
    (run / "summary.json").write_text(json.dumps(s))
    _one_line_error(run, "summary.json", "missing required key", "slo_ms", "launches")


def test_summary_wrong_type(run):
    (run / "summary.json").write_text(json.dumps(make_summary(cost_usd="12")))
    _one_line_error(run, "summary.json", "cost_usd", "must be a number")


def test_timeseries_missing_column(run):
    ts = pd.read_csv(run / "timeseries.csv").drop(columns=["capacity_rps"])
    ts.to_csv(run / "timeseries.csv", index=False)
    _one_line_error(run, "timeseries.csv", "missing column", "capacity_rps")


def test_timeseries_missing_file(run):
    (run / "timeseries.csv").unlink()
    _one_line_error(run, "timeseries.csv", "not found")


def test_timeseries_bad_value(run):
    ts = pd.read_csv(run / "timeseries.csv")
    ts["arrivals"] = ts["arrivals"].astype(object)
    ts.loc[9, "arrivals"] = "lots"
    ts.to_csv(run / "timeseries.csv", index=False)
    _one_line_error(run, "timeseries.csv", "line 11", "arrivals", "'lots'")


def test_timeseries_empty_required_value(run):
    ts = pd.read_csv(run / "timeseries.csv")
    ts.loc[3, "iaas_usd"] = np.nan
    ts.to_csv(run / "timeseries.csv", index=False)
    _one_line_error(run, "timeseries.csv", "line 5", "iaas_usd", "empty value")


def test_timeseries_header_only_and_empty(run):
    (run / "timeseries.csv").write_text(",".join(pd.read_csv(run / "timeseries.csv").columns) + "\n")
    _one_line_error(run, "timeseries.csv", "no data rows")
    (run / "timeseries.csv").write_text("")
    _one_line_error(run, "timeseries.csv", "empty")


def test_timeseries_ragged_row(run):
    with open(run / "timeseries.csv", "a") as f:
        f.write("1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26\n")
    _one_line_error(run, "timeseries.csv", "cannot parse CSV")


def test_timeseries_time_goes_backwards(run):
    ts = pd.read_csv(run / "timeseries.csv")
    ts.loc[20, "t_s"] = 5.0
    ts.to_csv(run / "timeseries.csv", index=False)
    _one_line_error(run, "timeseries.csv", "t_s goes backwards", "line 22")


def test_hist_missing_column_and_file(run):
    make_hist().drop(columns=["function_cold"]).to_csv(run / "latency_hist.csv", index=False)
    _one_line_error(run, "latency_hist.csv", "function_cold")
    (run / "latency_hist.csv").unlink()
    _one_line_error(run, "latency_hist.csv", "not found")


def test_config_missing_or_invalid(run):
    (run / "config.toml").write_text("[policy\nname = 1\n")
    _one_line_error(run, "config.toml", "invalid TOML")
    (run / "config.toml").unlink()
    _one_line_error(run, "config.toml", "not found")


def test_hist_with_zero_and_open_ended_bins(run):
    h = make_hist()
    h.loc[0, "lo_ms"] = 0.0
    h.loc[len(h) - 1, "hi_ms"] = float("inf")
    h.loc[len(h) - 1, "function_cold"] = 5
    h.to_csv(run / "latency_hist.csv", index=False)
    assert len(images(render_report(run).read_text())) >= 4


def test_reason_kind_masks_numbers_only():
    assert reason_kind("reactive: 1160 req/s x 0.7 -> 1; hold 20") == \
        reason_kind("reactive: 99 req/s x 0.75 -> 12; hold 3")
    assert reason_kind("scale out 3 -> 5") != reason_kind("scale in 5 -> 3")
    assert reason_kind("g4dn.xlarge") == "g#dn.xlarge"


def test_capacity_spike_clipped(tmp_path):
    ts = make_timeseries(200)
    ts.loc[0, "capacity_rps"] = 40_000.0
    html = render_report(make_run(tmp_path / "r", ts=ts)).read_text()
    assert len(images(html)) >= 4
