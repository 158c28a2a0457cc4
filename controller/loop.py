"""The control loop: observe -> decide -> reconcile, one tick at a time.

The loop owns no clock: the caller passes `now_s` (the simulator's clock, or the daemon's wall
clock). Reconciliation turns a Decision into provisioner verbs with the safety rules that apply
in every world: a launch rate limit, and scale-in that prefers instances which are not yet serving
or whose 60 s billing minimum is already paid.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Callable

from controller.policies import Policy, PolicyContext
from controller.types import Decision, Observation, Snapshot
from provisioners.base import PENDING, FunctionSpec, InstanceProvisioner, InstanceRecord, LaunchSpec


@dataclass(frozen=True)
class TickResult:
    decision: Decision
    launched: tuple[InstanceRecord, ...]
    terminated: tuple[str, ...]
    launch_limited: bool          # the launch rate limit held back some launches


@dataclass
class ControlLoop:
    policy: Policy
    ctx: PolicyContext
    instances: InstanceProvisioner
    functions: Any = None                    # FunctionProvisioner, or None when disabled
    forecaster: Any = None                   # controller.forecast.LoadForecaster, or None
    # Called with (decision, forecast) after the policy decides and before anything acts; what
    # it returns is acted on. The daemon records the decision durably here (record-before-act).
    before_acting: Callable[[Decision, Any], Decision] | None = None
    state: Any = None
    decision: Decision | None = None
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    def __post_init__(self):
        if self.state is None:
            self.state = self.policy.initial_state()

    def tick(self, now_s: float, observation: Observation | None, decision_id: str | None = None) -> TickResult:
        """One decision at `now_s`. Launches are tagged `decision_id`: the caller's (the daemon's
        ids are unique across restarts), else the loop's own counter d1, d2, ..."""
        snapshot = Snapshot(now_s=now_s, observation=observation, fleet=tuple(self.instances.describe()),
                            stale_after_s=self.ctx.config.controller.stale_after_s, last_decision=self.decision)
        forecast = None
        if self.forecaster is not None:
            self.forecaster.observe(observation)
            need = self.policy.forecast_need(self.ctx)
            if need is not None:
                forecast = self.forecaster.forecast(now_s, need.horizon_s, need.quantiles)
        decision, self.state = self.policy.decide(snapshot, forecast, self.ctx, self.state)
        if self.before_acting is not None:
            decision = self.before_acting(decision, forecast)
        if decision_id is None:
            decision_id = f"d{next(self._ids)}"
        launched, terminated, limited = self._reconcile(decision, snapshot, decision_id)
        if self.functions is not None and (self.decision is None
                                           or decision.warm_concurrency != self.decision.warm_concurrency
                                           or decision.function_memory_mb != self.decision.function_memory_mb):
            self.functions.configure(FunctionSpec(decision.function_memory_mb, decision.warm_concurrency,
                                                  self.ctx.config.functions.max_concurrency))
        self.decision = decision
        return TickResult(decision, tuple(launched), tuple(terminated), limited)

    def _reconcile(self, decision: Decision, snapshot: Snapshot, decision_id: str):
        wanted = dict(decision.targets)
        keys = sorted(set(wanted) | set(snapshot.counts()))
        budget = self.ctx.config.budget.max_launches_per_interval
        launched: list[InstanceRecord] = []
        terminated: list[str] = []
        limited = False
        for key in keys:
            live = snapshot.live(key)
            gap = wanted.get(key, 0) - len(live)
            if gap > 0:
                n = min(gap, budget - len(launched))
                limited |= n < gap
                if n > 0:
                    launched += self.instances.launch(LaunchSpec(key[0], key[1], n, decision_id))
            elif gap < 0:
                victims = [r.id for r in sorted(live, key=lambda r: _scale_in_order(r, snapshot.now_s))][:-gap]
                self.instances.terminate(victims)
                terminated += victims
        return launched, terminated, limited


def _scale_in_order(r: InstanceRecord, now_s: float) -> tuple:
    """Sort key: first instances not serving yet, then those past their 60 s billing minimum
    (their next second costs the same anywhere), newest first; last those still inside it."""
    paid_minimum = now_s - r.launched_at_s >= 60.0
    return (r.state != PENDING, not paid_minimum, -r.launched_at_s)

