"""mark: MArk's proactive greedy (Zhang et al., USENIX ATC 2019), as its paper describes it.

- Provision for headroom x the highest point forecast (the median) over the lookahead window:
  e.g. a forecast peaking at 4,000 req/s with 1.2 headroom asks for 4,800 req/s.
- Fill the gap greedily with the kind of the lowest cost per request it will actually serve,
  charging every launch `launch_charge_s` of running time: cost per request of kind k =
  price_k (lookahead + charge) / (min(capacity_k, gap) x lookahead). E.g. a 900 req/s gap over
  300 s: g6.xlarge (1,906 req/s, $0.8048/h) 0.8048 x 480 / (900 x 300) vs g4dn.xlarge
  (1,083 req/s, $0.526/h) 0.526 x 480 / (900 x 300): g4dn wins for a small gap.
- Keep what runs; scale in only after `scale_in_decisions` consecutive decisions asked for
  fewer, then remove the dearest per request first.
- Requests the instances cannot serve within the SLO go to functions (MArk's "SLO-violation
  mitigation" with Lambda).
"""
from __future__ import annotations

from dataclasses import dataclass


from controller.planner import QUANTILES
from controller.policies.base import BasePolicy, ForecastNeed, PolicyContext, fit_caps, register, spill_threshold_ms
from controller.types import Decision, Snapshot, hold_unless_fresh


@dataclass(frozen=True)
class MarkState:
    lower_streak: int = 0      # consecutive decisions that asked for fewer instances


@register("mark")
class Mark(BasePolicy):
    def initial_state(self):
        return MarkState()

    def forecast_need(self, ctx: PolicyContext) -> ForecastNeed:
        return ForecastNeed(ctx.config.policies.mark.lookahead_s, QUANTILES)

    def decide(self, snapshot: Snapshot, forecast, ctx: PolicyContext, state: MarkState):
        if (held := hold_unless_fresh(snapshot)) is not None:
            return held, state
        mcfg = ctx.config.policies.mark
        now = snapshot.now_s
        if forecast is None:
            peak, basis = snapshot.observation.arrival_rps, "no forecast: observed"
        else:
            peak = float(forecast.peak(now, now + mcfg.lookahead_s)[QUANTILES.index(0.5)])
            basis = "forecast median peak"
        target = mcfg.headroom * peak
        current = snapshot.counts()
        wanted = _greedy_fill(dict(current), target, ctx)
        scen = ctx.scenario
        fewer = scen.capacity_rps(wanted) < scen.capacity_rps(current) or sum(wanted.values()) < sum(current.values())
        streak = state.lower_streak + 1 if fewer else 0
        if fewer and streak < mcfg.scale_in_decisions:
            wanted, verb = current, f"scale-in wait {streak}/{mcfg.scale_in_decisions}"
        else:
            verb = "scale in" if fewer else "fill"
            streak = 0 if fewer else streak
        counts, capped = fit_caps(wanted, ctx)
        decision_keys = {k for k, n in counts.items() if n}
        threshold, spill_text = spill_threshold_ms(ctx, decision_keys)
        functions = scen.function is not None
        mix = ", ".join(f"{n}x {k[0]} {k[1]}" for k, n in sorted(counts.items()) if n) or "no instances"
        reason = (f"mark: {basis} {peak:,.0f} req/s x {mcfg.headroom:g} = {target:,.0f} req/s; {verb}: {mix}"
                  + (f"; {spill_text}" if functions else "") + (f"; {capped}" if capped else ""))
        return Decision(Decision.make_targets(counts), reason, spill_enabled=functions,
                        spill_threshold_ms=threshold if functions else float("inf"),
                        function_memory_mb=ctx.config.functions.memory_mb), MarkState(streak)


def _greedy_fill(counts: dict, target_rps: float, ctx: PolicyContext) -> dict:
    """Keep `counts`; add the cheapest kind per served request until `target_rps` is covered.
    Above the target, drop the dearest per request while the rest still covers it."""
    scen, mcfg = ctx.scenario, ctx.config.policies.mark
    window = mcfg.lookahead_s
    out = dict(counts)
    while (gap := target_rps - scen.capacity_rps(out)) > 1e-9:
        best = min(scen.options, key=lambda o: (o.usd_per_h * (window + mcfg.launch_charge_s)
                                                / (min(o.capacity_rps, gap) * window), o.key))
        out[best.key] = out.get(best.key, 0) + 1
    for opt in sorted(scen.options, key=lambda o: -o.usd_per_million):
        while out.get(opt.key, 0) > 0 and scen.capacity_rps(out) - opt.capacity_rps >= target_rps:
            out[opt.key] -= 1
    return {k: n for k, n in out.items() if n > 0}


