"""static-peak: a constant fleet sized for the peak load, the way many teams provision by hand.

Sized on the cheapest kind per request at the SLO: n = ceil(peak * headroom / capacity).
E.g. a 1-minute peak of 612 req/s, headroom 1.0 and 155 req/s per instance gives ceil(3.95) = 4.
"""
from __future__ import annotations

from controller.policies.base import BasePolicy, PolicyContext, fit_caps, instances_for, register
from controller.types import Decision, Snapshot, hold


@register("static-peak")
class StaticPeak(BasePolicy):
    def decide(self, snapshot: Snapshot, forecast, ctx: PolicyContext, state):
        cfg = ctx.config.policies.static_peak
        peak = cfg.peak_rps or ctx.trace_peak_rps
        if not peak:
            return hold(snapshot, None, "static-peak needs policies.static-peak.peak_rps "
                                        "(the trace peak is known only in simulation)"), state
        opt = ctx.scenario.cheapest("on-demand" if "on-demand" in ctx.config.fleet.markets else None)
        n = max(instances_for(peak * cfg.headroom, opt.capacity_rps), ctx.config.fleet.min_instances, 1)
        counts, capped = fit_caps({opt.key: n}, ctx)
        reason = (f"static-peak: peak {peak:.0f} req/s x {cfg.headroom:g} / {opt.capacity_rps:.0f} req/s "
                  f"per {opt.key[0]} ({opt.key[1]}, cheapest per request) -> {n}")
        return Decision(Decision.make_targets(counts), reason + (f"; {capped}" if capped else "")), state
