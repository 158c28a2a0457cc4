"""The hybrid planner's integer program: brute force equality, monotonicity, caps, newsvendor."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from controller.planner import (MIP_REL_GAP, QUANTILES, PlanOption, PlanProblem, expected_spill, quantile_masses, solve,
                                spill_tangents)

F_USD = 14.2e-6   # $ per function request (10 GB Lambda, warm)
MASSES = quantile_masses(QUANTILES)


def rows_for(levels, n_steps: int) -> np.ndarray:
    """Quantile rows spreading each step's load from 0.7x to 2x its level."""
    shape = np.array([0.7, 0.85, 1.0, 1.1, 1.25, 1.35, 1.5, 1.6, 1.8, 2.0])
    levels = np.resize(np.asarray(levels, float), n_steps)
    return levels[:, None] * shape[None, :]


def objective(problem: PlanProblem, keep, on, new) -> float:
    """The planner's objective for a plan, computed directly (see controller/planner.py)."""
    opts = problem.options
    mu = np.array([o.capacity_rps for o in opts])
    early_avail = np.array([o.ready + o.pending_share * o.pending for o in opts])
    keep, on, new = (np.asarray(v) for v in (keep, on, new))
    early_s, late_s = problem.early.shape[0] * problem.step_s, problem.late.shape[0] * problem.step_s
    c_early = float(np.dot(mu, np.minimum(keep, early_avail)))
    c_late = float(np.dot(mu, on + new))
    price_s = np.array([o.usd_per_h / 3600 for o in opts])
    usd = float(np.dot(price_s, early_s * keep + late_s * on + (early_s + late_s) * new))
    f = problem.function_usd_per_request
    usd += f * problem.step_s * sum(expected_spill(q, MASSES, c_early) for q in problem.early)
    usd += f * problem.step_s * sum(expected_spill(q, MASSES, c_late) for q in problem.late)
    od = sum(mu[k] * (on[k] + new[k]) for k, o in enumerate(opts) if o.key[1] == "on-demand")
    usd += f * late_s * max(problem.on_demand_floor_rps - od, 0.0)
    return usd


def feasible(problem: PlanProblem, running) -> bool:
    """Budget and per-type caps on the instances running now (kept + new)."""
    opts = problem.options
    if sum(o.usd_per_h * x for o, x in zip(opts, running)) > problem.budget_usd_per_h + 1e-9:
        return False
    per_type: dict[str, int] = {}
    for o, x in zip(opts, running):
        per_type[o.key[0]] = per_type.get(o.key[0], 0) + x
    return all(v <= problem.type_cap for v in per_type.values())


def option_plans(o: PlanOption, cap: int):
    """Every (kept now, kept on, new) for one option."""
    for keep in range(min(o.ready + o.pending, cap) + 1):
        for on in range(keep + 1):
            for new in range(cap + 1):
                yield keep, on, new


def plan_counts(problem: PlanProblem, plan) -> list[int]:
    got = dict(plan.counts)
    return [got.get(o.key, 0) for o in problem.options]


option = st.builds(
    lambda name, market, cap, price, ready, pending, share: PlanOption(
        (name, market), cap, price, ready, pending, share),
    st.sampled_from(["a", "b", "c"]), st.sampled_from(["on-demand", "spot"]),
    st.floats(50, 400), st.floats(0.05, 2.0), st.integers(0, 2), st.integers(0, 1), st.floats(0, 1))


@st.composite
def problems(draw, max_options=3):
    opts = draw(st.lists(option, min_size=1, max_size=max_options, unique_by=lambda o: o.key))
    n_early, n_late = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    early = rows_for(draw(st.lists(st.floats(0, 600), min_size=1, max_size=3)), n_early)
    late = rows_for(draw(st.lists(st.floats(0, 600), min_size=1, max_size=4)), n_late)
    return PlanProblem(tuple(opts), 60.0, early, late, draw(st.sampled_from([F_USD, 1e-4, 1e-3])),
                       draw(st.floats(0.5, 20.0)), draw(st.sampled_from([0.0, 150.0])),
                       draw(st.integers(1, 5)))


@settings(max_examples=60, deadline=None)
@given(problems(max_options=2))
def test_solve_equals_brute_force(problem):
    plan = solve(problem)
    assert feasible(problem, plan_counts(problem, plan))
    best = math.inf
    for combo in itertools.product(*(list(option_plans(o, problem.type_cap)) for o in problem.options)):
        keep, on, new = (np.array(v) for v in zip(*combo))
        if feasible(problem, keep + new):
            best = min(best, objective(problem, keep, on, new))
    assert plan.objective_usd <= best * (1 + MIP_REL_GAP) + 1e-9
    late = dict(plan.late_counts)
    assert plan.capacity_rps == pytest.approx(sum(o.capacity_rps * late.get(o.key, 0) for o in problem.options))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(problems(max_options=4), st.floats(1.0, 3.0), st.floats(0.0, 300.0))
def test_more_forecast_load_never_less_capacity(problem, factor, extra):
    """Holds while no per-type cap or budget binds. When one binds, the planner may rationally
    trade late capacity for early capacity: e.g. with 3 per type, keep a ready 57 req/s
    on-demand instance instead of a booting 83 req/s spot one when the next minutes get busier."""
    more = PlanProblem(problem.options, problem.step_s, problem.early * factor + extra,
                       problem.late * factor + extra, problem.function_usd_per_request,
                       problem.budget_usd_per_h, problem.on_demand_floor_rps, problem.type_cap)
    plans = solve(problem), solve(more)
    assume(not any(binds(problem, plan) for plan in plans))
    assert plans[1].capacity_rps >= plans[0].capacity_rps - 1e-6


def binds(problem: PlanProblem, plan) -> bool:
    n = plan_counts(problem, plan)
    per_type: dict[str, int] = {}
    for o, x in zip(problem.options, n):
        per_type[o.key[0]] = per_type.get(o.key[0], 0) + x
    cheapest = min(o.usd_per_h for o in problem.options)
    usd = sum(o.usd_per_h * x for o, x in zip(problem.options, n))
    return max(per_type.values()) >= problem.type_cap or usd + cheapest > problem.budget_usd_per_h


@settings(max_examples=40, deadline=None)
@given(problems(max_options=4))
def test_budget_and_type_caps_hold(problem):
    plan = solve(problem)
    assert feasible(problem, plan_counts(problem, plan))
    assert plan.launches >= 0 and plan.removals >= 0


def test_spill_tangents_are_the_expected_spill():
    rows = rows_for([100.0, 250.0], 2)
    a, b = spill_tangents(rows, MASSES)
    for c in np.linspace(0, 600, 61):
        direct = sum(expected_spill(q, MASSES, c) for q in rows)
        assert max(0.0, float(np.max(a - b * c))) == np.float64(direct).round(9) or \
            math.isclose(max(0.0, float(np.max(a - b * c))), direct, rel_tol=1e-9, abs_tol=1e-9)


def one_kind(price_usd_per_h: float, level: float = 1000.0, ready: int = 0) -> PlanProblem:
    opt = PlanOption(("g6.xlarge", "on-demand"), 100.0, price_usd_per_h, ready, 0, 0.0)
    rows = rows_for([level], 10)
    return PlanProblem((opt,), 60.0, rows[:4], rows, F_USD, 1e6, 0.0, 10_000)


def test_newsvendor_rule_and_extremes():
    # 100 req/s per instance; one more instance pays off while
    #   f x 100 req/s x W x P(load > C) > price x (L + W)       (controller/planner.py)
    # with L = 4 steps (240 s) and W = 10 steps (600 s) here. At $0.8/h:
    #   0.8 / 3600 x 840 / (14.2e-6 x 100 x 600) = 0.219, so C stops where P(load > C) <= 0.219.
    problem = one_kind(0.8)
    plan = solve(problem)
    fractile = 0.8 / 3600 * 840.0 / (F_USD * 100.0 * 600.0)
    row = problem.late[0]

    def above(c):
        return float(MASSES[row > c + 1e-9].sum())

    assert above(plan.capacity_rps) <= fractile < above(plan.capacity_rps - 100.0)
    # almost free instances cover the top quantile point (2,000 req/s); at $6/h an instance
    # costs more than all the spill it could save (100 x 3600 x 14.2e-6 = $5.11/h): none
    assert solve(one_kind(0.001)).capacity_rps == 2000.0
    assert solve(one_kind(6.0)).capacity_rps == 0.0


def test_kept_instances_cover_the_launch_lead():
    # Load is high now (early window) and low later: instances that are there are kept for the
    # early window, since a removed one could not be back in time; none are launched.
    opt = PlanOption(("g6.xlarge", "on-demand"), 100.0, 0.8, 12, 0, 0.0)
    early, late = rows_for([1000.0], 4), rows_for([100.0], 10)
    keep = solve(PlanProblem((opt,), 60.0, early, late, F_USD, 1e6, 0.0, 10_000))
    assert keep.launches == 0 and keep.removals == 0 and dict(keep.counts)[opt.key] == 12
    assert keep.capacity_rps < 1000.0       # ... and most of them are not kept on after the lead
    shrink = solve(PlanProblem((opt,), 60.0, late[:4], late, F_USD, 1e6, 0.0, 10_000))
    assert shrink.removals > 0 and dict(shrink.counts)[opt.key] < 12


def test_on_demand_floor_and_dominated_kinds():
    od = PlanOption(("g6.xlarge", "on-demand"), 100.0, 0.8, 0, 0, 0.0)
    spot = PlanOption(("g6.xlarge", "spot"), 100.0, 0.32, 0, 0, 0.0)
    dear = PlanOption(("g6.2xlarge", "on-demand"), 100.0, 0.98, 0, 0, 0.0)   # same GPU, dearer
    rows = rows_for([1000.0], 10)
    plan = dict(solve(PlanProblem((od, spot, dear), 60.0, rows[:4], rows, F_USD, 1e6, 500.0, 10_000)).counts)
    assert plan.get(("g6.xlarge", "on-demand"), 0) * 100.0 >= 500.0
    assert plan.get(("g6.xlarge", "spot"), 0) > 0
    assert ("g6.2xlarge", "on-demand") not in plan
