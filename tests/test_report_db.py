"""`spillway report --db URL --since DUR`: the report from a daemon's recorded history.

A small synthetic history (10 minutes of decisions, observations, forecasts, costs and two
instances) is recorded into a SQLite store through StateStore; the real CLI renders it. Bad
input -- an unreachable database, a missing SQLite file, nothing recorded in range -- is one
line and exit status 2.
"""
from __future__ import annotations

import html
import json
import socket
import time

import numpy as np
import pytest

from controller.cli import main
from controller.forecast import Forecast
from controller.state import StateStore
from controller.types import Decision, Observation
from provisioners.base import READY, TERMINATED, InstanceRecord

KEY = ("local-triton", "on-demand")
REASONS = ("reactive: 20 req/s / (112 req/s per local-triton x 0.7 target) -> 1; steady at 1",
           "reactive: 150 req/s / (112 req/s per local-triton x 0.7 target) -> 2; scale out 1 -> 2",
           "reactive: 30 req/s / (112 req/s per local-triton x 0.7 target) -> 1; scale in 2 -> 1")


@pytest.fixture
def recorded(tmp_path):
    """A SQLite store with 10 minutes of history ending a minute ago; returns its URL."""
    url = f"sqlite:///{tmp_path / 'state.db'}"
    t0 = time.time() - 660.0
    with StateStore(url) as store:
        for k in range(60):                         # a decision every 10 s
            t = t0 + 10.0 * k
            phase = 0 if k < 20 else (1 if k < 40 else 2)
            rps = (20.0, 150.0, 30.0)[phase]
            store.record_observation(Observation(t, 60.0, rps, 80.0 + phase, 0.1 * (phase == 1)), 0.999)
            n = 2 if phase == 1 else 1
            store.record_decision(Decision(((KEY, n),), REASONS[phase]), f"d{k}", t, "reactive")
            store.mark_decision(f"d{k}", "applied", t + 0.1)
            store.record_forecast(Forecast(t, 60.0, (0.5, 0.9), np.array([[rps, rps * 1.2]]), "seasonal"), t)
            store.record_cost(t, 10.0, 0.085 * n * 10.0 / 3600.0, 0.0)
        store.upsert_instances([InstanceRecord("i-0", *KEY, READY, t0, t0 + 7.0, None, "d0"),
                                InstanceRecord("i-1", *KEY, TERMINATED, t0 + 200.0, t0 + 207.0, t0 + 400.0, "d20")],
                               "local", time.time())
    return url


def test_report_from_recorded_history(recorded, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["report", "--db", recorded, "--since", "24h", "--out", str(out)]) == 0
    page = (out / "report.html").read_text()
    for reason in REASONS:
        assert html.escape(reason) in page
    assert "Observed vs forecast load" in page and page.count("data:image/png;base64,") == 5
    summary = json.loads((out / "summary.json").read_text())
    assert summary["decisions"] == 60 and summary["decision_statuses"] == {"applied": 60}
    assert any("estimated" in note for note in summary["notes"])
    # 200 s at 20 req/s + 200 s at 150 + 200 s at 30 (the last decision holds for one 10 s
    # interval): 40,000 requests
    assert summary["requests_estimated"] == pytest.approx(4000 + 30000 + 6000)
    assert summary["cost_usd"] == pytest.approx(0.085 * 80 * 10 / 3600)
    assert summary["instances_launched"] == 2
    print(capsys.readouterr().out.strip())
    # With the daemon's config: its SLO, and capacity from its catalog
    config = tmp_path / "daemon.toml"
    config.write_text('[slo]\nlatency_ms = 300.0\n[fleet]\ninstance_types = ["local-triton"]\n'
                      '[functions]\nenabled = false\n[scenario]\nmodel = "resnet8-local"\ncatalog = "local"\n')
    assert main(["report", "--db", recorded, "--out", str(out), "--config", str(config)]) == 0
    assert json.loads((out / "summary.json").read_text())["slo_ms"] == 300.0


def test_simulation_run_directory_reports_still_work(tmp_path):
    assert main(["report", str(tmp_path / "missing-run")]) == 2   # the RUN_DIR form, unchanged


def _one_line_exit_2(argv, capsys, expected: str):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err, err


def test_bad_databases_and_empty_ranges_are_one_line_errors(recorded, tmp_path, capsys):
    with socket.socket() as s:               # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _one_line_exit_2(["report", "--db", f"postgresql+psycopg://postgres@127.0.0.1:{port}/none",
                      "--out", str(tmp_path / "a")], capsys, "state database")
    _one_line_exit_2(["report", "--db", f"sqlite:///{tmp_path / 'nothing.db'}", "--out", str(tmp_path / "b")],
                     capsys, "no such database file")
    assert not (tmp_path / "nothing.db").exists()
    _one_line_exit_2(["report", "--db", recorded, "--since", "30s", "--out", str(tmp_path / "c")],
                     capsys, "no decisions recorded since")
    # a malformed option is click's usage error, as for every command: exit 2, naming it
    assert main(["report", "--db", recorded, "--since", "yesterday"]) == 2
    assert "Invalid value for --since" in capsys.readouterr().err
