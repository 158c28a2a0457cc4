"""fixed: a hand-set fleet, optionally with overflow to functions.

What a team runs today when it sizes by hand, and what the local stack (`spillway serve`) runs
before a controller drives it: `[policies.fixed] instances` of one kind, never changed. With
`spill = true` the router sends what the fleet cannot serve within the SLO to functions (the
same spill rule as the other policies), with `[functions] warm_concurrency` provisioned. Used by the fidelity benchmark to replay one trace
through the real local stack and through the simulator with the same fleet.
"""
from __future__ import annotations

from controller.config import ConfigError
from controller.policies.base import BasePolicy, PolicyContext, fit_caps, register, spill_threshold_ms
from controller.types import Decision, Snapshot


@register("fixed")
class Fixed(BasePolicy):
    def decide(self, snapshot: Snapshot, forecast, ctx: PolicyContext, state):
        cfg = ctx.config.policies.fixed
        if cfg.instance_type:
            try:
                opt = ctx.scenario.option((cfg.instance_type, cfg.market))
            except KeyError:
                allowed = ", ".join(sorted({k for (k, m) in (o.key for o in ctx.scenario.options)}))
                raise ConfigError(f"policies.fixed.instance_type = {cfg.instance_type!r}: not an allowed kind "
                                  f"in market {cfg.market!r} that meets the SLO (allowed: {allowed})") from None
        else:
            opt = ctx.scenario.cheapest(cfg.market)
        counts, capped = fit_caps({opt.key: cfg.instances}, ctx)
        reason = f"fixed: {cfg.instances} x {opt.key[0]} ({opt.key[1]})" + (f"; {capped}" if capped else "")
        decision = Decision(Decision.make_targets(counts), reason)
        if not (cfg.spill and ctx.scenario.function is not None):
            return decision, state
        threshold, spill_text = spill_threshold_ms(ctx, {opt.key})
        warm = ctx.config.functions.warm_concurrency
        return Decision(decision.targets, f"{reason}; overflow: {spill_text}; {warm} provisioned",
                        spill_enabled=True, spill_threshold_ms=threshold, warm_concurrency=warm,
                        function_memory_mb=ctx.config.functions.memory_mb), state
