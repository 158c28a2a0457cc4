"""Simulator fidelity: spot interruptions, draining, conservation and determinism."""
from __future__ import annotations

import dataclasses
import json
from types import MappingProxyType

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from controller.cli import main
from controller.config import FleetConfig, FunctionsConfig, RouterConfig, SimulationConfig
from provisioners.catalog import load_catalog
from tests.scenarios import function_profile, functions_config, instance_profile, make_config, run, scenario, \
    with_static_fleet
from traces.synthetic import poisson_trace


def spot_setup(tmp_path, replay=None, rate_per_h=None, n=2):
    catalog = load_catalog()
    if rate_per_h is not None:
        g4 = dataclasses.replace(catalog.instance("g4dn.xlarge"), spot_interruptions_per_h=rate_per_h)
        types = dict(catalog.instance_types, **{"g4dn.xlarge": g4})
        catalog = dataclasses.replace(catalog, instance_types=MappingProxyType(types))
    mode = "hazard"
    if replay is not None:
        mode = str(tmp_path / "interruptions.csv")
        (tmp_path / "interruptions.csv").write_text("time_s,instance_type\n" + "".join(
            f"{t},g4dn.xlarge\n" for t in replay))
    cfg = make_config(functions=FunctionsConfig(enabled=False),
                      fleet=FleetConfig(instance_types=("g4dn.xlarge",), markets=("spot",)),
                      simulation=dataclasses.replace(SimulationConfig(), spot_interruptions=mode))
    scen = scenario(cfg, instance_profile([10.0]), market="spot", catalog=catalog)
    return with_static_fleet(cfg, n, scen), scen, catalog.instance("g4dn.xlarge").spot_usd_per_h


def test_replayed_spot_interruption_is_replaced_and_not_billed(tmp_path):
    cfg, scen, price = spot_setup(tmp_path, replay=[100.0])
    res = run(cfg, scen, poisson_trace(50.0, 600.0), policy="static-peak", record=False)
    s = res.summary
    assert s["spot_interruptions"] == 1 and s["dropped"] == 0 and s["evicted"] == 0
    # The notice comes at 100 s, the controller sees the instance draining at its 110 s tick and
    # launches a replacement; EC2 reclaims the old one at 220 s, inside its first hour, which AWS
    # does not charge. Bills: 600 s + 0 s + (600 - 110) s at the spot price.
    assert s["launches"] == 3
    reclaimed = [i for i in res.instances if i.reclaimed]
    assert len(reclaimed) == 1 and reclaimed[0].ended_at_s == pytest.approx(220.0)
    assert reclaimed[0].bill_usd() == 0.0
    assert s["iaas_usd"] == pytest.approx((600 + 490) * price / 3600)
    assert s["cost_breakdown"]["instances_spot_usd"] == pytest.approx(s["iaas_usd"])
    assert res.series.spot_reclaimed.sum() == 1


def test_frequent_interruptions_conserve_requests(tmp_path):
    # 20 interruptions per instance-hour: the fleet churns, yet no request is lost or counted twice.
    cfg, scen, _ = spot_setup(tmp_path, rate_per_h=20.0, n=3)
    res = run(cfg, scen, poisson_trace(150.0, 3600.0), policy="static-peak", record=True, seed=5)
    s = res.summary
    assert s["spot_interruptions"] >= 10
    served = sum(p["requests"] for p in s["latency_by_path"].values())
    assert served + s["dropped"] == s["requests"]
    assert np.isfinite(res.latencies_s).sum() == served


def test_scale_in_drains_without_dropping():
    # reactive scales 4 -> 1 as the load falls; draining instances finish their queues.
    cfg = make_config(functions=FunctionsConfig(enabled=False))
    scen = scenario(cfg, instance_profile([10.0, 12.0, 14.0, 16.0], max_delay_ms=2.0))
    rate = np.r_[np.full(600, 500.0), np.full(1200, 20.0)]   # 225 req/s per instance at the SLO
    res = run(cfg, scen, poisson_trace(rate, 1800.0), policy="reactive", record=True)
    s = res.summary
    assert s["dropped"] == 0 and np.isfinite(res.latencies_s).all()
    sizes = list(res.series.instances_ready)
    assert max(sizes[:60]) >= 3 and sizes[-1] == 1


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n_instances=st.integers(1, 3), latencies=st.lists(st.floats(1.0, 80.0), min_size=1, max_size=6),
       delay_ms=st.sampled_from([0.0, 2.0, 10.0]), outstanding=st.integers(1, 3),
       policy=st.sampled_from(["static-peak", "faas-only"]), max_conc=st.integers(1, 8),
       on_throttle=st.sampled_from(["retry", "drop"]), arrivals=st.lists(st.floats(0.0, 29.9), min_size=1, max_size=300),
       seed=st.integers(0, 10))
def test_every_request_is_served_or_dropped_exactly_once(n_instances, latencies, delay_ms, outstanding, policy,
                                                         max_conc, on_throttle, arrivals, seed):
    cfg = make_config(functions=functions_config(max_concurrency=max_conc, on_throttle=on_throttle),
                      router=RouterConfig(max_outstanding_batches=outstanding, max_queue_per_instance=4))
    scen = scenario(cfg, instance_profile(sorted(latencies), delay_ms), function_profile(50.0, cold_s=0.5))
    cfg = with_static_fleet(cfg, n_instances, scen)
    res = run(cfg, scen, sorted(arrivals), 30.0, policy=policy, seed=seed)
    s = res.summary
    served = sum(p["requests"] for p in s["latency_by_path"].values())
    assert s["requests"] == len(arrivals)
    assert served + s["dropped"] == s["requests"]
    assert np.isfinite(res.latencies_s).sum() == served
    assert (res.latencies_s[np.isfinite(res.latencies_s)] > 0).all()
    assert s["cost_usd"] == pytest.approx(s["iaas_usd"] + s["faas_usd"])
    assert s["iaas_usd"] == pytest.approx(s["cost_breakdown"]["instances_on_demand_usd"]
                                          + s["cost_breakdown"]["instances_spot_usd"])
    if served:
        assert s["p50_ms"] <= s["p95_ms"] <= s["p99_ms"] <= s["p999_ms"]


def test_same_seed_same_files_byte_for_byte(tmp_path):
    outs = []
    for name in ("a", "b"):
        out = tmp_path / name
        assert main(["simulate", "--trace", "synthetic:flash-crowd", "--duration", "2h", "--policy", "reactive",
                     "--seed", "11", "--out", str(out), "--no-report", "-q"]) == 0
        outs.append(out)
    for fname in ("timeseries.csv", "latency_hist.csv", "config.toml"):
        assert (outs[0] / fname).read_bytes() == (outs[1] / fname).read_bytes(), fname
    # summary.json is identical except for wall_s, the run's own wall-clock time.
    a, b = (json.loads((o / "summary.json").read_text()) for o in outs)
    assert a.pop("wall_s") > 0 and b.pop("wall_s") > 0
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    c_out = tmp_path / "c"
    assert main(["simulate", "--trace", "synthetic:flash-crowd", "--duration", "2h", "--policy", "reactive",
                 "--seed", "12", "--out", str(c_out), "--no-report", "-q"]) == 0
    assert (c_out / "timeseries.csv").read_bytes() != (outs[0] / "timeseries.csv").read_bytes()
