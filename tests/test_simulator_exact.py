"""The simulator against cases computed by hand: latencies, billing, cold starts."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from controller.config import Config, FunctionsConfig, StaticPeakPolicyConfig, load_config
from controller.scenario import InstanceOption, Scenario
from provisioners.catalog import load_catalog
from provisioners.distributions import Distribution
from serving.profiles import BackendProfile, ModelProfile
from simulator.engine import Simulation
from traces.model import Trace

G4DN_USD_PER_H = 0.526


def make_config(**sections) -> Config:
    cfg = load_config()
    for name, value in sections.items():
        cfg = dataclasses.replace(cfg, **{name: value})
    return cfg


def instance_scenario(cfg: Config, latencies_ms, max_delay_ms=0.0, function=None) -> Scenario:
    """One instance kind (priced as g4dn.xlarge) with the given batch latency table."""
    catalog = load_catalog()
    prof = BackendProfile("g4dn.xlarge", "instance", len(latencies_ms), tuple(latencies_ms), 0.0, max_delay_ms)
    backends = {"g4dn.xlarge": prof}
    if function is not None:
        backends[function.backend] = function
    model = ModelProfile("test", backends, "test")
    opt = InstanceOption(("g4dn.xlarge", "on-demand"), catalog.instance("g4dn.xlarge"), prof, G4DN_USD_PER_H,
                         prof.capacity_rps_at_slo(cfg.slo.latency_ms))
    return Scenario(catalog, model, (opt,), function, cfg.slo.latency_ms)


def one_instance_config(**extra) -> Config:
    """static-peak sized to exactly one instance, functions off."""
    cfg = make_config(functions=FunctionsConfig(enabled=False), **extra)
    policies = dataclasses.replace(cfg.policies, static_peak=StaticPeakPolicyConfig(peak_rps=1.0))
    return dataclasses.replace(cfg, policies=policies)


def run(cfg, scenario, arrivals, duration_s, policy="static-peak"):
    trace = Trace("hand", "test", "none", "", duration_s, arrivals_s=np.asarray(arrivals, float))
    return Simulation(cfg, scenario, trace, policy, record_latencies=True).run()


def test_fifo_instance_latencies_are_exact():
    cfg = one_instance_config()
    res = run(cfg, instance_scenario(cfg, [10.0]), [0.0, 0.005, 0.030, 0.031, 0.100], 1.0)
    # FIFO with a 10 ms service: waits of 0, 5, 0, 9, 0 ms.
    assert res.latencies_s * 1000 == pytest.approx([10, 15, 10, 19, 10])
    assert res.summary["requests"] == 5 and res.summary["dropped"] == 0


def test_dynamic_batching_waits_for_the_queue_delay():
    cfg = one_instance_config()
    # Batch latency 10, 12, 14, 16 ms for b = 1..4; the batcher waits up to 5 ms.
    res = run(cfg, instance_scenario(cfg, [10.0, 12.0, 14.0, 16.0], max_delay_ms=5.0),
              [0.0, 0.001, 0.002, 0.020], 1.0)
    # The first three form a batch at t = 5 ms (oldest waited 5 ms) and finish at 19 ms;
    # the fourth arrives to an idle instance, waits 5 ms alone and takes 10 ms.
    assert res.latencies_s * 1000 == pytest.approx([19, 18, 17, 15])


def test_full_batch_starts_without_waiting():
    cfg = one_instance_config()
    res = run(cfg, instance_scenario(cfg, [10.0, 12.0], max_delay_ms=5.0), [0.0, 0.001, 0.002], 1.0)
    # Two requests fill the batch at t = 1 ms (done 13 ms); the third waits for the instance,
    # starts at 13 ms as a batch of one and finishes at 23 ms.
    assert res.latencies_s * 1000 == pytest.approx([13, 12, 21])


@pytest.mark.parametrize("life_s, billed_s", [(30.0, 60.0), (90.2, 91.0), (600.0, 600.0)])
def test_instance_billing_per_second_with_60s_minimum(life_s, billed_s):
    cfg = one_instance_config()
    res = run(cfg, instance_scenario(cfg, [10.0]), [0.0], life_s)
    assert res.summary["iaas_usd"] == pytest.approx(billed_s * G4DN_USD_PER_H / 3600)
    assert res.summary["instance_hours"] == pytest.approx(life_s / 3600)


def test_function_cold_start_once_per_environment():
    fn = BackendProfile("lambda-2048", "function", 1, (100.0,), 0.0, 0.0, memory_mb=2048,
                        cold_start_s=Distribution(kind="fixed", value=2.0))
    cfg = make_config(functions=FunctionsConfig(enabled=True, memory_mb=2048, keep_alive_s=600.0))
    scenario = instance_scenario(cfg, [10.0], function=fn)
    res = run(cfg, scenario, [0.0, 5.0, 5.05, 700.0], 800.0, policy="faas-only")
    # t=0 cold (2 s init + 0.1 s); t=5 reuses it warm; t=5.05 finds it busy, so a second cold
    # environment; t=700: both idle for more than the 600 s keep-alive, so cold again.
    assert res.latencies_s == pytest.approx([2.1, 0.1, 2.1, 2.1])
    s = res.summary
    assert s["cold_starts"] == 3 and s["faas_fraction"] == 1.0
    assert s["latency_by_path"]["function_cold"]["requests"] == 3
    assert s["latency_by_path"]["function_warm"]["requests"] == 1
    pricing = scenario.catalog.functions
    billed_gb_s = (3 * 2.1 + 0.1) * 2.0        # init is billed (2025 rule), 2 GB
    expected = billed_gb_s * pricing.usd_per_gb_s + 4 * pricing.usd_per_request
    assert s["faas_usd"] == pytest.approx(expected, rel=1e-9)
    assert s["iaas_usd"] == 0.0


def test_warm_requests_pay_no_cold_start():
    fn = BackendProfile("lambda-2048", "function", 1, (100.0,), 0.0, 0.0, memory_mb=2048,
                        cold_start_s=Distribution(kind="fixed", value=2.0))
    cfg = make_config(functions=FunctionsConfig(enabled=True, memory_mb=2048, keep_alive_s=600.0))
    # After the first (cold) request finishes at 2.1 s, one request every 0.5 s: each finds the
    # environment idle again (0.1 s service), so none of them waits for an init.
    arrivals = np.concatenate([[0.0], np.arange(3.0, 60.0, 0.5)])
    res = run(cfg, instance_scenario(cfg, [10.0], function=fn), arrivals, 60.0, policy="faas-only")
    assert res.summary["cold_starts"] == 1
    assert res.latencies_s[0] == pytest.approx(2.1)
    assert res.latencies_s[1:] == pytest.approx(np.full(len(arrivals) - 1, 0.1))
