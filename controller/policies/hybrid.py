"""hybrid (the default): the least-cost fleet of instances plus functions that meets the SLO.

At each tick it turns the forecast into two load distributions (before and after a launch now
could be ready), solves the planner's integer program (controller/planner.py) for the instance
mix, and sets the data plane: spill to functions beyond the SLO-derived threshold, and
provisioned function concurrency where it is cheaper than on-demand environments.

Spot: a spot instance costs its price plus the expected cost of being reclaimed, i.e. the hazard
times the spill while its replacement boots after the 2-minute notice: e.g. g6.xlarge spot at
1.44e-4 interruptions per hour, 1,906 req/s, (210 - 120) s gap, $14.2 per million:
1.44e-4 x 1,906 x 90 x 0.0000142 = $0.00035 per hour: spot wins on price by far, so the
risk that matters is many spot instances going at once; `on_demand_floor` keeps that share of
the median forecast load on on-demand capacity.

Provisioned concurrency costs $/GB-s while configured but bills invocations at a lower duration
rate, so a provisioned environment pays for itself when busy more than
u* = provisioned / (on-demand duration - provisioned duration) of the time: with AWS x86 prices
0.0000041667 / (0.0000166667 - 0.0000097222) = 0.60. The warm count is therefore the
(1 - u*) = 40th percentile of the expected number of busy spill environments (Little's law:
spilled req/s x function latency), which also spares those requests a cold start.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from controller.planner import QUANTILES, PlanOption, PlanProblem, solve
from controller.policies.base import (BasePolicy, ForecastNeed, PolicyContext, fit_caps, register,
                                      spill_threshold_ms)
from controller.types import Decision, Snapshot, hold_unless_fresh
from provisioners.base import PENDING, READY

SPOT_NOTICE_S = 120.0
LEAD_QUANTILE = 0.9       # plan for a launch that is slower than 9 in 10
Z_QUANTILES = norm.ppf(QUANTILES)   # standard normal at the planner's quantile grid


@dataclass(frozen=True)
class HybridState:
    lower_since_s: float | None = None   # since when the plan has asked for fewer instances


def planning_lead_s(ctx: PolicyContext) -> float:
    """The slowest kind's p90 launch-to-ready delay: how far ahead capacity must be planned."""
    return max(o.instance.launch_to_ready_s.quantile(LEAD_QUANTILE) for o in ctx.scenario.options)


@register("hybrid")
class Hybrid(BasePolicy):
    def initial_state(self):
        return HybridState()

    def forecast_need(self, ctx: PolicyContext) -> ForecastNeed:
        return ForecastNeed(planning_lead_s(ctx) + ctx.config.policies.hybrid.plan_window_s, QUANTILES)

    def decide(self, snapshot: Snapshot, forecast, ctx: PolicyContext, state: HybridState):
        if (held := hold_unless_fresh(snapshot)) is not None:
            return held, state
        cfg, scen = ctx.config, ctx.scenario
        hcfg = cfg.policies.hybrid
        lead = planning_lead_s(ctx)
        now = snapshot.now_s
        early, late, basis = _load_windows(snapshot, forecast, lead, hcfg.plan_window_s, cfg.forecast.step_s,
                                           hcfg.cold_start_cv)
        markets = cfg.fleet.markets
        floor = (hcfg.on_demand_floor * float(np.max(late[:, QUANTILES.index(0.5)]))
                 if "spot" in markets and "on-demand" in markets else 0.0)
        problem = PlanProblem(_options(snapshot, ctx, lead), cfg.forecast.step_s, early, late,
                              scen.function_usd_per_request, cfg.budget.max_usd_per_h, floor,
                              cfg.fleet.max_instances_per_type)
        plan = solve(problem)
        wanted = dict(plan.counts)
        current = snapshot.counts()
        fewer = any(wanted.get(k, 0) < n for k, n in current.items())
        state_next = HybridState(state.lower_since_s if fewer and state.lower_since_s is not None else
                                 (now if fewer else None))
        held = ""
        if fewer and now - state_next.lower_since_s < hcfg.scale_in_hold_s:
            for k, n in current.items():
                wanted[k] = max(wanted.get(k, 0), n)
            held = (f"; scale-in held {now - state_next.lower_since_s:.0f} of {hcfg.scale_in_hold_s:g} s")
        wanted, capped = fit_caps(wanted, ctx)   # a held fleet may sit above a lowered budget
        functions = scen.function is not None
        threshold, spill_text = spill_threshold_ms(ctx, set(wanted))
        warm = _warm_concurrency(problem, plan, ctx) if functions else 0
        mix = ", ".join(f"{n}x {k[0]} {k[1]}" for k, n in sorted(plan.late_counts)) or "no instances"
        bridge = sum(n for _, n in plan.counts) - sum(n for _, n in plan.late_counts)
        reason = (f"hybrid: {basis}; lead {lead:.0f} s + window {hcfg.plan_window_s:g} s; "
                  f"plan {mix} ({plan.capacity_rps:,.0f} req/s, +{plan.launches} -{plan.removals}"
                  + (f", {bridge} kept until launches are ready" if bridge > 0 else "") + "), "
                  f"expected spill {plan.expected_spill_rps:,.1f} req/s"
                  + (f", on-demand floor {floor:,.0f} req/s" if floor else "")
                  + (f"; {spill_text}; {warm} provisioned" if functions else "; functions disabled")
                  + held + (f"; {capped}" if capped else "") + (f"; {plan.note}" if plan.note else ""))
        decision = Decision(Decision.make_targets(wanted), reason, spill_enabled=functions,
                            spill_threshold_ms=threshold if functions else math.inf,
                            warm_concurrency=warm, function_memory_mb=cfg.functions.memory_mb,
                            extra=(("expected_spill_rps", plan.expected_spill_rps),
                                   ("plan_capacity_rps", plan.capacity_rps), ("lead_s", lead)))
        return decision, state_next


def _load_windows(snapshot: Snapshot, forecast, lead_s: float, window_s: float, step_s: float, cv: float):
    """Quantile rows of the load per step before (early) and after (late) the launch lead.

    Without a forecast (no forecaster, or less than a day of history) the observed rate is the
    median and the load is taken as normal with coefficient of variation `cv` over the lead:
    e.g. 3,000 req/s observed with cv 0.1 gives a p99 of 3,000 x (1 + 2.33 x 0.1) = 3,698 req/s.
    """
    now = snapshot.now_s
    n_early = max(1, int(math.ceil(lead_s / step_s - 1e-9)))
    n_late = max(1, int(math.ceil(window_s / step_s - 1e-9)))
    if forecast is None:
        rps = snapshot.observation.arrival_rps
        row = np.maximum(rps * (1.0 + cv * Z_QUANTILES), 0.0)
        return (np.tile(row, (n_early, 1)), np.tile(row, (n_late, 1)),
                f"no forecast yet: observed {rps:,.0f} req/s, cv {cv:g}")
    rows = np.asarray(forecast.rps, dtype=float)
    first = int(math.floor((now - forecast.origin_s) / forecast.step_s + 1e-9))
    idx = np.clip(np.arange(first, first + n_early + n_late), 0, rows.shape[0] - 1)
    early, late = rows[idx[:n_early]], rows[idx[n_early:]]
    p50, p99 = QUANTILES.index(0.5), QUANTILES.index(0.99)
    basis = (f"forecast peak p50 {late[:, p50].max():,.0f} / p99 {late[:, p99].max():,.0f} req/s "
             f"({forecast.reason.split(':')[0]})")
    return early, late, basis


def _options(snapshot: Snapshot, ctx: PolicyContext, lead_s: float) -> tuple[PlanOption, ...]:
    now = snapshot.now_s
    f = ctx.scenario.function_usd_per_request
    out = []
    for opt in ctx.scenario.options:
        live = snapshot.live(opt.key)
        ready = sum(r.state == READY for r in live)
        pending = [r for r in live if r.state == PENDING]
        median_boot = opt.instance.launch_to_ready_s.quantile(0.5)
        # a pending instance serves the part of the early window after its expected ready time
        shares = [min(max((now + lead_s - (r.launched_at_s + median_boot)) / lead_s, 0.0), 1.0) for r in pending]
        price = opt.usd_per_h
        if opt.key[1] == "spot" and math.isfinite(f):
            gap_s = max(lead_s - SPOT_NOTICE_S, 0.0)
            price += opt.instance.spot_interruptions_per_h * opt.capacity_rps * gap_s * f
        # The planner prices the load beyond what the fleet serves within the SLO, and the router
        # spills exactly that: so a kind counts with the most it serves within the SLO (g6.xlarge:
        # 64 x 1000 / 30.2 ms = 2,118 req/s), not with capacity_rps_at_slo, whose 10% headroom
        # would make the planner pay twice for the same risk (measured: 3-6% dearer fleets).
        out.append(PlanOption(opt.key, ctx.scenario.slo_throughput_rps[opt.key], price, ready,
                              len(pending), float(np.mean(shares)) if shares else 0.0))
    return tuple(out)


def _warm_concurrency(problem: PlanProblem, plan, ctx: PolicyContext) -> int:
    """Provisioned environments: the (1 - u*) quantile of busy spill environments (docstring)."""
    pricing = ctx.scenario.catalog.functions
    gap = pricing.usd_per_gb_s - pricing.provisioned_duration_usd_per_gb_s
    if gap <= 0:
        return 0
    busy_share = pricing.provisioned_usd_per_gb_s / gap
    if busy_share >= 1.0:
        return 0
    latency_s = ctx.scenario.function.latency_ms(1) / 1000.0
    level = 1.0 - busy_share
    late_q = np.array([np.interp(level, QUANTILES, row) for row in problem.late])
    spill_rps = float(np.max(np.maximum(late_q - plan.capacity_rps, 0.0)))
    warm = int(math.floor(spill_rps * latency_s))
    return min(warm, ctx.config.functions.max_concurrency)

