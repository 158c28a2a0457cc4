"""The simulator against queueing theory (long runs, fixed seeds).

These protect every later cost and SLO figure: if the kernel's queues, batching or function pool
drift from the textbook models they reduce to, these fail.
"""
from __future__ import annotations

import math

import pytest

from controller.config import ControllerConfig, FunctionsConfig, RouterConfig
from tests.scenarios import function_profile, functions_config, instance_profile, make_config, run, scenario, \
    with_static_fleet
from traces.synthetic import poisson_trace

SERVICE_MS = 10.0
MU = 1000.0 / SERVICE_MS          # 100 requests/s per instance


def erlang_c(c: int, a: float) -> float:
    """Probability that an arrival waits in M/M/c with offered load a = lambda/mu (< c)."""
    head = sum(a ** k / math.factorial(k) for k in range(c))
    tail = a ** c / math.factorial(c) * c / (c - a)
    return tail / (head + tail)


def mean_wait_ms(c: int, rho: float, jitter_dist: str, requests: int, seed: int = 1) -> float:
    """Mean time in queue of c unbatched instances under Poisson arrivals at utilisation rho.

    One request per instance at a time (router.max_outstanding_batches = 1 with max batch 1):
    the router holds the rest in its FIFO queue, so c instances form one M/G/c queue.
    """
    cfg = make_config(functions=FunctionsConfig(enabled=False),
                      router=RouterConfig(max_outstanding_batches=1, max_queue_per_instance=100_000))
    scen = scenario(cfg, instance_profile([SERVICE_MS], jitter_dist=jitter_dist))
    cfg = with_static_fleet(cfg, c, scen)
    lam = rho * c * MU
    res = run(cfg, scen, poisson_trace(lam, requests / lam), policy="static-peak", record=False, seed=seed)
    s = res.summary
    assert s["dropped"] == 0 and s["launches"] == c
    # Measured wait (arrival to batch start), not mean latency minus 10 ms: the sample mean of
    # 3 M exponential services is itself off by about 10/sqrt(3e6) = 0.006 ms, which is 4% of
    # the 0.15 ms mean wait of 8 instances at 50% load.
    return s["latency_by_path"]["instance"]["mean_wait_ms"]


@pytest.mark.parametrize("rho", [0.5, 0.8])
def test_md1_mean_wait(rho):
    # Pollaczek-Khinchine for deterministic service: Wq = rho / (2 mu (1 - rho)).
    expected_ms = rho / (2 * MU * (1 - rho)) * 1000
    assert mean_wait_ms(1, rho, "lognormal", 3_000_000) == pytest.approx(expected_ms, rel=0.02)


@pytest.mark.parametrize("rho", [0.5, 0.8])
def test_mm1_mean_wait(rho):
    # Wq = rho / (mu - lambda).
    expected_ms = rho / (MU - rho * MU) * 1000
    assert mean_wait_ms(1, rho, "exponential", 3_000_000) == pytest.approx(expected_ms, rel=0.02)


@pytest.mark.parametrize("c", [2, 4, 8])
@pytest.mark.parametrize("rho", [0.5, 0.7, 0.9])
def test_mmc_mean_wait_matches_erlang_c(c, rho):
    lam = rho * c * MU
    expected_ms = erlang_c(c, lam / MU) / (c * MU - lam) * 1000
    assert mean_wait_ms(c, rho, "exponential", 3_000_000) == pytest.approx(expected_ms, rel=0.05)


def faas_run(rate_rps, requests, service_ms, keep_alive_s, cold_s=0.0, seed=3):
    # faas-only has nothing to decide, so a long controller interval keeps a run of 1 M seconds
    # (the cold-start case) from spending its time in 100,000 controller ticks.
    cfg = make_config(functions=functions_config(keep_alive_s=keep_alive_s, max_concurrency=10_000),
                      controller=ControllerConfig(interval_s=600.0, metrics_window_s=600.0, stale_after_s=600.0))
    scen = scenario(cfg, instance_profile([10.0]),
                    function_profile(service_ms, cold_s=cold_s, jitter_dist="exponential"))
    return run(cfg, scen, poisson_trace(rate_rps, requests / rate_rps), policy="faas-only", record=False,
               seed=seed).summary


def test_function_pool_is_m_m_infinity():
    # Every request gets its own environment at once, so the number busy is M/M/inf with mean
    # lambda * E[S] = 200/s * 0.1 s = 20. By PASTA, Poisson arrivals see that time average.
    s = faas_run(200.0, 2_000_000, 100.0, keep_alive_s=600.0)
    assert s["function_busy_seen_mean"] == pytest.approx(20.0, rel=0.02)
    assert s["throttled"] == 0 and s["dropped"] == 0


def test_cold_start_fraction_hand_computed():
    # One request per second on average, 1 ms of service, 2 s keep-alive, no init time: a
    # request is cold when the gap since the previous one finished exceeds 2 s, i.e. when the
    # inter-arrival time exceeds 2.001 s: P = exp(-2.001) = 0.1352. Overlaps (a request within
    # 1 ms of the previous one, P = 1 - exp(-0.001) = 0.001) also need a new environment.
    s = faas_run(1.0, 1_000_000, 1.0, keep_alive_s=2.0)
    expected = math.exp(-2.001) + (1 - math.exp(-0.001))
    assert s["cold_starts"] / s["requests"] == pytest.approx(expected, rel=0.02)
