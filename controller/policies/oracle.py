"""oracle: replays the integer schedule of controller.oracle, computed from the whole trace.

Perfect knowledge of the load, not of random boot times: an instance asked for now is ready
after the type's launch_to_ready_s, so the target of each kind at `now` is the schedule's maximum
over [now, now + lead], the lead being the p95 launch delay of that type (231 s for the bundled
GPU types: lognormal median 150 s, p90 210 s). E.g. at now = 600 s with 3 g6.xlarge scheduled
for 600-840 s and 4 for 840-900 s, the target is already 4: the fourth is ready by 840 s in 95%
of launches, and none is terminated while a bin within the lead still needs it.
Functions take what the router spills (the rule from the SLO, as for every policy); when caps or
the budget leave scheduled load uncovered, that load's concurrency is provisioned warm.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from controller.oracle import LEAD_QUANTILE, OracleSchedule, launch_lead_s, oracle_schedule
from controller.policies.base import BasePolicy, PolicyContext, fit_caps, register, spill_threshold_ms
from controller.types import Decision, Snapshot, hold
from provisioners.base import READY


@dataclass(frozen=True)
class OracleState:
    schedule: OracleSchedule | None = None      # computed on the first decision


@register("oracle")
class Oracle(BasePolicy):
    def initial_state(self):
        return OracleState()

    def decide(self, snapshot: Snapshot, forecast, ctx: PolicyContext, state: OracleState):
        if ctx.trace is None:
            return hold(snapshot, None, "the oracle needs the whole trace in advance, "
                                        "which exists only in simulation"), state
        cfg, scen = ctx.config, ctx.scenario
        sched = state.schedule or oracle_schedule(ctx.trace, scen, cfg)
        now = snapshot.now_s
        counts, lead_max = {}, 0.0
        for j, key in enumerate(sched.keys):
            lead = launch_lead_s(scen, key[0])
            lead_max = max(lead_max, lead)
            counts[key] = int(sched.counts[sched.bins(now, now + lead), j].max())
        floor = cfg.fleet.min_instances - sum(counts.values())
        if floor > 0:
            counts[scen.cheapest().key] += floor
        held = _hold_until_replaced(snapshot, counts, sched, ctx)
        counts, capped = fit_caps(counts, ctx)   # holding old kinds must not break caps or budget
        window = sched.bins(now, now + lead_max)
        peak = float(sched.peak_rps[window].max())
        fleet = " + ".join(f"{n} {k[0]}" + ("" if k[1] == "on-demand" else f" ({k[1]})")
                           for k, n in sorted(counts.items()) if n) or "no instances"
        reason = (f"oracle: schedule asks {fleet} for a peak second of {peak:,.0f} req/s within the next "
                  f"{lead_max:.0f} s (p{LEAD_QUANTILE * 100:.0f} launch lead; cheapest integer fleet at "
                  f"capacity_rps_at_slo)")
        if held:
            reason += f"; {held}"
        if floor > 0:
            reason += f"; fleet.min_instances = {cfg.fleet.min_instances}"
        if capped:
            reason += f"; {capped}"
        if scen.function is None:
            return Decision(Decision.make_targets(counts), reason), OracleState(sched)
        threshold, rule = spill_threshold_ms(ctx)
        uncovered = float(sched.uncovered_rps[window].max())
        warm = min(math.ceil(uncovered * scen.function.latency_ms(1) / 1000.0), cfg.functions.max_concurrency)
        reason += f"; {rule}" + (f"; {warm} warm functions for {uncovered:,.0f} req/s beyond caps/budget"
                                 if warm else "")
        return Decision(Decision.make_targets(counts), reason, spill_enabled=True, spill_threshold_ms=threshold,
                        warm_concurrency=warm, function_memory_mb=cfg.functions.memory_mb,
                        extra=(("peak_rps", peak), ("uncovered_rps", uncovered))), OracleState(sched)


def _hold_until_replaced(snapshot: Snapshot, counts: dict, sched: OracleSchedule, ctx: PolicyContext) -> str:
    """Make before break: when the schedule switches kinds (e.g. 2 g4dn.xlarge -> 1 g6.xlarge) and
    the new instance is still booting (5% of launches take longer than the lead), keep the old ones
    until the ready instances that would remain cover the peak until the next decision. Scale-in
    removes pending instances first, so min(target, ready) of each kind remains. Updates `counts`."""
    scen = ctx.scenario
    need = float(sched.peak_rps[sched.bins(snapshot.now_s, snapshot.now_s + ctx.config.controller.interval_s)].max())
    ready: dict = {}
    for r in snapshot.fleet:
        if r.state == READY:
            ready[(r.instance_type, r.market)] = ready.get((r.instance_type, r.market), 0) + 1
    kept = sum(min(counts.get(k, 0), n) * scen.option(k).capacity_rps for k, n in ready.items())
    live = snapshot.counts()
    shrinking = {k: n for k, n in live.items() if counts.get(k, 0) < n}
    if kept >= need or not shrinking:
        return ""
    counts.update(shrinking)
    return (f"scale-in of {', '.join(k[0] for k in sorted(shrinking))} held: the ready fleet left would serve "
            f"{kept:,.0f} of {need:,.0f} req/s until replacements are ready")
