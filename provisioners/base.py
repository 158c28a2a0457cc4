"""The provisioner contract: a few verbs with dataclass inputs and outputs.

The controller loop reconciles a Decision against `describe()` through these verbs only, so the
same loop drives the simulator (`provisioners.sim`), the local stack and AWS. Implementations own
their clock: the simulator's provisioner reads the simulated clock, AWS reads EC2's launch times.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

PENDING, READY, DRAINING, TERMINATED = "pending", "ready", "draining", "terminated"


@dataclass(frozen=True)
class LaunchSpec:
    instance_type: str
    market: str          # "on-demand" | "spot"
    count: int
    decision_id: str     # tags every launch, so a retried launch can be recognised


@dataclass(frozen=True)
class InstanceRecord:
    id: str
    instance_type: str
    market: str
    state: str                       # pending | ready | draining | terminated
    launched_at_s: float             # billing starts here
    ready_at_s: float | None = None  # None until the model server answers ready
    terminated_at_s: float | None = None
    decision_id: str = ""


@dataclass(frozen=True)
class FunctionSpec:
    memory_mb: int
    warm_concurrency: int   # provisioned (pre-warmed) execution environments
    max_concurrency: int


class InstanceProvisioner(Protocol):
    def launch(self, spec: LaunchSpec) -> list[InstanceRecord]: ...
    def terminate(self, ids: list[str]) -> None: ...
    def describe(self) -> list[InstanceRecord]: ...


class FunctionProvisioner(Protocol):
    def configure(self, spec: FunctionSpec) -> None: ...
    def describe_function(self) -> FunctionSpec: ...
