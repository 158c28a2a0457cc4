"""reactive-faas: reactive target tracking for the instances, with overflow to functions.

The design of Spock (Gunasekaran et al., CLOUD 2019) and of most "serverless burst" setups:
instances scale on observed load exactly as `reactive` does (same keys under
[policies.reactive]), and whatever the instances cannot serve within the SLO spills to
functions instead of queueing. No forecast, no provisioned concurrency.
"""
from __future__ import annotations

import dataclasses

from controller.policies.base import PolicyContext, register, spill_threshold_ms
from controller.policies.reactive import Reactive
from controller.types import Snapshot


@register("reactive-faas")
class ReactiveFaas(Reactive):
    def decide(self, snapshot: Snapshot, forecast, ctx: PolicyContext, state):
        decision, state_next = super().decide(snapshot, forecast, ctx, state)
        if ctx.scenario.function is None:
            return dataclasses.replace(decision, reason=decision.reason + "; functions disabled"), state_next
        threshold, spill_text = spill_threshold_ms(ctx, set(dict(decision.targets)))
        return dataclasses.replace(decision, spill_enabled=True, spill_threshold_ms=threshold,
                                   function_memory_mb=ctx.config.functions.memory_mb,
                                   reason=f"{decision.reason}; overflow: {spill_text}"), state_next
