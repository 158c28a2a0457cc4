"""reactive: target tracking on observed load, as SageMaker, Kubernetes HPA and Cortex do it.

desired = ceil(observed_rps / (capacity_rps * target_utilization)) on the cheapest kind per
request. E.g. 700 req/s observed, 155 req/s per instance at the SLO, target 0.7:
ceil(700 / 108.5) = 7. Scale-out waits `scale_out_cooldown_s` after the last scale-out; scale-in
waits `scale_in_cooldown_s` after any scaling (a scale-out restarts the scale-in cooldown, as in
AWS Application Auto Scaling). No functions: overflow queues at the instances.
"""
from __future__ import annotations

from dataclasses import dataclass

from controller.policies.base import BasePolicy, PolicyContext, fit_caps, instances_for, register
from controller.types import Decision, Snapshot, hold_unless_fresh


@dataclass(frozen=True)
class ReactiveState:
    last_scale_out_s: float = float("-inf")
    last_scale_in_s: float = float("-inf")


@register("reactive")
class Reactive(BasePolicy):
    def initial_state(self):
        return ReactiveState()

    def decide(self, snapshot: Snapshot, forecast, ctx: PolicyContext, state: ReactiveState):
        if (held := hold_unless_fresh(snapshot)) is not None:
            return held, state
        cfg = ctx.config.policies.reactive
        opt = ctx.scenario.cheapest("on-demand" if "on-demand" in ctx.config.fleet.markets else None)
        rps = snapshot.observation.arrival_rps
        desired = max(instances_for(rps, opt.capacity_rps * cfg.target_utilization),
                      ctx.config.fleet.min_instances, 1)
        current = len(snapshot.live(opt.key))
        now = snapshot.now_s
        basis = (f"{rps:.0f} req/s / ({opt.capacity_rps:.0f} req/s per {opt.key[0]} x "
                 f"{cfg.target_utilization:g} target) -> {desired}")
        target, state_next = current, state
        if desired > current:
            if now - state.last_scale_out_s >= cfg.scale_out_cooldown_s:
                target, state_next = desired, ReactiveState(now, state.last_scale_in_s)
                verb = f"scale out {current} -> {desired}"
            else:
                verb = f"scale-out cooldown, hold {current}"
        elif desired < current:
            since = now - max(state.last_scale_in_s, state.last_scale_out_s)
            if since >= cfg.scale_in_cooldown_s:
                target, state_next = desired, ReactiveState(state.last_scale_out_s, now)
                verb = f"scale in {current} -> {desired}"
            else:
                verb = f"scale-in cooldown, hold {current}"
        else:
            verb = f"steady at {current}"
        counts, capped = fit_caps({opt.key: target}, ctx)
        reason = f"{self.name}: {basis}; {verb}" + (f"; {capped}" if capped else "")
        return Decision(Decision.make_targets(counts), reason), state_next
