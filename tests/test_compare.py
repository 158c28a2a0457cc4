"""`spillway compare`: planning the windows, running policies in worker processes, the outputs."""
from __future__ import annotations

import csv
import json
import math

import pytest

from controller.cli import main
from controller.compare import (COLUMNS, comparable_policies, plan_comparison, resolve_window,
                                split_start_s)
from predictor.series import DEFAULT_SPLITS, MULTI_DAY_TRACES

DAY = 86400.0
POLICIES = ("static-peak", "reactive", "faas-only")


def one_error_line(capsys, *args):
    rc = main(["compare", *args])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("spillway: error:"), err
    return lines[0]


@pytest.fixture(scope="module")
def small_compare(tmp_path_factory):
    """The brief's small case, run once for the module: 2 h of the bundled trace, 3 policies."""
    out = tmp_path_factory.mktemp("compare")
    rc = main(["compare", "--traces", "default", "--duration", "2h", "--mean-rps", "2000",
               "--policies", ",".join(POLICIES), "--jobs", "2", "--out", str(out), "-q"])
    return rc, out


def test_small_case_rows(small_compare):
    rc, out = small_compare
    assert rc == 0
    with open(out / "comparison.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == COLUMNS
    assert [r["policy"] for r in rows] == list(POLICIES)
    doc = json.loads((out / "comparison.json").read_text())
    assert [r["policy"] for r in doc["rows"]] == list(POLICIES)
    assert doc["mean_rps"] == 2000 and doc["windows"][0]["duration_s"] == 2 * 3600
    requests = {r["requests"] for r in doc["rows"]}
    assert len(requests) == 1                     # every policy replays the same arrivals
    n = requests.pop()
    assert n == pytest.approx(2000 * 7200, rel=0.01)
    bound = doc["bounds"]["default"]
    assert bound["status"] == "ok" and bound["usd"] > 0
    for r in doc["rows"]:
        assert set(r) == set(COLUMNS)
        assert r["status"] == "ok" and r["error"] is None and r["trace"] == "default"
        assert r["start_s"] == 0.0 and r["duration_s"] == 7200.0
        assert r["cost_usd"] == pytest.approx(r["iaas_usd"] + r["faas_usd"], rel=1e-9)
        assert r["oracle_bound_usd"] == bound["usd"]
        assert r["cost_vs_bound"] == pytest.approx(r["cost_usd"] / bound["usd"])
        assert r["slo_met"] == (r["slo_attainment"] >= r["slo_attainment_target"])
        if r["slo_met"]:
            assert r["cost_vs_bound"] >= 1.0      # the bound is a lower bound for SLO-meeting policies
        for key in ("p50_ms", "p99_ms", "faas_fraction", "launches", "instance_hours", "dropped", "wall_s"):
            assert isinstance(r[key], (int, float)) and math.isfinite(r[key]), key
        summary = json.loads((out / "default" / r["policy"] / "summary.json").read_text())
        assert summary["cost_usd"] == pytest.approx(r["cost_usd"], rel=1e-12)
    by = {r["policy"]: r for r in doc["rows"]}
    assert by["faas-only"]["faas_fraction"] > 0.99 and by["faas-only"]["iaas_usd"] == 0
    assert by["reactive"]["faas_fraction"] == 0 and by["reactive"]["launches"] >= 1
    csv_cost = {r["policy"]: float(r["cost_usd"]) for r in rows}
    assert csv_cost == {p: pytest.approx(by[p]["cost_usd"], rel=1e-12) for p in POLICIES}


def test_small_case_report(small_compare):
    rc, out = small_compare
    page = (out / "report.html").read_text()
    for policy in POLICIES:
        assert policy in page
        assert f'href="default/{policy}/report.html"' in page
        assert (out / "default" / policy / "report.html").is_file()
    assert page.count("data:image/png;base64,") == 2      # cost bars + load vs capacity
    assert "2,000 req/s" in page and "cheapest meeting the SLO" in page
    assert "http://" not in page and "https://" not in page  # self-contained


def test_failed_run_gives_a_row_and_exit_1(tmp_path, capsys):
    cfg = tmp_path / "nofn.toml"
    cfg.write_text("[functions]\nenabled = false\n")
    out = tmp_path / "out"
    rc = main(["compare", "--traces", "default", "--duration", "30m", "--mean-rps", "500",
               "--policies", "reactive,faas-only", "--config", str(cfg), "--jobs", "2",
               "--out", str(out), "-q", "--no-run-reports"])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err and "1 of 2 runs failed" in err
    rows = {r["policy"]: r for r in json.loads((out / "comparison.json").read_text())["rows"]}
    assert rows["reactive"]["status"] == "ok" and rows["reactive"]["cost_usd"] > 0
    assert rows["faas-only"]["status"] == "failed"
    assert "functions.enabled = false" in rows["faas-only"]["error"]
    assert rows["faas-only"]["cost_usd"] is None
    page = (out / "report.html").read_text()
    assert "functions.enabled = false" in page
    assert not (out / "default" / "reactive" / "report.html").exists()   # --no-run-reports


@pytest.mark.parametrize("args, fragment", [
    (["--traces", "twiter"], "twitter"),                  # lists the known names
    (["--traces", "default", "--policies", "magic"], "reactive"),
    (["--traces", "default", "--duration", "6 hours"], "--duration"),
    (["--traces", "default", "--duration", "0"], "--duration"),
    (["--traces", "default", "--mean-rps", "-3"], "--mean-rps"),
    (["--traces", "default", "--mean-rps", "0"], "--mean-rps"),
    (["--traces", "default", "--mean-rps", "lots"], "--mean-rps"),
    (["--traces", "default", "--jobs", "0"], "--jobs"),
    (["--traces", "default", "--start", "40d"], "--start"),
])
def test_user_errors_are_one_line(capsys, tmp_path, args, fragment):
    line = one_error_line(capsys, *args, "--out", str(tmp_path / "o"), "-q")
    assert fragment in line
    assert not (tmp_path / "o").exists()


def test_windows_start_at_the_end_of_the_train_split():
    # wikipedia: 31 days, the first 21 train.
    w = resolve_window("wikipedia", 31 * DAY, None, 2 * DAY)
    assert (w.start_s, w.duration_s) == (21 * DAY, 2 * DAY) and "test part" in w.how
    w = resolve_window("wikipedia", 31 * DAY, None, 20 * DAY)
    assert w.duration_s == 10 * DAY and "capped" in w.how
    assert resolve_window("wikipedia", 31 * DAY, None, None).duration_s == 10 * DAY   # --duration full
    # nasa's split is a time, not days.
    nasa = resolve_window("nasa", 5_059_950.0, None, 2 * DAY)
    assert nasa.start_s == DEFAULT_SPLITS["nasa"].train_until_s
    # not a multi-day trace: from 0; --start overrides.
    assert resolve_window("azure-code", 3420.0, None, 2 * DAY).start_s == 0.0
    assert resolve_window("azure-code", 3420.0, None, 2 * DAY).duration_s == 3420.0
    assert resolve_window("wikipedia", 31 * DAY, 3 * DAY, DAY).start_s == 3 * DAY
    assert split_start_s("default") is None        # an alias, but not one of the reference traces


def test_plan_all_traces_and_policies(tmp_path):
    plan = plan_comparison("all", "all", out=tmp_path)
    names = [w.trace for w in plan.windows]
    assert names and set(names) <= set(MULTI_DAY_TRACES) and "wikipedia" in names
    for w in plan.windows:
        assert w.start_s == split_start_s(w.trace)[0]
        assert 0 < w.duration_s <= 2 * DAY
    assert plan.policies == comparable_policies()
    assert set(POLICIES) <= set(plan.policies)
    tasks = plan.tasks()
    assert sum(t.kind == "bound" for t in tasks) == len(names)
    assert sum(t.kind == "run" for t in tasks) == len(names) * len(plan.policies)


def test_bench_policies_are_not_compared():
    from controller.policies import base

    base.register("bench-test-only")(type("BenchOnly", (base.BasePolicy,), {}))
    try:
        assert "bench-test-only" in base.policy_names()
        assert "bench-test-only" not in comparable_policies()
    finally:
        base._REGISTRY.pop("bench-test-only")
