"""The daemon end to end on the local stack: real Triton servers, the router, local functions,
the reactive-faas policy, and an open-loop load generator in its own process.

Load: Poisson arrivals, low (well under one instance), then a ramp above what one instance
serves within the SLO, then low again. reactive-faas scales on OBSERVED load, so the fleet grows
as the ramp begins (not before it: that needs a forecast, which needs a day of history) and
shrinks after it; the overflow meanwhile spills to functions or queues, and no request fails.
"""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from controller.config import load_config
from controller.daemon import Daemon, DaemonOptions
from controller.daemon_observe import HttpRouterControl
from controller.state import StateStore
from provisioners.base import PENDING, READY
from provisioners.local import LocalFunctionProvisioner, LocalInstanceProvisioner, StackThread
from serving.replay import replay_from_own_process, request_body
from serving.stack import spec_from_config

TYPE = "local-triton"
CONFIG = f"""
[slo]
latency_ms = 250.0
[controller]
policy = "reactive-faas"
interval_s = 2.0
metrics_window_s = 4.0
stale_after_s = 10.0
[policies.reactive]
target_utilization = 0.3       # scale out at 30% of an instance: keeps this 2-core host unsaturated
scale_out_cooldown_s = 0.0
scale_in_cooldown_s = 6.0
[fleet]
instance_types = ["{TYPE}"]
min_instances = 1
max_instances_per_type = 2
[functions]
memory_mb = 2048
max_concurrency = 2
keep_alive_s = 30.0
[scenario]
model = "resnet8-local"
catalog = "local"
[provisioner]
backend = "local"
[serve]
instances = 1
port = 0
instance_type = "{TYPE}"
auth_token_env = ""
"""


def piecewise_poisson(segments, seed: int = 0) -> np.ndarray:
    """Arrival times (s) for [(duration_s, rate_rps), ...] played one after another."""
    rng = np.random.default_rng(seed)
    out, t0 = [], 0.0
    for duration_s, rate in segments:
        n = rng.poisson(rate * duration_s)
        out.append(t0 + np.sort(rng.uniform(0.0, duration_s, n)))
        t0 += duration_s
    return np.concatenate(out)


@pytest.fixture
def running(tmp_path):
    path = tmp_path / "daemon.toml"
    path.write_text(CONFIG)
    cfg = load_config(path)
    spec = spec_from_config(cfg)
    stack = StackThread(spec).start()
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    instances = LocalInstanceProvisioner(stack.stack, stack.loop, time.time, instance_type=TYPE)
    daemon = Daemon(cfg, instances, LocalFunctionProvisioner(stack.stack, stack.loop),
                    HttpRouterControl(stack.stack.url), store, time.time, "e2e",
                    DaemonOptions(metrics_port=0)).start()
    try:
        yield cfg, spec, stack, instances, daemon, store
    finally:
        daemon.stop()
        instances.close()
        stack.stop()
        store.close()


def live(instances) -> int:
    return sum(r.state in (PENDING, READY) for r in instances.describe())


def test_fleet_grows_with_the_ramp_and_shrinks_after_it(running):
    cfg, spec, stack, instances, daemon, store = running
    one_instance_rps = spec.instance_profile.throughput_rps(spec.instance_profile.max_batch)
    per_instance_target = daemon.scenario.cheapest().capacity_rps * cfg.policies.reactive.target_utilization
    low, high = 6.0, 1.4 * per_instance_target        # high needs 2 instances, low needs 1
    print(f"one instance: {one_instance_rps:.0f} req/s at max batch, reactive target "
          f"{per_instance_target:.0f} req/s; load {low:.0f} -> {high:.0f} -> {low:.0f} req/s")
    arrivals = piecewise_poisson([(10.0, low), (20.0, high), (20.0, low)])
    seen: list[tuple[float, int]] = []
    stop = threading.Event()

    def watch():
        t0 = time.monotonic()
        while not stop.wait(0.5):
            seen.append((time.monotonic() - t0, live(instances)))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        result = stack.call(replay_from_own_process(stack.stack.infer_url(), arrivals, request_body()),
                            timeout_s=180.0)
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline and live(instances) > 1:
            time.sleep(0.5)
    finally:
        stop.set()
        watcher.join()
    summary = result.summary()
    print("load:", summary)
    print("fleet (s, live):", seen[::4])
    assert summary["errors"] == 0 and summary["requests"] == len(arrivals)
    grew_at = next(t for t, n in seen if n >= 2)
    assert grew_at >= 10.0 - 1.0                          # not before the ramp: no forecast here
    assert live(instances) == 1                           # shrunk back after it
    assert sum(r.state == READY for r in instances.describe()) == 1
    daemon.reconcile_once()
    history = store.history(0)
    reasons = list(history["decisions"]["reason"])
    assert any("scale out 1 -> 2" in r for r in reasons) and any("scale in 2 -> 1" in r for r in reasons)
    assert set(history["decisions"]["status"]) == {"applied"}
    assert len(history["observations"]) > 20
    assert history["observations"]["arrival_rps"].max() > per_instance_target
    launched = history["instances"]
    assert len(launched) >= 2 and (launched["state"] == "terminated").sum() >= 1
    assert set(launched["decision_id"]) - {"adopted"} <= set(history["decisions"]["id"])
