"""Every registered policy, for any snapshot: caps and budget hold, reasons are never empty;
and the forecasting policies (hybrid, mark) react to the forecast as they should."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from controller.config import BudgetConfig, load_config
from controller.forecast import Forecast, LoadForecaster
from controller.planner import QUANTILES
from controller.policies import PolicyContext, make_policy, policy_names
from controller.scenario import build_scenario
from controller.types import Observation, Snapshot
from predictor.registry import make_forecaster
from provisioners.base import DRAINING, PENDING, READY, InstanceRecord
from traces.synthetic import poisson_trace

BASE = load_config()
SPOT = dataclasses.replace(BASE, fleet=dataclasses.replace(BASE.fleet, markets=("on-demand", "spot")))
SCENARIOS = {id(BASE): build_scenario(BASE), id(SPOT): build_scenario(SPOT)}
SHAPE = np.array([0.7, 0.85, 1.0, 1.1, 1.25, 1.35, 1.5, 1.6, 1.8, 2.0])


def forecast_at(now_s: float, level_rps: float, steps: int = 20) -> Forecast:
    rows = np.tile(level_rps * SHAPE, (steps, 1))
    return Forecast(now_s, 60.0, QUANTILES, rows, "test: flat")


def context(cfg, trace=None) -> PolicyContext:
    return PolicyContext(cfg, SCENARIOS[id(cfg)] if id(cfg) in SCENARIOS else build_scenario(cfg),
                         trace_peak_rps=8000.0, trace=trace)


@st.composite
def fleets(draw, cfg):
    kinds = [o.key for o in SCENARIOS[id(cfg)].options]
    records = []
    for i in range(draw(st.integers(0, 12))):
        itype, market = draw(st.sampled_from(kinds))
        state = draw(st.sampled_from([PENDING, READY, READY, DRAINING]))
        launched = draw(st.floats(0, 3000))
        records.append(InstanceRecord(f"i{i}", itype, market, state, launched,
                                      None if state == PENDING else launched + 150.0))
    return tuple(records)


TRACE = poisson_trace(2000.0, 3600.0, bin_s=60.0)


@settings(max_examples=40, deadline=None)
@given(st.data(), st.sampled_from(["base", "spot"]), st.floats(1.0, 60.0), st.integers(1, 8),
       st.floats(0, 20000), st.booleans())
def test_any_snapshot_respects_caps_budget_and_explains(data, markets, budget, per_type, rps, fresh):
    cfg0 = BASE if markets == "base" else SPOT
    cfg = dataclasses.replace(cfg0, budget=BudgetConfig(max_usd_per_h=budget),
                              fleet=dataclasses.replace(cfg0.fleet, max_instances_per_type=per_type))
    SCENARIOS.setdefault(id(cfg), SCENARIOS[id(cfg0)])
    now = 3600.0
    fleet = data.draw(fleets(cfg0))
    obs = Observation(now - (10.0 if fresh else 600.0), 60.0, rps)
    snap = Snapshot(now, obs, fleet, cfg.controller.stale_after_s)
    ctx = context(cfg, TRACE)
    scen = ctx.scenario
    for name in policy_names():
        policy = make_policy(name)
        decision, _ = policy.decide(snap, forecast_at(now, rps), ctx, policy.initial_state())
        assert decision.reason.strip(), name
        if decision.reason.startswith("hold:"):
            continue      # holding keeps what is there, whatever it costs
        counts = dict(decision.targets)
        assert scen.usd_per_h(counts) <= budget + 1e-6, (name, decision.reason)
        per = {}
        for (itype, _), n in counts.items():
            per[itype] = per.get(itype, 0) + n
        assert all(n <= per_type for n in per.values()), (name, decision.reason)
    SCENARIOS.pop(id(cfg), None)


@settings(max_examples=25, deadline=None)
@given(st.floats(100, 20000), st.floats(1.0, 3.0), st.sampled_from(["base", "spot"]))
def test_hybrid_more_forecast_load_never_less_capacity(rps, factor, markets):
    cfg = BASE if markets == "base" else SPOT
    ctx = context(cfg)
    now = 3600.0
    snap = Snapshot(now, Observation(now, 60.0, rps), (), cfg.controller.stale_after_s)
    hybrid = make_policy("hybrid")
    low, _ = hybrid.decide(snap, forecast_at(now, rps), ctx, hybrid.initial_state())
    high, _ = hybrid.decide(snap, forecast_at(now, rps * factor), ctx, hybrid.initial_state())
    assert ctx.scenario.capacity_rps(dict(high.targets)) >= ctx.scenario.capacity_rps(dict(low.targets))


def test_hybrid_plans_for_the_forecast_not_the_present():
    ctx = context(BASE)
    now = 3600.0
    snap = Snapshot(now, Observation(now, 60.0, 2000.0), (), 60.0)
    rows = np.tile(2000.0 * SHAPE, (20, 1))
    rows[6:] *= 3.0                      # a tripling due in 6 minutes, after the launch lead
    hybrid = make_policy("hybrid")
    rising, _ = hybrid.decide(snap, Forecast(now, 60.0, QUANTILES, rows, "test"), ctx, hybrid.initial_state())
    flat, _ = hybrid.decide(snap, forecast_at(now, 2000.0), ctx, hybrid.initial_state())
    cap = ctx.scenario.capacity_rps
    assert cap(dict(rising.targets)) >= 6000.0 > cap(dict(flat.targets))
    assert rising.spill_enabled and rising.spill_threshold_ms < BASE.slo.latency_ms
    assert "hybrid: forecast" in rising.reason


def test_hybrid_holds_scale_in_then_releases():
    ctx = context(BASE)
    fleet = tuple(InstanceRecord(f"i{i}", "g6.xlarge", "on-demand", READY, 0.0, 150.0) for i in range(6))
    hybrid = make_policy("hybrid")
    state = hybrid.initial_state()
    hold_s = BASE.policies.hybrid.scale_in_hold_s
    for now, expect_six in ((3600.0, True), (3600.0 + hold_s / 2, True), (3600.0 + hold_s, False)):
        snap = Snapshot(now, Observation(now, 60.0, 1000.0), fleet, 60.0)
        decision, state = hybrid.decide(snap, forecast_at(now, 1000.0), ctx, state)
        assert (decision.target(("g6.xlarge", "on-demand")) == 6) == expect_six, decision.reason


def test_mark_waits_six_decisions_before_scaling_in():
    ctx = context(BASE)
    fleet = tuple(InstanceRecord(f"i{i}", "g6.xlarge", "on-demand", READY, 0.0, 150.0) for i in range(6))
    mark = make_policy("mark")
    state = mark.initial_state()
    totals = []
    for k in range(BASE.policies.mark.scale_in_decisions):
        now = 3600.0 + 10.0 * k
        decision, state = mark.decide(Snapshot(now, Observation(now, 60.0, 1000.0), fleet, 60.0),
                                      forecast_at(now, 1000.0), ctx, state)
        totals.append(decision.total_instances())
    assert totals[:-1] == [6] * (len(totals) - 1) and totals[-1] < 6
    assert "1.2" in decision.reason and decision.spill_enabled


def test_load_forecaster_turns_ticks_into_steps():
    model = make_forecaster("last-value", 60.0)
    day = [100.0] * 1439
    lf = LoadForecaster(model, 60.0, history=np.array(day[:-1] + [110.0]))
    assert not lf.ready and lf.forecast(0.0, 300.0, (0.5,)) is None   # less than a day of steps
    for t in (10.0, 20.0, 50.0):             # mid-step ticks add nothing
        lf.observe(Observation(t, 60.0, 999.0))
    assert lf.series[-1] == 110.0 and len(lf.series) == 1439
    lf.observe(Observation(60.0, 60.0, 120.0))
    lf.observe(Observation(70.0, 60.0, 130.0))
    assert lf.series[-2:] == [110.0, 120.0] and lf.ready
    lf.observe(Observation(185.0, 60.0, 140.0))   # two steps ended; only the last was observed
    assert lf.series[-2] != lf.series[-2] and lf.series[-1] == 140.0
    fc = lf.forecast(185.0, 300.0, (0.5, 0.9))
    assert fc.origin_s == 180.0 and fc.rps.shape == (6, 2) and fc.reason
    assert fc.peak(185.0, 245.0)[0] == pytest.approx(140.0)


def test_hybrid_without_forecast_plans_on_the_observed_load():
    ctx = context(BASE)
    now = 600.0
    snap = Snapshot(now, Observation(now, 60.0, 3000.0), (), 60.0)
    hybrid = make_policy("hybrid")
    decision, _ = hybrid.decide(snap, None, ctx, hybrid.initial_state())
    assert "no forecast yet: observed 3,000 req/s" in decision.reason
    assert ctx.scenario.capacity_rps(dict(decision.targets)) >= 3000.0
