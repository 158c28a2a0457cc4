"""The simulator against cases computed by hand: latencies, billing, cold starts."""
from __future__ import annotations

import numpy as np
import pytest

from controller.config import FunctionsConfig
from tests.scenarios import (G4DN_USD_PER_H, function_profile, functions_config, instance_profile, make_config,
                             run, scenario, with_static_fleet)


def one_instance(latencies_ms, max_delay_ms=0.0, preferred=()):
    cfg = make_config(functions=FunctionsConfig(enabled=False))
    scen = scenario(cfg, instance_profile(latencies_ms, max_delay_ms, preferred=preferred))
    return with_static_fleet(cfg, 1, scen), scen


def test_fifo_instance_latencies_are_exact():
    cfg, scen = one_instance([10.0])
    res = run(cfg, scen, [0.0, 0.005, 0.030, 0.031, 0.100], 1.0)
    # FIFO with a 10 ms service: waits of 0, 5, 0, 9, 0 ms.
    assert res.latencies_s * 1000 == pytest.approx([10, 15, 10, 19, 10])
    assert res.summary["requests"] == 5 and res.summary["dropped"] == 0
    assert res.summary["mean_ms"] == pytest.approx(12.8)


def test_dynamic_batching_waits_for_the_queue_delay():
    # Batch latency 10, 12, 14, 16 ms for b = 1..4; the batcher waits up to 5 ms.
    cfg, scen = one_instance([10.0, 12.0, 14.0, 16.0], max_delay_ms=5.0)
    res = run(cfg, scen, [0.0, 0.001, 0.002, 0.020], 1.0)
    # The first three form a batch at t = 5 ms (oldest waited 5 ms) and finish at 19 ms;
    # the fourth arrives to an idle instance, waits 5 ms alone and takes 10 ms.
    assert res.latencies_s * 1000 == pytest.approx([19, 18, 17, 15])


def test_full_batch_starts_without_waiting():
    cfg, scen = one_instance([10.0, 12.0], max_delay_ms=5.0)
    res = run(cfg, scen, [0.0, 0.001, 0.002], 1.0)
    # Two requests fill the batch at t = 1 ms (done 13 ms); the third waits for the instance,
    # starts at 13 ms as a batch of one and finishes at 23 ms.
    assert res.latencies_s * 1000 == pytest.approx([13, 12, 21])


def test_preferred_batch_sizes():
    # max batch 4, preferred 2: a batch fires as soon as 2 are queued, and takes 2 of 3 available.
    cfg, scen = one_instance([10.0, 12.0, 14.0, 16.0], max_delay_ms=5.0, preferred=(2,))
    res = run(cfg, scen, [0.0, 0.001, 0.0015, 0.002, 0.0025], 1.0)
    # t=1 ms: two queued -> batch of 2 starts at 1 ms, ends 13 ms. Meanwhile 1.5, 2, 2.5 ms queue;
    # at 13 ms three are available, the largest preferred size that fits is 2 -> 13..25 ms;
    # the last one is then alone: its 5 ms delay has long passed, so 25..35 ms.
    assert res.latencies_s * 1000 == pytest.approx([13, 12, 23.5, 23, 32.5])


@pytest.mark.parametrize("life_s, billed_s", [(30.0, 60.0), (90.2, 91.0), (600.0, 600.0)])
def test_instance_billing_per_second_with_60s_minimum(life_s, billed_s):
    cfg, scen = one_instance([10.0])
    res = run(cfg, scen, [0.0], life_s)
    assert res.summary["iaas_usd"] == pytest.approx(billed_s * G4DN_USD_PER_H / 3600)
    assert res.summary["instance_hours"] == pytest.approx(life_s / 3600)


def faas_case(arrivals, duration_s, **fn_kw):
    cfg = make_config(functions=functions_config(**fn_kw))
    scen = scenario(cfg, instance_profile([10.0]), function_profile(100.0, cold_s=2.0))
    return run(cfg, scen, arrivals, duration_s, policy="faas-only"), scen


def test_function_cold_start_once_per_environment():
    res, scen = faas_case([0.0, 5.0, 5.05, 700.0], 800.0)
    # t=0 cold (2 s init + 0.1 s); t=5 reuses it warm; t=5.05 finds it busy, so a second cold
    # environment; t=700: both idle for more than the 600 s keep-alive, so cold again.
    assert res.latencies_s == pytest.approx([2.1, 0.1, 2.1, 2.1])
    s = res.summary
    assert s["cold_starts"] == 3 and s["faas_fraction"] == 1.0
    assert s["latency_by_path"]["function_cold"]["requests"] == 3
    assert s["latency_by_path"]["function_warm"]["requests"] == 1
    pricing = scen.catalog.functions
    billed_gb_s = (3 * 2.1 + 0.1) * 2.0        # init is billed (2025 rule), 2 GB
    expected = billed_gb_s * pricing.usd_per_gb_s + 4 * pricing.usd_per_request
    assert s["faas_usd"] == pytest.approx(expected, rel=1e-9)
    assert s["cost_breakdown"]["function_requests_usd"] == pytest.approx(4 * pricing.usd_per_request)
    assert s["iaas_usd"] == 0.0


def test_warm_requests_pay_no_cold_start():
    # After the first (cold) request finishes at 2.1 s, one request every 0.5 s: each finds the
    # environment idle again (0.1 s service), so none of them waits for an init.
    arrivals = np.concatenate([[0.0], np.arange(3.0, 60.0, 0.5)])
    res, _ = faas_case(arrivals, 60.0)
    assert res.summary["cold_starts"] == 1
    assert res.latencies_s[0] == pytest.approx(2.1)
    assert res.latencies_s[1:] == pytest.approx(np.full(len(arrivals) - 1, 0.1))


def test_concurrency_limit_throttles_then_retries():
    # Two environments at most; three requests at once: the third is throttled, retried after
    # 0.1 s, throttled again (both busy until 2.1 s), after 0.2 s more, and again after 0.4 s...
    # with max_retries = 3 it gives up at t = 0.7 s and is dropped.
    res, _ = faas_case([0.0, 0.0, 0.0], 10.0, max_concurrency=2, max_retries=3)
    s = res.summary
    assert s["throttled"] == 4 and s["retries"] == 3 and s["dropped"] == 1
    assert s["slo_attainment"] == 0.0   # the two served took 2.1 s, the third was dropped


def test_retry_succeeds_once_an_environment_frees():
    # Service 0.1 s, no init, one environment: the request at 0.05 s is throttled, retries 0.1 s
    # later (0.15 s), finds the environment free (the first finished at 0.1 s) and ends at 0.25 s.
    cfg = make_config(functions=functions_config(max_concurrency=1))
    scen = scenario(cfg, instance_profile([10.0]), function_profile(100.0, cold_s=0.0))
    res = run(cfg, scen, [0.0, 0.05], 10.0, policy="faas-only")
    assert res.summary["throttled"] == 1 and res.summary["retries"] == 1 and res.summary["dropped"] == 0
    assert res.latencies_s == pytest.approx([0.1, 0.2])


def test_drop_on_throttle_when_configured():
    res, _ = faas_case([0.0, 0.0, 0.0], 10.0, max_concurrency=2, on_throttle="drop")
    assert res.summary["throttled"] == 1 and res.summary["dropped"] == 1 and res.summary["retries"] == 0


def test_provisioned_concurrency_serves_warm_and_is_billed_while_configured():
    # One provisioned environment: the first request finds it warm (no init); the second,
    # concurrent one needs a new on-demand environment (cold). Provisioned capacity is billed
    # for the whole 100 s span, its invocation at the provisioned duration price.
    res, scen = faas_case([0.0, 0.05], 100.0, warm_concurrency=1)
    s = res.summary
    assert res.latencies_s == pytest.approx([0.1, 2.1])
    assert s["cold_starts"] == 1
    p = scen.catalog.functions
    gb = 2.0
    breakdown = s["cost_breakdown"]
    assert breakdown["function_provisioned_usd"] == pytest.approx(1 * gb * 100.0 * p.provisioned_usd_per_gb_s)
    assert breakdown["function_duration_usd"] == pytest.approx(
        0.1 * gb * p.provisioned_duration_usd_per_gb_s + 2.1 * gb * p.usd_per_gb_s)
