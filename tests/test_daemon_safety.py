"""Daemon safety: leader lease, stale metrics => hold, dry-run, budget guard, SIGTERM.

The daemons here read a real router (a LocalStack with no Triton server and no functions: light)
over HTTP and keep their instances in `FileProvisioner` (tests/fake_provisioner.py), a stand-in
for a cloud API that persists its instances in a JSON file. Jobs are called directly with an
injected clock, so every tick is deterministic; the SIGTERM test runs the real click command in a subprocess.
"""
from __future__ import annotations

import dataclasses
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from controller.config import load_config
from controller.daemon import Daemon, DaemonOptions
from controller.daemon_observe import HttpRouterControl
from controller.state import StateStore
from fake_provisioner import FileProvisioner
from provisioners.base import DRAINING, READY, InstanceRecord, LaunchSpec
from provisioners.local import StackThread
from serving.stack import spec_from_config

ROOT = Path(__file__).resolve().parents[1]
TYPE = "local-triton"
CONFIG = f"""
[slo]
latency_ms = 250.0
[controller]
policy = "reactive"
interval_s = 1.0
metrics_window_s = 4.0
stale_after_s = 6.0
[policies.reactive]
scale_out_cooldown_s = 0.0
scale_in_cooldown_s = 0.0
[fleet]
instance_types = ["{TYPE}"]
min_instances = 1
max_instances_per_type = 3
[functions]
enabled = false
[scenario]
model = "resnet8-local"
catalog = "local"
[serve]
instances = 0
port = 0
instance_type = "{TYPE}"
auth_token_env = ""
"""


class Clock:
    def __init__(self, now_s: float = 1_800_000_000.0):
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "daemon.toml"
    path.write_text(CONFIG)
    return load_config(path)


@pytest.fixture(scope="module")
def router_url(cfg):
    stack = StackThread(spec_from_config(cfg)).start()
    try:
        yield stack.stack.url
    finally:
        stack.stop()


def make_daemon(cfg, store, clock, tmp_path, router_url, holder, fleet_file="fleet.json", **options):
    return Daemon(cfg, FileProvisioner(tmp_path / fleet_file, clock), None, HttpRouterControl(router_url),
                  store, clock, holder, DaemonOptions(metrics_port=0, **options))


def run_ticks(daemons, clock, seconds: float, step_s: float = 1.0):
    for _ in range(int(seconds / step_s)):
        clock.now_s += step_s
        for d in daemons:
            d.observe_once()
            d.decide_once()
            d.reconcile_once()


def test_only_the_lease_holder_decides_and_records(cfg, tmp_path, router_url):
    clock = Clock()
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    a = make_daemon(cfg, store, clock, tmp_path, router_url, "a")
    b = make_daemon(cfg, store, clock, tmp_path, router_url, "b", fleet_file="fleet-b.json")
    run_ticks([a, b], clock, 6)
    history = store.history(0)
    assert len(history["decisions"]) == 6                      # a's ticks only
    assert store.current_lease("spillway-controller").holder == "a"
    assert b.lease is None and not (tmp_path / "fleet-b.json").exists()   # b never acted
    assert len(store.instances()) == 1                         # a's fleet (min 1) only
    observed = len(history["observations"])
    port = a.metrics.serve(0)                                   # what start() serves
    scraped = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert "spillway_leader 1.0" in scraped
    assert 'spillway_fleet_instances{instance_type="local-triton",market="on-demand",state="ready"} 1.0' in scraped
    assert b.metrics.registry.get_sample_value("spillway_leader") == 0
    a.stop()                                                   # releases the lease
    run_ticks([b], clock, 2)
    assert store.current_lease("spillway-controller").holder == "b"
    assert len(store.history(0)["observations"]) > observed    # b records now that it leads
    b.stop()
    store.close()


def test_stale_metrics_hold_the_fleet_never_scale_to_zero(cfg, tmp_path, router_url):
    clock = Clock()
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    provisioner = FileProvisioner(tmp_path / "fleet.json", clock)
    provisioner.launch(LaunchSpec(TYPE, "on-demand", 3, "before"))
    # A router nobody answers at: no observation ever, so nothing is fresh.
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{dead.getsockname()[1]}"
    dead.close()
    d = make_daemon(cfg, store, clock, tmp_path, url, "a")
    run_ticks([d], clock, 10)
    decisions = store.history(0)["decisions"]
    assert len(decisions) == 10
    assert all(r.startswith("hold: no load observed yet") for r in decisions["reason"])
    assert len([r for r in provisioner.describe() if r.state == READY]) == 3
    d.stop()
    # Fresh metrics first (0 req/s: scale in to min_instances 1), then the router goes away.
    stack = StackThread(spec_from_config(cfg)).start()
    d = make_daemon(cfg, store, clock, tmp_path, stack.stack.url, "a")
    try:
        run_ticks([d], clock, 4)
        assert len([r for r in provisioner.describe() if r.state == READY]) == 1
    finally:
        stack.stop()
    run_ticks([d], clock, 12)
    reasons = list(store.history(0)["decisions"]["reason"])
    assert reasons[-1].startswith("hold: metrics are stale")
    assert len([r for r in provisioner.describe() if r.state == READY]) == 1
    d.stop()
    store.close()


def test_dry_run_decides_and_records_but_launches_nothing(cfg, tmp_path, router_url):
    clock = Clock()
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    d = make_daemon(cfg, store, clock, tmp_path, router_url, "a", dry_run=True)
    run_ticks([d], clock, 5)
    decisions = store.history(0)["decisions"]
    assert len(decisions) == 5
    assert all(r.endswith("[dry-run: not applied]") for r in decisions["reason"])
    assert any(dict(t).get((TYPE, "on-demand")) == 1 for t in decisions["targets"])  # it wanted one
    assert not (tmp_path / "fleet.json").exists()
    d.stop()
    store.close()


def test_budget_guard_refuses_a_launch_over_the_hourly_budget(cfg, tmp_path, router_url):
    # 0.085 $/h per instance, budget 0.1 $/h: the policy may target one instance, but one is
    # still draining (billed), so launching another would reach 0.17 $/h.
    tight = dataclasses.replace(cfg, budget=dataclasses.replace(cfg.budget, max_usd_per_h=0.1))
    clock = Clock()
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    provisioner = FileProvisioner(tmp_path / "fleet.json", clock)
    provisioner.add([InstanceRecord("i-old", TYPE, "on-demand", DRAINING, clock(), clock(), None, "before")])
    d = make_daemon(tight, store, clock, tmp_path, router_url, "a")
    run_ticks([d], clock, 5)
    assert [r.id for r in provisioner.describe()] == ["i-old"]
    assert d.instances.refused == 1
    provisioner.terminate(["i-old"])                           # the drain ends: now it fits
    run_ticks([d], clock, 1)
    assert len([r for r in provisioner.describe() if r.state == READY]) == 1
    d.stop()
    store.close()


def test_sigterm_stops_the_daemon_cleanly_and_releases_the_lease(tmp_path):
    db = tmp_path / "state.db"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        metrics_port = s.getsockname()[1]
    config = tmp_path / "daemon.toml"
    config.write_text(CONFIG.replace("metrics_window_s = 4.0", "metrics_window_s = 60.0")
                      .replace("stale_after_s = 6.0", "stale_after_s = 60.0")
                      + f'[provisioner]\nbackend = "local"\n[state]\ndatabase_url = "sqlite:///{db}"\n'
                      + f"[metrics]\nport = {metrics_port}\n")
    code = f"from controller.cli_daemon import daemon; daemon(['--config', {str(config)!r}])"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        events = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "decision" not in events:
            line = proc.stderr.readline()
            if not line:
                break
            events.append(json.loads(line)["event"])
        assert "decision" in events, events
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=60)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, rest
    assert "daemon_stopped" in [json.loads(line)["event"] for line in rest.splitlines()]
    with StateStore(f"sqlite:///{db}") as store:
        assert store.current_lease("spillway-controller") is None
        assert store.last_decision().status == "applied"


@pytest.mark.parametrize("backend, message", [("aws", "cannot drive AWS yet"), ("sim", "simulator's backend")])
def test_backends_the_daemon_cannot_use_are_one_line_errors(tmp_path, backend, message):
    from click.testing import CliRunner

    from controller.cli_daemon import daemon
    config = tmp_path / "c.toml"
    config.write_text(f'[provisioner]\nbackend = "{backend}"\n')
    result = CliRunner().invoke(daemon, ["--config", str(config)])
    assert result.exit_code == 2 and message in result.output and len(result.output.splitlines()) == 1
    config.write_text("[controller]\ninterval_s = -1\n")
    result = CliRunner().invoke(daemon, ["--config", str(config)])
    assert result.exit_code == 2 and "interval_s" in result.output and len(result.output.splitlines()) == 1
