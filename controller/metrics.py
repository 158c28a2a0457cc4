"""The daemon's Prometheus exporter (its own CollectorRegistry, so tests can run several daemons
in one process). grafana/spillway-dashboard.json plots exactly these series.

    spillway_fleet_instances{instance_type, market, state}   instances by kind and state
    spillway_fleet_target_instances{instance_type, market}   the last decision's targets
    spillway_load_observed_rps / spillway_load_forecast_rps{quantile}
    spillway_observed_p99_ms, spillway_spill_fraction, spillway_slo_attainment
    spillway_cost_usd_per_h{kind = iaas | faas}
    spillway_decision_duration_seconds (histogram), spillway_decisions_total{status}
    spillway_leader (1 while this daemon holds the lease)
"""
from __future__ import annotations

from collections import Counter as Tally

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from provisioners.base import DRAINING, PENDING, READY, InstanceRecord

STATES = (PENDING, READY, DRAINING)
# Seconds: a tick is a few database commits (ms) plus provisioner calls (up to seconds on AWS).
DECISION_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class DaemonMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.fleet = Gauge("spillway_fleet_instances", "Instances by type, market and state",
                           ["instance_type", "market", "state"], registry=r)
        self.targets = Gauge("spillway_fleet_target_instances", "Target instances of the last decision",
                             ["instance_type", "market"], registry=r)
        self.observed_rps = Gauge("spillway_load_observed_rps", "Requests per second over the metrics window",
                                  registry=r)
        self.forecast_rps = Gauge("spillway_load_forecast_rps", "Forecast request rate for the next step",
                                  ["quantile"], registry=r)
        self.p99_ms = Gauge("spillway_observed_p99_ms", "p99 latency over the metrics window (ms)", registry=r)
        self.spill = Gauge("spillway_spill_fraction", "Share of requests served by functions", registry=r)
        self.slo = Gauge("spillway_slo_attainment", "Share of requests within the SLO over the window",
                         registry=r)
        self.cost = Gauge("spillway_cost_usd_per_h", "Current spend rate", ["kind"], registry=r)
        self.decision_s = Histogram("spillway_decision_duration_seconds",
                                    "Time to decide and apply one control tick", buckets=DECISION_BUCKETS_S,
                                    registry=r)
        self.decisions = Counter("spillway_decisions", "Decisions by outcome", ["status"], registry=r)
        self.leader = Gauge("spillway_leader", "1 while this daemon holds the leader lease", registry=r)
        self._fleet_keys: set[tuple[str, str, str]] = set()
        self._target_keys: set[tuple[str, str]] = set()
        self._server = None

    def serve(self, port: int, host: str = "127.0.0.1") -> int:
        """Start the /metrics endpoint (port 0: a free port); returns the bound port."""
        self._server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return self._server.server_address[1]

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def set_fleet(self, records: list[InstanceRecord]) -> None:
        counts = Tally((r.instance_type, r.market, r.state) for r in records if r.state in STATES)
        # Kinds seen before and now absent read 0 rather than vanishing from the graphs.
        for key in self._fleet_keys | set(counts):
            self.fleet.labels(*key).set(counts.get(key, 0))
        self._fleet_keys |= set(counts)

    def set_targets(self, targets: tuple) -> None:
        wanted = dict(targets)
        for key in self._target_keys | set(wanted):
            self.targets.labels(*key).set(wanted.get(key, 0))
        self._target_keys |= set(wanted)
