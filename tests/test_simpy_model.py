"""The SimPy reference model (bench/simpy_model.py) against cases computed by hand."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

pytest.importorskip("simpy", exc_type=ImportError)

from bench.simpy_model import run_simpy  # noqa: E402
from controller.config import Config, FunctionsConfig, StaticPeakPolicyConfig, load_config  # noqa: E402
from controller.scenario import Scenario  # noqa: E402
from provisioners.distributions import Distribution  # noqa: E402
from serving.profiles import BackendProfile  # noqa: E402
from tests.scenarios import G4DN_USD_PER_H, instance_profile, make_config, scenario, trace_of  # noqa: E402


def instance_scenario(cfg: Config, latencies_ms, max_delay_ms=0.0, function=None) -> Scenario:
    """One instance kind (priced as g4dn.xlarge) with the given batch latency table, no jitter."""
    return scenario(cfg, instance_profile(latencies_ms, max_delay_ms), function)


def one_instance_config() -> Config:
    """static-peak sized to exactly one instance, functions off."""
    cfg = make_config(functions=FunctionsConfig(enabled=False))
    policies = dataclasses.replace(cfg.policies, static_peak=StaticPeakPolicyConfig(peak_rps=1.0))
    return dataclasses.replace(cfg, policies=policies)


def run(cfg, scenario, arrivals, duration_s, policy="static-peak"):
    return run_simpy(cfg, scenario, trace_of(arrivals, duration_s), policy, seed=0, return_latencies=True)


def test_fifo_instance_latencies_and_billing():
    cfg = one_instance_config()
    s = run(cfg, instance_scenario(cfg, [10.0]), [0.0, 0.005, 0.030, 0.031, 0.100], 1.0)
    # FIFO with a 10 ms service: waits of 0, 5, 0, 9, 0 ms.
    assert s["latencies_ms"] == pytest.approx([10, 15, 10, 19, 10])
    assert s["requests"] == 5 and s["dropped"] == 0 and s["launches"] == 1
    assert s["p50_ms"] == pytest.approx(10.0)
    assert s["mean_ms"] == pytest.approx(12.8)
    assert s["slo_attainment"] == 1.0 and s["faas_fraction"] == 0.0
    # Ready at t = 0 (warm start), runs to the end of the 1 s trace: billed the 60 s minimum.
    assert s["iaas_usd"] == pytest.approx(60 * G4DN_USD_PER_H / 3600)
    assert s["instance_hours"] == pytest.approx(1.0 / 3600)


def test_dynamic_batching_waits_for_the_queue_delay():
    cfg = one_instance_config()
    s = run(cfg, instance_scenario(cfg, [10.0, 12.0, 14.0, 16.0], max_delay_ms=5.0),
            [0.0, 0.001, 0.002, 0.020], 1.0)
    # The first three form a batch at t = 5 ms (oldest waited 5 ms) and finish at 19 ms;
    # the fourth waits 5 ms alone and takes 10 ms.
    assert s["latencies_ms"] == pytest.approx([19, 18, 17, 15])


def test_full_batch_starts_without_waiting():
    cfg = one_instance_config()
    s = run(cfg, instance_scenario(cfg, [10.0, 12.0], max_delay_ms=5.0), [0.0, 0.001, 0.002], 1.0)
    # Two requests fill the batch at 1 ms (done 13 ms); the third starts at 13 ms alone (done 23 ms).
    assert s["latencies_ms"] == pytest.approx([13, 12, 21])


def test_function_cold_start_once_per_environment():
    fn = BackendProfile("lambda-2048", "function", 1, (100.0,), 0.0, 0.0, memory_mb=2048,
                        cold_start_s=Distribution(kind="fixed", value=2.0))
    cfg = make_config(functions=FunctionsConfig(enabled=True, memory_mb=2048, keep_alive_s=600.0))
    scenario = instance_scenario(cfg, [10.0], function=fn)
    s = run(cfg, scenario, [0.0, 5.0, 5.05, 700.0], 800.0, policy="faas-only")
    # t=0 cold (2 s init + 0.1 s); t=5 reuses it warm (done 5.1); t=5.05 finds it busy: a second
    # cold environment (done 7.15); t=700: both idle > 600 s keep-alive, so cold again.
    assert s["latencies_ms"] == pytest.approx([2100, 100, 2100, 2100])
    assert s["cold_starts"] == 3 and s["faas_fraction"] == 1.0
    assert s["served"] == {"instance": 0, "function_warm": 1, "function_cold": 3}
    pricing = scenario.catalog.functions
    billed_gb_s = (3 * 2.1 + 0.1) * 2.0        # init is billed, 2 GB
    assert s["faas_usd"] == pytest.approx(billed_gb_s * pricing.usd_per_gb_s + 4 * pricing.usd_per_request,
                                          rel=1e-9)
    assert s["iaas_usd"] == 0.0 and s["launches"] == 0


def test_function_throttle_then_retry_then_drop():
    fn = BackendProfile("lambda-2048", "function", 1, (100.0,), 0.0, 0.0, memory_mb=2048,
                        cold_start_s=Distribution(kind="fixed", value=2.0))
    cfg = make_config(functions=FunctionsConfig(enabled=True, memory_mb=2048, max_concurrency=1,
                                                retry_delay_s=0.1, max_retries=3))
    scenario = instance_scenario(cfg, [10.0], function=fn)
    # One environment, busy 0..2.1 s. The request at 1.0 s is throttled and retried at 1.1, 1.3,
    # 1.7 s (throttled each time), then dropped. The one at 1.9 s retries at 2.0 (throttled) and
    # 2.2 s, where the environment is idle again: latency 2.2 - 1.9 + 0.1 = 0.4 s.
    s = run(cfg, scenario, [0.0, 1.0, 1.9], 10.0, policy="faas-only")
    assert s["latencies_ms"] == pytest.approx([2100, 400])
    assert s["dropped"] == 1 and s["throttled"] == 4 + 2 and s["retries"] == 3 + 2
    assert s["slo_attainment"] == pytest.approx(1 - (2 + 1) / 3)


def test_provisioned_environments_serve_first_and_are_billed_while_configured():
    fn = BackendProfile("lambda-2048", "function", 1, (100.0,), 0.0, 0.0, memory_mb=2048,
                        cold_start_s=Distribution(kind="fixed", value=2.0))
    cfg = make_config(functions=FunctionsConfig(enabled=True, memory_mb=2048, warm_concurrency=2))
    scenario = instance_scenario(cfg, [10.0], function=fn)
    # Two provisioned environments take the first two requests warm; the third needs a cold one.
    s = run(cfg, scenario, [0.0, 0.01, 0.02], 10.0, policy="faas-only")
    assert s["latencies_ms"] == pytest.approx([100, 100, 2100])
    assert s["cold_starts"] == 1
    p = scenario.catalog.functions
    expected = (2 * 0.1 * 2.0 * p.provisioned_duration_usd_per_gb_s   # 2 x 100 ms on provisioned envs
                + 2.1 * 2.0 * p.usd_per_gb_s                          # the cold one, init billed
                + 3 * p.usd_per_request
                + 2 * 2.0 * 10.0 * p.provisioned_usd_per_gb_s)        # 2 envs x 2 GB x 10 s configured
    assert s["faas_usd"] == pytest.approx(expected, rel=1e-9)


# ---------------------------------------------------------------------------------------------
# The late-binding router: the same hand-computed cases through the SimPy model and the simulator.

def router_case(latencies_ms, n_instances, max_delay_ms=0.0, outstanding_batches=1):
    from tests.scenarios import instance_profile, scenario, with_static_fleet
    cfg = make_config(functions=FunctionsConfig(enabled=False),
                      router=dataclasses.replace(load_config().router,
                                                 max_outstanding_batches=outstanding_batches))
    scen = scenario(cfg, instance_profile(latencies_ms, max_delay_ms))
    return with_static_fleet(cfg, n_instances, scen), scen


def both_models(cfg, scen, arrivals, duration_s):
    """(SimPy summary, simulator result) for the same trace."""
    from tests.scenarios import run as run_simulator
    return run(cfg, scen, arrivals, duration_s), run_simulator(cfg, scen, arrivals, duration_s)


def test_router_queue_hands_off_to_the_first_instance_that_frees():
    # Two unbatched 10 ms instances holding one request each (L = 1): an M/D/2 central queue.
    cfg, scen = router_case([10.0], 2)
    s, real = both_models(cfg, scen, [0.0, 0.001, 0.003, 0.0105], 1.0)
    # A (0 ms) -> instance 1 until 10 ms; B (1 ms) -> instance 2 until 11 ms; C (3 ms): both full,
    # so it waits at the router and goes to instance 1 when it frees at 10 ms (done 20 ms);
    # D (10.5 ms): both full again, waits, and goes to instance 2, which frees first (11 ms, done 21).
    by_arrival = [10, 10, 17, 10.5]
    assert sorted(s["latencies_ms"]) == pytest.approx(sorted(by_arrival))
    assert real.latencies_s * 1000 == pytest.approx(by_arrival)
    for summary in (s, real.summary):
        assert summary["router_queued"] == 2 and summary["dropped"] == 0
        assert summary["mean_ms"] == pytest.approx(np.mean(by_arrival))


def test_router_queue_hand_off_restarts_the_batcher_delay():
    # One instance, batches of up to 2 (10 / 12 ms), 5 ms queue delay, L = 1 batch = 2 requests.
    cfg, scen = router_case([10.0, 12.0], 1, max_delay_ms=5.0)
    s, real = both_models(cfg, scen, [0.0, 0.001, 0.002, 0.003, 0.004], 1.0)
    # A, B: a full batch at 1 ms, done 13 ms. C, D, E find the instance full and wait at the
    # router. At 13 ms room for 2: C and D join and start a batch at once (done 25 ms). At 25 ms E
    # is handed over; alone, it waits the 5 ms queue delay counted from the hand-off (not from its
    # arrival at 4 ms): 30..40 ms.
    by_arrival = [13, 12, 23, 22, 36]
    assert s["latencies_ms"] == pytest.approx([13, 12, 23, 22, 36])
    assert real.latencies_s * 1000 == pytest.approx(by_arrival)
    for summary in (s, real.summary):
        assert summary["router_queued"] == 3 and summary["dropped"] == 0


def test_router_queue_limit_then_drop():
    # One unbatched 10 ms instance, L = 1, router queue limit 2 x 1 instance; functions off:
    # A is served, B and C wait, D finds the router queue full and is dropped.
    from controller.config import RouterConfig
    cfg, scen = router_case([10.0], 1)
    cfg = dataclasses.replace(cfg, router=RouterConfig(max_outstanding_batches=1, max_queue_per_instance=2))
    s, real = both_models(cfg, scen, [0.0, 0.001, 0.002, 0.003], 1.0)
    by_arrival = [10, 19, 28]
    assert sorted(s["latencies_ms"]) == pytest.approx(by_arrival)
    assert real.latencies_s[:3] * 1000 == pytest.approx(by_arrival)
    for summary in (s, real.summary):
        assert summary["router_queued"] == 2 and summary["dropped"] == 1


def _register_one_instance_spill_policy():
    from controller.policies.base import _REGISTRY, register
    from controller.types import Decision
    if "test-one-instance-spill-15ms" in _REGISTRY:
        return

    @register("test-one-instance-spill-15ms")
    class OneInstanceSpill:
        """One instance of the scenario's kind, spilling when the expected completion is > 15 ms away."""

        def initial_state(self):
            return None

        def decide(self, snapshot, forecast, ctx, state):
            return Decision(Decision.make_targets({ctx.scenario.options[0].key: 1}), "test: 1 instance",
                            spill_enabled=True, spill_threshold_ms=15.0,
                            function_memory_mb=ctx.config.functions.memory_mb), state


def test_spill_uses_the_router_queue_wait_estimate():
    from tests.scenarios import function_profile, functions_config, instance_profile, run as run_simulator, scenario
    _register_one_instance_spill_policy()
    cfg = make_config(functions=functions_config(),
                      router=dataclasses.replace(load_config().router, max_outstanding_batches=1))
    scen = scenario(cfg, instance_profile([10.0]), function_profile(100.0, cold_s=2.0))
    arrivals = [0.0, 0.001, 0.006, 0.007, 0.016]
    policy = "test-one-instance-spill-15ms"
    trace_s = run_simpy(cfg, scen, trace_of(arrivals, 1.0),
                        policy, seed=0, return_latencies=True)
    real = run_simulator(cfg, scen, arrivals, 1.0, policy=policy)
    # One unbatched 10 ms instance holding one request (L = 1); threshold 15 ms.
    # A (0): idle instance, done at 10 ms -> instance.  B (1 ms): full, would wait for 10 + 10 = 20 ms,
    # 19 ms away -> function (cold: 2 s + 0.1 s).  C (6 ms): 20 ms is 14 ms away -> router queue,
    # handed over at 10 ms, done 20 ms.  D (7 ms): behind C, 10 + 2 x 10 = 30 ms, 23 ms away ->
    # function (B's environment is busy: cold again).  E (16 ms): C in service until 20 ms,
    # 30 ms is 14 ms away -> router queue, handed over at 20 ms, done 30 ms.
    by_arrival = [10, 2100, 14, 2100, 14]
    assert sorted(trace_s["latencies_ms"]) == pytest.approx(sorted(by_arrival))
    assert real.latencies_s * 1000 == pytest.approx(by_arrival)
    for summary in (trace_s, real.summary):
        assert summary["router_queued"] == 2 and summary["cold_starts"] == 2 and summary["dropped"] == 0
        assert summary["faas_fraction"] == pytest.approx(2 / 5)
