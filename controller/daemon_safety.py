"""The daemon's guards between the control loop and the real provisioners, and its JSON logs.

`GuardedInstances` wraps an InstanceProvisioner for the loop:
- dry-run: launch and terminate do nothing (and log what they would have done);
- budget guard: a launch that would take the fleet's $/h over budget.max_usd_per_h is trimmed
  to what fits. The policies already clamp their targets (fit_caps); this second check counts
  the fleet as it really is -- draining instances still bill -- e.g. budget 1.0 $/h, 0.085 $/h
  per instance, 11 billed (0.935 $/h): one more would reach 1.02 $/h, so the launch is refused;
- launches carry the daemon's decision id (unique across restarts; the daemon passes it to
  ControlLoop.tick), so a restarted daemon can tell which decision launched what; `decision_id`
  here only labels the terminate logs.
The launch rate limit (budget.max_launches_per_interval) is the loop's own.
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import replace

from provisioners.base import TERMINATED, FunctionSpec, InstanceRecord, LaunchSpec

log = logging.getLogger("spillway.daemon")


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, event, and the record's `fields`."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": round(record.created, 3), "level": record.levelname.lower(), "logger": record.name,
               "event": record.getMessage()}
        out.update(getattr(record, "fields", {}))
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info).splitlines()[-1]
        return json.dumps(out, default=_jsonable)


def _jsonable(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return str(value)


def log_event(event: str, level: int = logging.INFO, **fields) -> None:
    log.log(level, event, extra={"fields": fields})


def usd_per_h(records: list[InstanceRecord], price_of) -> float:
    """Spend rate of the instances still billed (pending, ready, draining)."""
    return sum(price_of((r.instance_type, r.market)) for r in records if r.state != TERMINATED)


class GuardedInstances:
    def __init__(self, inner, price_of, max_usd_per_h: float, dry_run: bool):
        self.inner, self.price_of = inner, price_of
        self.max_usd_per_h, self.dry_run = max_usd_per_h, dry_run
        self.decision_id = ""
        self.refused = 0        # launches the budget guard refused in the current tick

    def launch(self, spec: LaunchSpec) -> list[InstanceRecord]:
        price = self.price_of((spec.instance_type, spec.market))
        now_usd_per_h = usd_per_h(self.inner.describe(), self.price_of)
        room = self.max_usd_per_h - now_usd_per_h
        fits = spec.count if price <= 0 else max(0, min(spec.count, math.floor(room / price + 1e-9)))
        if fits < spec.count:
            self.refused += spec.count - fits
            log_event("budget_guard", logging.WARNING, decision_id=spec.decision_id,
                      instance_type=spec.instance_type, market=spec.market, asked=spec.count, allowed=fits,
                      fleet_usd_per_h=round(now_usd_per_h, 4), max_usd_per_h=self.max_usd_per_h)
        if fits == 0:
            return []
        spec = replace(spec, count=fits)
        if self.dry_run:
            log_event("dry_run_launch", decision_id=spec.decision_id, instance_type=spec.instance_type,
                      market=spec.market, count=spec.count)
            return []
        started = time.perf_counter()
        records = self.inner.launch(spec)
        log_event("launch", decision_id=spec.decision_id, instance_type=spec.instance_type, market=spec.market,
                  count=spec.count, ids=[r.id for r in records], seconds=round(time.perf_counter() - started, 3))
        return records

    def terminate(self, ids: list[str]) -> None:
        if self.dry_run:
            log_event("dry_run_terminate", decision_id=self.decision_id, ids=list(ids))
            return
        self.inner.terminate(ids)
        log_event("terminate", decision_id=self.decision_id, ids=list(ids))

    def describe(self) -> list[InstanceRecord]:
        return self.inner.describe()


class GuardedFunctions:
    def __init__(self, inner, dry_run: bool):
        self.inner, self.dry_run = inner, dry_run

    def configure(self, spec: FunctionSpec) -> None:
        if self.dry_run:
            log_event("dry_run_configure_functions", warm_concurrency=spec.warm_concurrency,
                      memory_mb=spec.memory_mb)
            return
        self.inner.configure(spec)
        log_event("configure_functions", warm_concurrency=spec.warm_concurrency, memory_mb=spec.memory_mb)

    def describe_function(self) -> FunctionSpec:
        return self.inner.describe_function()
