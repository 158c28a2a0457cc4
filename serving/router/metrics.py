"""Prometheus metrics of one router (its own CollectorRegistry, so a process can hold several).

Counters and the latency histogram are updated per request; the gauges (router queue length,
outstanding requests per instance, instances up) are read from the router's state when
/metrics is scraped, so the request path does no gauge bookkeeping.
"""
from __future__ import annotations

from typing import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

PATHS = ("instance", "function-warm", "function-cold")
# Seconds. Fine below 50 ms where the instance path lives, coarse up to cold starts (2-30 s).
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class _StateGauges:
    """Gauges computed at scrape time from a snapshot callback."""

    def __init__(self, snapshot: Callable[[], tuple[int, Mapping[str, int], int]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterable[Metric]:
        queue_len, outstanding, up = self._snapshot()
        queue = GaugeMetricFamily("spillway_router_queue_length", "Requests waiting in the router queue")
        queue.add_metric([], queue_len)
        per = GaugeMetricFamily("spillway_router_outstanding", "Requests sent to an instance and not answered",
                                labels=["instance"])
        for instance_id, n in outstanding.items():
            per.add_metric([instance_id], n)
        ups = GaugeMetricFamily("spillway_router_instances_up", "Instances in rotation (up, not draining)")
        ups.add_metric([], up)
        return [queue, per, ups]


class RouterMetrics:
    def __init__(self, snapshot: Callable[[], tuple[int, Mapping[str, int], int]]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("spillway_router_requests", "Requests answered, by path and HTTP status",
                                ["path", "code"], registry=r)
        self.latency = Histogram("spillway_router_request_duration_seconds",
                                 "Time from request received to response, by path", ["path"],
                                 buckets=LATENCY_BUCKETS_S, registry=r)
        self.retries = Counter("spillway_router_retries", "Backend attempts repeated, by reason", ["reason"],
                               registry=r)
        self.spills = Counter("spillway_router_spills", "Requests sent to functions, by reason", ["reason"],
                              registry=r)
        self.throttles = Counter("spillway_router_function_throttles", "Function invocations throttled (429)",
                                 registry=r)
        r.register(_StateGauges(snapshot))
        # Label children are looked up once: labels() costs more than the increment itself.
        self._latency = {p: self.latency.labels(p) for p in PATHS}
        self._requests = {(p, 200): self.requests.labels(p, "200") for p in PATHS}

    def observe(self, path: str, code: int, elapsed_s: float) -> None:
        child = self._requests.get((path, code))
        if child is None:
            child = self._requests[path, code] = self.requests.labels(path, str(code))
        child.inc()
        if path in self._latency:
            self._latency[path].observe(elapsed_s)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
