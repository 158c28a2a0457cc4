"""The daemon: the simulator's control loop run for real, on the wall clock, by APScheduler jobs.

Jobs (one worker thread, so they never overlap and share the loop without locks):
  observe    every metrics_window_s / 6: read the router, turn the last window into an
             Observation (controller.daemon_observe), record it (leader only);
  decide     every interval_s: take or renew the leader lease -- not the leader: do nothing --
             then ControlLoop.tick(now, observation) with the same policies as the simulator.
             The decision is recorded (fenced by the lease) BEFORE anything acts on it, then the
             loop reconciles through the guarded provisioners (controller.daemon_safety), the
             spill rule goes to the router, and the decision is marked applied or failed;
  forecast   every forecast.step_s, for policies that forecast: record what the forecaster says;
  reconcile  every interval_s: describe the fleet into the store (and the cost rate);
  prices     every prices_every_s: rebuild the scenario from the catalog file. For the local
             catalog this re-reads a file that does not change: a no-op in effect.

Safety. "No fresh metrics => hold": when the router cannot be read no observation is made, the
last one ages past controller.stale_after_s and every policy holds the fleet (hold_unless_fresh);
an idle router is not stale (it is a measured 0 req/s, and policies keep min_instances >= 1).
Dry-run decides and records (reason suffixed "[dry-run: not applied]") and never launches,
terminates or touches the router or functions. Shutdown (stop()) ends the jobs, releases the
lease and leaves the fleet as it is: a daemon restarting, or another taking over, finds it and
reconciles from there. A decision left "planned" by a crash is settled by the next leader:
"applied" if the fleet matches its targets, else "failed" (then a fresh tick reconciles).

Time: epoch seconds from the injected clock; the forecaster counts its steps from the daemon's
start (LoadForecaster.start_at), not from time 0.
Policy state (e.g. reactive cooldowns) lives in memory and starts afresh after a restart.
"""
from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, replace
from typing import Callable

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from controller.config import Config
from controller.daemon_observe import ObservationWindow, RouterUnreachable, WindowStats
from controller.daemon_safety import GuardedFunctions, GuardedInstances, log_event, usd_per_h
from controller.loop import ControlLoop
from controller.metrics import DaemonMetrics
from controller.policies import PolicyContext, make_policy
from controller.run import make_load_forecaster
from controller.scenario import build_scenario
from controller.state import LeaseLost, StateError, StateStore
from controller.types import Decision, Observation

DRY_RUN_NOTE = " [dry-run: not applied]"


@dataclass(frozen=True)
class DaemonOptions:
    dry_run: bool = False
    provider: str = "local"                 # the store's provider column: local | aws
    lease_name: str = "spillway-controller"
    lease_ttl_s: float | None = None        # default 3 x interval_s: two missed ticks, then a takeover
    observe_every_s: float | None = None    # default metrics_window_s / 6
    prices_every_s: float = 3600.0
    metrics_port: int | None = None         # default [metrics] port; 0 = a free port


class Daemon:
    def __init__(self, cfg: Config, instance_provisioner, function_provisioner, router_control,
                 store: StateStore, clock: Callable[[], float] = time.time, holder_id: str | None = None,
                 options: DaemonOptions = DaemonOptions()):
        self.cfg, self.store, self.clock, self.router, self.options = cfg, store, clock, router_control, options
        self.holder_id = holder_id or f"daemon-{uuid.uuid4().hex[:8]}"
        self.scenario = build_scenario(cfg)
        self.policy_name = cfg.controller.policy
        self.instances = GuardedInstances(instance_provisioner, self._price, cfg.budget.max_usd_per_h,
                                          options.dry_run)
        functions = None
        if function_provisioner is not None and self.scenario.function is not None:
            functions = GuardedFunctions(function_provisioner, options.dry_run)
        self.forecaster = make_load_forecaster(cfg, self.scenario, self.policy_name, None)
        if self.forecaster is not None:
            self.forecaster.start_at(clock())
        self.loop = ControlLoop(make_policy(self.policy_name), PolicyContext(cfg, self.scenario), self.instances,
                                functions, forecaster=self.forecaster, before_acting=self._commit)
        self.window = ObservationWindow(cfg.controller.metrics_window_s, cfg.slo.latency_ms)
        self.metrics = DaemonMetrics()
        self.metrics_port: int | None = None
        self.latest: WindowStats | None = None
        self.lease = None
        self._tick_id: str | None = None
        self._recorded = False
        self._was_leader = False
        self._last_cost_at_s: float | None = None
        self._scheduler: BackgroundScheduler | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> "Daemon":
        c, o = self.cfg.controller, self.options
        self.metrics_port = self.metrics.serve(self.cfg.metrics.port if o.metrics_port is None else o.metrics_port)
        s = BackgroundScheduler(executors={"default": ThreadPoolExecutor(1)},
                                job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None})
        s.add_job(self.observe_once, "interval", seconds=o.observe_every_s or c.metrics_window_s / 6, id="observe")
        s.add_job(self.decide_once, "interval", seconds=c.interval_s, id="decide")
        s.add_job(self.reconcile_once, "interval", seconds=c.interval_s, id="reconcile")
        if self.forecaster is not None:
            s.add_job(self.forecast_once, "interval", seconds=self.cfg.forecast.step_s, id="forecast")
        s.add_job(self.refresh_prices_once, "interval", seconds=o.prices_every_s, id="prices")
        s.start()
        self._scheduler = s
        log_event("daemon_started", holder=self.holder_id, policy=self.policy_name, dry_run=o.dry_run,
                  metrics_port=self.metrics_port, interval_s=c.interval_s)
        return self

    def stop(self) -> None:
        """End the jobs (waiting for a running one), release the lease, leave the fleet as it is."""
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=True)
            self._scheduler = None
        released = False
        try:
            released = self.store.release_lease(self.options.lease_name, self.holder_id)
        except StateError as exc:
            log_event("lease_release_failed", logging.WARNING, error=str(exc))
        self.metrics.leader.set(0)
        self.metrics.stop()
        log_event("daemon_stopped", holder=self.holder_id, lease_released=released)

    # -- jobs --------------------------------------------------------------------------------

    def observe_once(self) -> Observation | None:
        now = self.clock()
        try:
            stats = self.window.add(self.router.read(now))
        except RouterUnreachable as exc:
            log_event("observe_failed", logging.WARNING, error=str(exc))
            return None
        if stats is None:
            return None
        self.latest = stats
        obs = stats.observation
        self.metrics.observed_rps.set(obs.arrival_rps)
        self.metrics.spill.set(obs.faas_fraction)
        if obs.p99_ms is not None:
            self.metrics.p99_ms.set(obs.p99_ms)
        if stats.slo_attainment is not None:
            self.metrics.slo.set(stats.slo_attainment)
        if self._leading(now):
            self.store.record_observation(obs, stats.slo_attainment)
        return obs

    def decide_once(self) -> Decision | None:
        started = time.perf_counter()
        now = self.clock()
        lease = self.store.acquire_or_renew(self.options.lease_name, self.holder_id, self._lease_ttl_s(), now)
        self.lease = lease
        self.metrics.leader.set(1 if lease else 0)
        if lease is None:
            if self._was_leader:
                log_event("leadership_lost", logging.WARNING, holder=self.holder_id)
            self._was_leader = False
            return None
        if not self._was_leader:
            self._take_over(now)
            self._was_leader = True
        self._tick_id = f"{int(now)}-{uuid.uuid4().hex[:12]}"
        self._recorded = False
        self.instances.decision_id, self.instances.refused = self._tick_id, 0
        obs = self.latest.observation if self.latest is not None else None
        try:
            result = self.loop.tick(now, obs, self._tick_id)
            if not self.options.dry_run:
                d = result.decision
                self.router.set_spill_rule(d.spill_enabled, d.spill_threshold_ms)
        except LeaseLost as exc:
            self._was_leader = False
            self.metrics.leader.set(0)
            log_event("leadership_lost", logging.WARNING, holder=self.holder_id, error=str(exc))
            return None
        except Exception as exc:
            log_event("decision_failed", logging.ERROR, decision_id=self._tick_id, error=str(exc).splitlines()[0])
            if self._recorded:
                self.store.mark_decision(self._tick_id, "failed", self.clock(), fence=lease)
            self.metrics.decisions.labels("failed").inc()
            return None
        d = result.decision
        self.store.mark_decision(self._tick_id, "applied", self.clock(), fence=lease)
        self.metrics.decisions.labels("dry-run" if self.options.dry_run else "applied").inc()
        self.metrics.set_targets(d.targets)
        self.metrics.decision_s.observe(time.perf_counter() - started)
        log_event("decision", decision_id=self._tick_id, reason=d.reason,
                  targets={f"{k[0]}/{k[1]}": n for k, n in d.targets}, launched=len(result.launched),
                  terminated=len(result.terminated), launch_limited=result.launch_limited,
                  budget_refused=self.instances.refused, spill_enabled=d.spill_enabled,
                  dry_run=self.options.dry_run,
                  observed_rps=None if obs is None else round(obs.arrival_rps, 3))
        return d

    def forecast_once(self):
        now = self.clock()
        need = self.loop.policy.forecast_need(self.loop.ctx)
        if need is None or self.forecaster is None:
            return None
        self.forecaster.observe(self.latest.observation if self.latest else None)
        forecast = self.forecaster.forecast(now, need.horizon_s, need.quantiles)
        if forecast is None:
            return None
        for q, rps in zip(forecast.quantiles, forecast.rps[0]):
            self.metrics.forecast_rps.labels(f"{q:g}").set(float(rps))
        if self._leading(now):
            self.store.record_forecast(forecast, now)
        return forecast

    def reconcile_once(self) -> list:
        now = self.clock()
        records = self.instances.describe()
        self.metrics.set_fleet(records)
        iaas = usd_per_h(records, self._price)
        faas = 0.0
        if self.latest is not None and self.scenario.function is not None:
            window_s = self.latest.observation.window_s
            faas = self.latest.function_requests / window_s * 3600.0 * self.scenario.function_usd_per_request
        self.metrics.cost.labels("iaas").set(iaas)
        self.metrics.cost.labels("faas").set(faas)
        if self._leading(now):
            self.store.upsert_instances(records, self.options.provider, now, complete=True)
            if self._last_cost_at_s is not None and now > self._last_cost_at_s:
                dt = now - self._last_cost_at_s
                self.store.record_cost(now, dt, iaas * dt / 3600.0, faas * dt / 3600.0)
            self._last_cost_at_s = now
        return records

    def refresh_prices_once(self) -> None:
        self.scenario = build_scenario(self.cfg)
        self.loop.ctx = PolicyContext(self.cfg, self.scenario)
        log_event("prices_refreshed", catalog=self.cfg.scenario.catalog or "(default)")

    # -- internals ---------------------------------------------------------------------------

    def _commit(self, decision: Decision, forecast) -> Decision:
        """Record the decision, fenced by the lease, before the loop acts on it."""
        if self.options.dry_run:
            decision = replace(decision, reason=decision.reason + DRY_RUN_NOTE)
        self.store.record_decision(decision, self._tick_id, self.clock(), self.policy_name, fence=self.lease)
        self._recorded = True
        if forecast is not None:
            self.store.record_forecast(forecast, self.clock())
        return decision

    def _take_over(self, now: float) -> None:
        """Settle a decision a previous leader left planned; resume its data-plane settings."""
        last = self.store.last_decision()
        if last is None:
            return
        self.loop.decision = last.decision
        if last.status == "planned":
            live: dict = {}
            for r in self.instances.describe():
                if r.state in ("pending", "ready"):
                    live[(r.instance_type, r.market)] = live.get((r.instance_type, r.market), 0) + 1
            status = "applied" if live == dict(last.decision.targets) else "failed"
            self.store.mark_decision(last.id, status, now, fence=self.lease)
            log_event("settled_interrupted_decision", decision_id=last.id, status=status)
        log_event("leadership_taken", holder=self.holder_id, token=self.lease.token, last_decision=last.id)

    def _leading(self, now: float) -> bool:
        return self.lease is not None and now < self.lease.expires_at_s

    def _lease_ttl_s(self) -> float:
        return self.options.lease_ttl_s or 3.0 * self.cfg.controller.interval_s

    def _price(self, key) -> float:
        return self.scenario.option(key).usd_per_h
