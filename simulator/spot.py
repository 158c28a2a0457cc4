"""Spot interruptions: when EC2 reclaims each spot instance.

Two sources, chosen by `simulation.spot_interruptions`:
- "hazard": each spot instance draws its lifetime from an exponential distribution with the
  catalog's per-hour interruption rate (memoryless, the simplest model consistent with the Spot
  Advisor's monthly bands). E.g. 1.44e-4 per hour gives a mean lifetime of 6,944 h, so a fleet of
  10 spot instances for a day sees 10 * 24 * 1.44e-4 = 0.035 interruptions on average.
- a CSV file with columns time_s,instance_type: a replayed interruption trace; at each time the
  oldest running spot instance of that type gets the notice (none running: the event is skipped).
- "off": no interruptions.
EC2 gives a two-minute notice (the instance-action metadata and an EventBridge event), then
reclaims the instance.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from controller.config import ConfigError
from provisioners.catalog import Catalog
from simulator.fleet import SimFleet, SimInstance

NOTICE_S = 120.0


class SpotInterruptions:
    def __init__(self, mode: str, catalog: Catalog, rng: np.random.Generator):
        self.mode, self.catalog, self.rng = mode, catalog, rng
        self.events: list[tuple[float, str]] = []
        self._next_event = 0
        if mode not in ("hazard", "off"):
            self.events = _read_replay(mode)

    def on_launch(self, inst: SimInstance) -> None:
        if inst.market != "spot" or self.mode != "hazard":
            return
        rate_per_s = self.catalog.instance(inst.instance_type).spot_interruptions_per_h / 3600.0
        if rate_per_s > 0:
            inst.reclaim_at_s = inst.launched_at_s + self.rng.exponential(1.0 / rate_per_s)

    def notices_until(self, fleet: SimFleet, t1: float) -> None:
        """Give notices due before t1 (replayed events pick their victim now)."""
        while self._next_event < len(self.events) and self.events[self._next_event][0] < t1:
            at, itype = self.events[self._next_event]
            self._next_event += 1
            running = [i for i in fleet.instances.values() if i.market == "spot" and i.instance_type == itype
                       and i.ended_at_s is None and math.isinf(i.reclaim_at_s) and i.launched_at_s <= at]
            if running:
                min(running, key=lambda i: i.launched_at_s).reclaim_at_s = at + NOTICE_S
        for inst in fleet.instances.values():
            notice_at = inst.reclaim_at_s - NOTICE_S
            if notice_at < t1 and inst.ended_at_s is None and not inst.reclaimed:
                fleet.notice(inst, max(notice_at, inst.launched_at_s))


def _read_replay(path: str) -> list[tuple[float, str]]:
    p = Path(path)
    where = f"simulation.spot_interruptions = {path!r}"
    if not p.is_file():
        raise ConfigError(f"{where}: not 'hazard', 'off' or an existing CSV file")
    try:
        df = pd.read_csv(p)
    except (ValueError, pd.errors.ParserError) as exc:
        raise ConfigError(f"{where}: not a readable CSV ({' '.join(str(exc).split())})") from None
    if list(df.columns[:2]) != ["time_s", "instance_type"]:
        raise ConfigError(f"{where}: needs the columns time_s,instance_type; found {','.join(map(str, df.columns))}")
    times = pd.to_numeric(df["time_s"], errors="coerce")
    if times.isna().any() or (times < 0).any():
        raise ConfigError(f"{where}: time_s must be numbers >= 0")
    return sorted(zip(times.astype(float), df["instance_type"].astype(str)))
