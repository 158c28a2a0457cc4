"""Whole runs through the CLI: every summary field present and consistent, for every policy."""
from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from controller.cli import main
from controller.config import load_config
from controller.policies import policy_names
from controller.run import prepare_trace
from traces.arrivals import expand_to_arrivals
from traces.registry import list_traces

REQUIRED = ("policy", "trace", "requests", "cost_usd", "iaas_usd", "faas_usd", "slo_ms", "slo_attainment",
            "p50_ms", "p95_ms", "p99_ms", "p999_ms", "faas_fraction", "dropped", "instance_hours",
            "launches", "wall_s")
POLICIES = ("static-peak", "reactive", "faas-only")        # the issue-2 acceptance runs
ALL_POLICIES = tuple(p for p in policy_names() if not p.startswith("bench-"))
NO_SPILL = ("static-peak", "reactive")
TWITTER_AVAILABLE = any(t.name == "twitter" and t.available for t in list_traces())


def check_run(out, trace_name, start="0", duration=None, mean_rps=None):
    s = json.loads((out / "summary.json").read_text())
    for key in REQUIRED:
        assert key in s, key
    cfg = load_config()
    trace = prepare_trace(trace_name, cfg, start_s=float(start), duration_s=duration, mean_rps=mean_rps)
    assert s["requests"] == len(expand_to_arrivals(trace, cfg.simulation.seed))
    assert s["cost_usd"] == pytest.approx(s["iaas_usd"] + s["faas_usd"], rel=1e-12)
    assert s["p50_ms"] <= s["p95_ms"] <= s["p99_ms"] <= s["p999_ms"]
    assert 0.0 <= s["slo_attainment"] <= 1.0 and 0.0 <= s["faas_fraction"] <= 1.0
    ts = pd.read_csv(out / "timeseries.csv")
    served = ts.served_instance + ts.served_function_warm + ts.served_function_cold + ts.dropped
    assert int(served.sum()) == s["requests"] == int(ts.arrivals.sum())   # conservation
    assert ts.iaas_usd.sum() == pytest.approx(s["iaas_usd"], rel=1e-9)
    assert ts.faas_usd.sum() == pytest.approx(s["faas_usd"], rel=1e-9)
    by_path = sum(p["requests"] for p in s["latency_by_path"].values())
    assert by_path == s["requests"] - s["dropped"]
    return s


@pytest.mark.parametrize("policy", ALL_POLICIES)
def test_each_policy_on_a_bundled_trace(tmp_path, policy, capsys):
    out = tmp_path / policy
    rc = main(["simulate", "--trace", "default", "--duration", "3h", "--mean-rps", "150",
               "--policy", policy, "--out", str(out), "--no-report", "-q"])
    assert rc == 0
    s = check_run(out, "default", duration=3 * 3600, mean_rps=150)
    assert s["policy"] == policy
    if policy == "faas-only":
        assert s["faas_fraction"] == 1.0 and s["iaas_usd"] == 0.0
    else:
        assert s["launches"] >= 1
    if policy in NO_SPILL:
        assert s["faas_fraction"] == 0.0
    assert "summary.json" in capsys.readouterr().out


@pytest.mark.skipif(not TWITTER_AVAILABLE, reason="../shared/traces (twitter) not present")
@pytest.mark.parametrize("policy", POLICIES)
def test_issue_acceptance_twitter_6h_200rps(tmp_path, policy):
    out = tmp_path / policy
    rc = main(["simulate", "--trace", "twitter", "--duration", "6h", "--mean-rps", "200",
               "--policy", policy, "--out", str(out), "--no-report", "-q"])
    assert rc == 0
    s = check_run(out, "twitter", duration=6 * 3600, mean_rps=200)
    assert math.isclose(s["requests"] / (6 * 3600), 200, rel_tol=0.02)


def test_report_is_written_and_regenerated(tmp_path):
    out = tmp_path / "run"
    assert main(["simulate", "--trace", "default", "--duration", "2h", "--mean-rps", "100",
                 "--out", str(out), "-q"]) == 0
    html = (out / "report.html").read_text()
    assert "hybrid" in html          # the default policy
    (out / "report.html").unlink()
    assert main(["report", str(out)]) == 0
    assert (out / "report.html").is_file()
