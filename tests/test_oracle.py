"""The oracle: LP bound against hand-computed cases and against simulated policies, the integer
schedule against brute force, and the oracle policy through the simulator."""
from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.config import BudgetConfig, FunctionsConfig, load_config
from controller.oracle import (_stable_picks, cheapest_fleets, explain_bound, oracle_bound, oracle_schedule, peak_rps,
                               slo_throughput_rps)
from controller.policies import PolicyContext, make_policy
from controller.scenario import build_scenario
from controller.types import Observation, Snapshot
from simulator.engine import Simulation
from tests.scenarios import (G4DN_USD_PER_H, function_profile, functions_config, instance_profile, make_config,
                             scenario)
from traces.arrivals import expand_to_arrivals
from traces.model import Trace
from traces.synthetic import flash_crowd, poisson_trace

# Test kind: batches of 1..4 take 10, 15, 20, 25 ms, no jitter: saturation 4 * 1000 / 25 = 160 req/s
# (capacity_rps_at_slo = 0.9 * 160 = 144). Priced as g4dn.xlarge: $0.526/h / (160 * 3600) per request.
LAT_MS = (10.0, 15.0, 20.0, 25.0)
MU = 160.0
USD_PER_REQ_INSTANCE = G4DN_USD_PER_H / 3600 / MU
# 2,048 MB function, 100 ms, no jitter: fully used provisioned concurrency is the cheaper rate,
# 2 GB x 0.1 s x (0.0000097222 + 0.0000041667) + $0.0000002 = $2.97778e-6 per request.
USD_PER_REQ_FUNCTION = 2 * 0.1 * (0.0000097222 + 0.0000041667) + 0.0000002


def small(max_per_type=50, functions=True, budget=200.0):
    cfg = make_config(functions=functions_config() if functions else FunctionsConfig(enabled=False),
                      budget=BudgetConfig(max_usd_per_h=budget))
    cfg = dataclasses.replace(cfg, fleet=dataclasses.replace(cfg.fleet, max_instances_per_type=max_per_type))
    return cfg, scenario(cfg, instance_profile(LAT_MS), function_profile() if functions else None)


def arrivals_trace(trace: Trace, seed: int = 7) -> Trace:
    """A rate trace drawn once into arrival times, so bound and simulation see the same requests."""
    return Trace("drawn", "test", "none", "", trace.duration_s, arrivals_s=expand_to_arrivals(trace, seed))


def both(trace, scen, cfg):
    fast, lp = oracle_bound(trace, scen, cfg), oracle_bound(trace, scen, cfg, method="lp")
    assert fast.usd == pytest.approx(lp.usd, rel=1e-7, abs=1e-12)
    assert fast.iaas_usd == pytest.approx(lp.iaas_usd, rel=1e-6, abs=1e-9)
    return fast


# ------------------------------------------------------------------------------ the bound
def test_throughput_bound_is_saturation_not_capacity_at_slo():
    cfg = load_config()
    g6 = build_scenario(cfg).option(("g6.xlarge", "on-demand"))
    assert slo_throughput_rps(g6.profile, 250.0) == pytest.approx(64000 / 30.215)
    assert g6.capacity_rps == pytest.approx(0.9 * 64000 / 30.215)
    # SLO 22 ms: only b = 1..3 finish within it (20 ms), 3000 / 20 = 150 req/s; b = 4 (25 ms) never does.
    assert slo_throughput_rps(instance_profile(LAT_MS), 22.0) == pytest.approx(150.0)
    # With jitter b = 4 counts with its chance of finishing in time, P(M <= 22/25), M lognormal mean 1.
    jittery = instance_profile(LAT_MS, jitter_cv=0.1)
    sigma = math.sqrt(math.log(1.01))
    p = 0.5 * math.erfc(-(math.log(22 / 25) + sigma ** 2 / 2) / sigma / math.sqrt(2))
    assert slo_throughput_rps(jittery, 22.0) == pytest.approx(max(150.0, 160.0 * p))


def test_constant_load_costs_cheapest_per_request_minus_allowance():
    cfg, scen = small()
    trace = poisson_trace(100.0, 600.0, 60.0)                 # 60,000 expected requests
    b = both(trace, scen, cfg)
    # All on instances; the 0.5% allowance (300 requests) is taken off the only layer in use.
    assert b.usd == pytest.approx((60_000 - 300) * USD_PER_REQ_INSTANCE)
    assert b.faas_usd == 0 and b.feasible
    assert b.instances[:, 0] == pytest.approx(np.full(10, 99.5 / MU))
    assert "oracle bound" in b.notes and b.notes == explain_bound(b)


def test_caps_binding_send_the_rest_to_functions_and_the_allowance_there():
    cfg, scen = small(max_per_type=1)
    b = both(poisson_trace(400.0, 600.0, 60.0), scen, cfg)
    # One instance serves 160 req/s; functions the other 240 req/s, less the 1,200 allowed misses.
    assert b.iaas_usd == pytest.approx(160 * 600 * USD_PER_REQ_INSTANCE)
    assert b.faas_usd == pytest.approx((240 * 600 - 1_200) * USD_PER_REQ_FUNCTION)
    assert b.function_rps == pytest.approx(np.full(10, 238.0))


def test_allowance_goes_to_the_most_expensive_bins():
    cfg, scen = small(max_per_type=1)
    # 100 req/s for 9 minutes, then 300 req/s for one: only the last minute needs functions
    # (140 req/s x 60 s = 8,400 requests), and the whole allowance, 0.5% of 72,000 = 360, goes there.
    rates = np.array([100.0] * 9 + [300.0])
    b = both(poisson_trace(rates, 600.0, 60.0), scen, cfg)
    allowance = 0.005 * (100 * 540 + 300 * 60)
    assert b.faas_usd == pytest.approx((140 * 60 - allowance) * USD_PER_REQ_FUNCTION)
    assert b.violation_rps[:9] == pytest.approx(np.zeros(9))


def test_no_fleet_can_meet_the_slo_is_reported_not_raised():
    cfg, scen = small(max_per_type=1, functions=False)
    b = both(poisson_trace(200.0, 600.0, 60.0), scen, cfg)
    assert not b.feasible and b.forced == pytest.approx(40 * 600)
    assert b.iaas_usd == pytest.approx(160 * 600 * USD_PER_REQ_INSTANCE)
    assert "NO policy" in b.notes


@settings(max_examples=15, deadline=None)
@given(rates=st.lists(st.floats(0, 30_000), min_size=1, max_size=12), cap=st.integers(1, 4),
       budget=st.floats(0.5, 8.0), spot=st.booleans(), functions=st.booleans())
def test_merit_order_equals_the_lp(rates, cap, budget, spot, functions):
    cfg = load_config()
    cfg = dataclasses.replace(cfg, budget=BudgetConfig(max_usd_per_h=budget),
                              functions=dataclasses.replace(cfg.functions, enabled=functions),
                              fleet=dataclasses.replace(cfg.fleet, max_instances_per_type=cap,
                                                        markets=("on-demand", "spot") if spot else ("on-demand",)))
    both(poisson_trace(np.array(rates), 60.0 * len(rates), 60.0), build_scenario(cfg), cfg)


# ------------------------------------------------------------------------------ bound vs simulation
def simulate(cfg, scen, trace, policy):
    return Simulation(cfg, scen, trace, policy).run()


@settings(max_examples=3, deadline=None)
@given(base=st.floats(40, 200), burst=st.floats(1.0, 4.0), seed=st.integers(0, 10_000))
def test_bound_is_below_every_simulated_policy_that_met_the_slo(base, burst, seed):
    cfg, scen = small()
    rates = base * np.where(np.random.default_rng(seed).random(20) < 0.3, burst, 1.0)
    trace = arrivals_trace(poisson_trace(rates, 1200.0, 60.0), seed)
    bound = oracle_bound(trace, scen, cfg)
    met = 0
    for policy in ("static-peak", "reactive", "faas-only", "oracle"):
        s = simulate(cfg, scen, trace, policy).summary
        if s["slo_attainment"] >= cfg.slo.attainment:
            met += 1
            assert s["cost_usd"] >= bound.usd, policy
    assert met >= 2


def test_oracle_policy_meets_the_slo_on_a_burst_and_costs_at_least_the_bound():
    cfg = load_config()
    scen = build_scenario(cfg)
    trace = arrivals_trace(flash_crowd(1500.0, 6000.0, start_s=600.0, ramp_s=120.0, hold_s=300.0,
                                       decay_s=300.0, duration_s=1800.0))
    res = simulate(cfg, scen, trace, "oracle")
    s = res.summary
    bound = oracle_bound(trace, scen, cfg)
    assert s["slo_attainment"] >= cfg.slo.attainment
    assert s["cost_usd"] >= bound.usd
    assert s["cost_usd"] <= 2.0 * bound.usd           # a real schedule, not a static peak fleet
    assert res.series["reason"].str.startswith("oracle:").all()


# ------------------------------------------------------------------------------ the schedule
def test_peak_second_from_arrivals_or_poisson_headroom():
    rate_trace = poisson_trace(np.array([5000.0, 100.0]), 120.0, 60.0)
    assert peak_rps(rate_trace, 60.0) == pytest.approx([5000 + 2.33 * 5000 ** 0.5, 100 + 2.33 * 10])
    arrivals = np.concatenate([np.linspace(0, 59.9, 120), np.full(7, 61.5)])
    trace = Trace("t", "test", "none", "", 120.0, arrivals_s=np.sort(arrivals))
    assert peak_rps(trace, 60.0) == pytest.approx([2.0, 7.0])


@pytest.mark.parametrize("budget", [2.0, 200.0])
def test_cheapest_fleet_equals_brute_force(budget):
    cfg = load_config()
    cfg = dataclasses.replace(cfg, budget=BudgetConfig(max_usd_per_h=budget),
                              fleet=dataclasses.replace(cfg.fleet, instance_types=("g4dn.xlarge", "g6.xlarge",
                                                                                   "c6i.xlarge", "c6i.2xlarge"),
                                                        max_instances_per_type=3, markets=("on-demand", "spot")))
    scen = build_scenario(cfg)
    keys, fleets, cap, usd = cheapest_fleets(scen, cfg, 8000.0)
    per_type = {}
    for o in scen.options:       # the cheaper market of each type (same capacity, shared cap)
        if o.key[0] not in per_type or o.usd_per_h < per_type[o.key[0]].usd_per_h:
            per_type[o.key[0]] = o
    combos = [(sum(n * o.capacity_rps for n, o in zip(ns, per_type.values())),
               sum(n * o.usd_per_h for n, o in zip(ns, per_type.values())))
              for ns in itertools.product(range(4), repeat=len(per_type))]
    combos = [(c, p) for c, p in combos if p <= budget + 1e-9]
    for need in np.linspace(1, 8000, 97):
        i = np.searchsorted(cap, need, side="left")
        feasible = [p for c, p in combos if c >= need - 1e-9]
        if feasible:
            assert usd[i] == pytest.approx(min(feasible)) and cap[i] >= need - 1e-9
        else:
            assert i == cap.size and cap[-1] == pytest.approx(max(c for c, _ in combos))
    assert (fleets @ [scen.option(k).capacity_rps for k in keys] == pytest.approx(cap))


def test_stable_schedule_equals_brute_force_over_sequences():
    # Three frontier fleets of two kinds: A = (1, 0), B = (0, 1), C = (1, 1); launches cost 1 and 2.
    fleets = np.array([[1, 0], [0, 1], [1, 1]])
    cap, usd = np.array([10.0, 12.0, 22.0]), np.array([3.6, 4.8, 8.4])        # $/h: 0.06 and 0.08 per minute
    launch = np.array([0.05, 0.10])
    widths = np.full(5, 60.0)
    for peak in ([5, 11, 5, 5, 11], [5, 5, 20, 5, 5], [11, 5, 5, 5, 5], [5, 5, 5, 5, 5]):
        peak = np.array(peak, float)
        pick = _stable_picks(fleets, cap, usd, peak, widths, launch)

        def total(seq):
            run = sum(usd[j] / 60 for j in seq)
            return run + sum(np.maximum(fleets[b] - fleets[a], 0) @ launch for a, b in zip(seq, seq[1:]))
        ok = [seq for seq in itertools.product(range(3), repeat=5) if all(cap[j] >= p for j, p in zip(seq, peak))]
        assert total(pick) == pytest.approx(min(total(seq) for seq in ok))
        assert all(cap[j] >= p for j, p in zip(pick, peak))


def test_schedule_covers_peaks_within_caps_and_spills_the_rest():
    cfg, scen = small(max_per_type=3)
    sched = oracle_schedule(poisson_trace(np.array([100.0] * 6 + [300.0, 600.0]), 480.0, 60.0), scen, cfg)
    # 144 req/s per instance at the SLO: 123 req/s peaks need 1, 340 need 3, 657 need 5 > cap 3.
    assert sched.counts[:, 0].tolist() == [1] * 6 + [3, 3]
    assert sched.uncovered_rps[:7] == pytest.approx(np.zeros(7))
    assert sched.uncovered_rps[7] == pytest.approx(600 + 2.33 * 600 ** 0.5 - 3 * 144)
    assert sched.iaas_usd == pytest.approx(12 * G4DN_USD_PER_H / 60)


def test_schedule_keeps_the_warm_start_fleet_when_relaunching_costs_more():
    cfg, scen = small()
    # Two minutes at 100 req/s (1 instance) between minutes at 300 req/s (3): dropping two
    # instances saves 2 x 120 s of billing but relaunching them costs 2 x 231 s (the p95 lead).
    sched = oracle_schedule(poisson_trace(np.array([300.0, 100.0, 100.0, 300.0]), 240.0, 60.0), scen, cfg)
    assert sched.counts[:, 0].tolist() == [3, 3, 3, 3]


# ------------------------------------------------------------------------------ the policy
def snapshot(now_s=0.0):
    return Snapshot(now_s, Observation(now_s, 60.0, 100.0), (), 60.0)


def test_without_a_trace_the_oracle_holds():
    cfg, scen = small()
    policy = make_policy("oracle")
    decision, _ = policy.decide(snapshot(), None, PolicyContext(cfg, scen), policy.initial_state())
    assert decision.reason.startswith("hold:") and "simulation" in decision.reason
    assert decision.targets == ()


def test_targets_look_ahead_by_the_launch_lead_and_say_why():
    cfg, scen = small()
    trace = poisson_trace(np.array([100.0] * 10 + [600.0] * 5), 900.0, 60.0)
    ctx = PolicyContext(cfg, scen, trace=trace)
    policy = make_policy("oracle")
    state = policy.initial_state()
    lead = scen.catalog.instance("g4dn.xlarge").launch_to_ready_s.quantile(0.95)   # ~231 s
    counts = []
    for now in (0.0, 590.0 - lead, 610.0 - lead):
        decision, state = policy.decide(snapshot(now), None, ctx, state)
        counts.append(decision.total_instances())
        assert decision.reason.startswith("oracle:") and decision.spill_enabled
    assert state.schedule is not None
    assert counts == [1, 1, 5]     # 600 + 2.33 sqrt(600) = 657 req/s needs 5 x 144 from bin 10 on
