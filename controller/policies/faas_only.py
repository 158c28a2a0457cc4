"""faas-only: no instances; every request goes to serverless functions."""
from __future__ import annotations

from controller.policies.base import BasePolicy, PolicyContext, register
from controller.types import Decision, Snapshot


@register("faas-only")
class FaasOnly(BasePolicy):
    def decide(self, snapshot: Snapshot, forecast, ctx: PolicyContext, state):
        fn = ctx.config.functions
        return Decision(targets=(), spill_enabled=True, spill_threshold_ms=0.0,
                        warm_concurrency=fn.warm_concurrency, function_memory_mb=fn.memory_mb,
                        reason=f"faas-only: every request to {fn.memory_mb} MB functions, "
                               f"{fn.warm_concurrency} provisioned"), state
