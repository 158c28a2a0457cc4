"""What the daemon observes: the router's counters, read over HTTP, turned into Observations.

The router exports cumulative counters on /metrics (requests by path and status, a latency
histogram by path). The daemon reads them every few seconds (`RouterReading`) and an
Observation is the difference between now and the reading one metrics window ago:

    arrival_rps   = requests answered in the window / window length
    p99_ms        = 99th percentile of the window's latency histogram (linear within a bucket;
                    None when nothing was answered)
    faas_fraction = requests served by functions / requests answered

E.g. two readings 60 s apart with 6,000 more requests, 300 of them on function paths:
100 req/s and faas_fraction 0.05. Requests are counted when answered, not when they arrive:
under a long queue this lags the offered load by the queueing time (milliseconds to a second
here, against a 60 s window).

The same HTTP control API sets the spill rule (PUT /admin/spill), so the daemon drives a router
in this process or on another host alike.
"""
from __future__ import annotations

import bisect
import json
import math
import urllib.request
from collections import deque
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from controller.types import Observation

FUNCTION_PATHS = ("function-warm", "function-cold")
LATENCY_PATHS = ("instance", *FUNCTION_PATHS)
HTTP_TIMEOUT_S = 5.0
MAX_SPILL_THRESHOLD_MS = 3_600_000.0   # the router's upper limit (serving/router/settings.py)


class RouterUnreachable(RuntimeError):
    """The router did not answer (down, wrong URL, refused): one line."""


@dataclass(frozen=True)
class RouterReading:
    at_s: float
    requests_by_path: dict[str, float]              # cumulative, all status codes
    latency_buckets: tuple[tuple[float, float], ...]  # (upper bound s, cumulative count), all paths


class HttpRouterControl:
    """The router's HTTP endpoints: /metrics to read, /admin/spill to set the spill rule."""

    def __init__(self, base_url: str, token: str | None = None):
        self.base_url = base_url.rstrip("/")
        self.token = token

    def read(self, at_s: float) -> RouterReading:
        text = self._request("GET", "/metrics").decode()
        by_path: dict[str, float] = {}
        buckets: dict[float, float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == "spillway_router_requests_total":
                    by_path[s.labels["path"]] = by_path.get(s.labels["path"], 0.0) + s.value
                elif s.name == "spillway_router_request_duration_seconds_bucket" \
                        and s.labels.get("path") in LATENCY_PATHS:
                    le = float(s.labels["le"])
                    buckets[le] = buckets.get(le, 0.0) + s.value
        return RouterReading(at_s, by_path, tuple(sorted(buckets.items())))

    def set_spill_rule(self, enabled: bool, threshold_ms: float) -> None:
        # JSON has no infinity, and the router takes at most an hour: an infinite threshold
        # ("never spill on latency") becomes that hour, which no request waits for.
        threshold = min(threshold_ms, MAX_SPILL_THRESHOLD_MS)
        self._request("PUT", "/admin/spill", {"enabled": bool(enabled), "threshold_ms": threshold})

    def _request(self, method: str, path: str, body: dict | None = None) -> bytes:
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base_url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT_S) as resp:
                return resp.read()
        except OSError as exc:     # URLError, HTTPError, timeouts and refusals are all OSErrors
            raise RouterUnreachable(f"router {self.base_url}{path}: {exc}") from None


@dataclass(frozen=True)
class WindowStats:
    observation: Observation
    slo_attainment: float | None     # fraction of the window's answered requests within the SLO
    function_requests: float         # served by functions in the window (for the cost rate)


class ObservationWindow:
    """Keeps recent readings and turns the last `window_s` of them into an Observation.

    An observation needs readings spanning at least half the window, so a daemon that has
    just started does not act on a second of data."""

    def __init__(self, window_s: float, slo_ms: float):
        self.window_s, self.slo_ms = window_s, slo_ms
        self._readings: deque[RouterReading] = deque()

    def add(self, reading: RouterReading) -> WindowStats | None:
        if self._readings and reading.at_s <= self._readings[-1].at_s:
            return None
        self._readings.append(reading)
        # Keep the newest reading at or before the window start, and everything after it.
        while len(self._readings) > 2 and self._readings[1].at_s <= reading.at_s - self.window_s:
            self._readings.popleft()
        old = self._readings[0]
        span_s = reading.at_s - old.at_s
        if span_s < 0.5 * self.window_s:
            return None
        requests = _total(reading) - _total(old)
        fn = sum(reading.requests_by_path.get(p, 0.0) - old.requests_by_path.get(p, 0.0) for p in FUNCTION_PATHS)
        hist = _bucket_delta(reading.latency_buckets, old.latency_buckets)
        p99 = _quantile_ms(hist, 0.99)
        obs = Observation(reading.at_s, span_s, max(0.0, requests) / span_s, p99,
                          fn / requests if requests > 0 else 0.0)
        return WindowStats(obs, _fraction_within(hist, self.slo_ms / 1000.0), max(0.0, fn))


def _total(r: RouterReading) -> float:
    return sum(r.requests_by_path.values())


def _bucket_delta(new, old) -> list[tuple[float, float]]:
    before = dict(old)
    return [(le, count - before.get(le, 0.0)) for le, count in new]


def _quantile_ms(hist: list[tuple[float, float]], q: float) -> float | None:
    """Linear interpolation inside the bucket holding the q-th request; None when empty.
    E.g. 1,000 requests, 985 under 50 ms and 1,000 under 100 ms: the 990th lies a third of
    the way into (50, 100] ms, so p99 = 66.7 ms. Beyond the last finite bound: that bound."""
    if not hist or hist[-1][1] <= 0:
        return None
    total = hist[-1][1]
    rank = q * total
    counts = [c for _, c in hist]
    k = bisect.bisect_left(counts, rank)
    le, count = hist[k]
    lo_le, lo_count = (0.0, 0.0) if k == 0 else hist[k - 1]
    if math.isinf(le):
        return lo_le * 1000.0
    frac = 0.0 if count <= lo_count else (rank - lo_count) / (count - lo_count)
    return (lo_le + frac * (le - lo_le)) * 1000.0


def _fraction_within(hist: list[tuple[float, float]], slo_s: float) -> float | None:
    """Share of requests at or under slo_s, interpolating linearly inside its bucket."""
    if not hist or hist[-1][1] <= 0:
        return None
    lo_le, lo_count = 0.0, 0.0
    for le, count in hist:
        if slo_s <= le:
            if math.isinf(le):
                return lo_count / hist[-1][1]
            within = lo_count + (count - lo_count) * (slo_s - lo_le) / (le - lo_le)
            return within / hist[-1][1]
        lo_le, lo_count = le, count
    return 1.0
