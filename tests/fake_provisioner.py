"""Test stand-ins for the daemon's external systems, with state that outlives a process.

`FileProvisioner`: a cloud API whose instances persist in a JSON file, each tagged with its
fleet (describe() returns only its own fleet's instances, as an EC2 describe filtered by the
spillway:fleet tag does) and with the decision id that launched it. A daemon killed and
restarted describes what an earlier process launched. Writes are atomic (write + rename), so a
SIGKILL leaves the file before or after a launch, never half of one; `launch_delay_s` stands
for the API's latency and widens the window in which a kill lands mid-decision.

`ScriptedRouter`: the router's counters for a load that follows a fixed schedule of wall-clock
time, so every process (and a restarted daemon) reads the same load at the same instant.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from pathlib import Path

from controller.daemon_observe import RouterReading
from provisioners.base import READY, TERMINATED, InstanceRecord, LaunchSpec


class FileProvisioner:
    """Instances kept in a JSON file, ready at once."""

    def __init__(self, path: Path, clock, fleet: str = "spillway", launch_delay_s: float = 0.0):
        self.path, self.clock, self.fleet, self.launch_delay_s = Path(path), clock, fleet, launch_delay_s

    def _load_all(self) -> list[dict]:
        return json.loads(self.path.read_text()) if self.path.exists() else []

    def _save_all(self, rows: list[dict]) -> None:
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(rows))
        os.replace(tmp, self.path)

    def add(self, records: list[InstanceRecord]) -> None:
        """Put `records` into this fleet as they are (a test's starting fleet)."""
        self._save_all(self._load_all() + [{"fleet": self.fleet, **dataclasses.asdict(r)} for r in records])

    def launch(self, spec: LaunchSpec) -> list[InstanceRecord]:
        # Half the latency before the instances exist, half after (the response on its way
        # back): a kill in the second half leaves instances the caller never heard of.
        time.sleep(self.launch_delay_s / 2)
        rows = self._load_all()
        now = self.clock()
        new = [InstanceRecord(f"i-{len(rows) + k}", spec.instance_type, spec.market, READY, now, now, None,
                              spec.decision_id) for k in range(spec.count)]
        self._save_all(rows + [{"fleet": self.fleet, **dataclasses.asdict(r)} for r in new])
        time.sleep(self.launch_delay_s / 2)
        return new

    def terminate(self, ids) -> None:
        now = self.clock()
        self._save_all([{**row, "state": TERMINATED, "terminated_at_s": now}
                        if row["fleet"] == self.fleet and row["id"] in ids else row for row in self._load_all()])

    def describe(self) -> list[InstanceRecord]:
        return [InstanceRecord(**{k: v for k, v in row.items() if k != "fleet"})
                for row in self._load_all() if row["fleet"] == self.fleet]


class ScriptedRouter:
    """Router counters for a load of levels_rps[i] during the i-th `step_s` of wall time
    (cycling): e.g. levels (20, 200), step 1 s: 20 req/s in even seconds, 200 in odd ones, so
    at t = 10.5 s the cumulative count is 5 x 220 + 0.5 x 20 = 1,110. Every request is answered
    within 50 ms on the instance path; the spill rule is accepted and ignored."""

    def __init__(self, levels_rps: tuple[float, ...], step_s: float, clock=time.time):
        self.levels_rps, self.step_s, self.clock = tuple(levels_rps), step_s, clock

    def requests_until(self, t_s: float) -> float:
        n = math.floor(t_s / self.step_s)
        cycles, rest = divmod(n, len(self.levels_rps))
        return self.step_s * (cycles * sum(self.levels_rps) + sum(self.levels_rps[:rest])) \
            + self.levels_rps[rest] * (t_s - n * self.step_s)

    def read(self, at_s: float) -> RouterReading:
        total = self.requests_until(at_s)
        return RouterReading(at_s, {"instance": total}, ((0.05, total), (math.inf, total)))

    def set_spill_rule(self, enabled: bool, threshold_ms: float) -> None:
        pass
