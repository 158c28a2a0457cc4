"""The Spillway system model written plainly with SimPy: an independent reference for the simulator.

One SimPy event per arrival, one process per instance (the Triton dynamic batcher), one timeout
per function execution, one controller process ticking the real ControlLoop with the real policy.
It is deliberately straightforward Python, written from the model's specification rather than from
simulator/kernel.py, so that agreement between the two says something about both. It is slow
(tens of microseconds per request); bench/bench_vs_simpy.py compares it with the compiled simulator.

The model (times in seconds since the trace start):

* Arrivals: traces.arrivals.iter_arrivals(trace, seed), the same times the simulator uses.
* Controller: every controller.interval_s, ControlLoop.tick(now, observation) where the
  observation is the arrival rate over the last metrics_window_s (at t = 0 with a warm start: the
  trace's expected load over the first window, and instances launched at t = 0 are ready at once).
* Instances (SimpyInstances, the provisioner): launch-to-ready delay drawn from the catalog; billed
  per second from launch with a 60 s minimum; scale-in drains (no new work, ends when its queue
  is empty); a still-pending instance ends at once; at the end of the trace a running instance is
  billed to the end (or to its last completion if later).
* Router (late binding): an instance holds at most L = router.max_outstanding_batches x max_batch
  outstanding requests (queued plus the batch in service). A request goes to the ready, accepting
  instance with room and the earliest expected completion (ties: the earliest launched), unless
  the router queue is non-empty (FIFO). Otherwise it may wait in the router queue (at most
  router.max_queue_per_instance x accepting instances, pending ones included); its expected
  completion is then the minimum over accepting instances of max(batch end, ready time) +
  est(queued + 1 + router queue). Functions instead when the decision allows spilling and
  (no instance has room and it cannot wait, or the expected completion is more than the spill
  threshold away). A throttled function request joins the instance or the router queue if it
  can, else it is retried with exponential backoff (functions.on_throttle = "retry") or dropped.
  The router queue is handed out in FIFO order the moment room appears (an instance becomes ready
  or its batch in service ends): as many as fit join that instance's queue, their queue delay
  counting from the hand-off, and can join the batch that starts at that moment. Latency counts
  from the original arrival. Requests still at the router at the end are dropped. (Ties at one
  instant, e.g. room on two instances at once, follow SimPy's event order where the simulator
  uses launch order; they only occur with deterministic service times.)
* Dynamic batcher: a batch starts at max(instance free, min(oldest + max_queue_delay, arrival of
  the fire-th queued request)), fire = smallest preferred batch size or max_batch; it takes the
  queued requests (at most max_batch; with preferred sizes the largest preferred size that fits,
  else all of them); latency(b) x jitter.
* Functions (FunctionPool): one request per environment; reuse an idle one (provisioned first,
  else the most recently freed); idle longer than keep_alive_s => gone; otherwise a cold start if
  fewer than max_concurrency environments (busy + idle) exist and a burst token is available
  (bucket of burst_scaling_per_10s tokens, refilled at that many per 10 s); else throttled. The
  init time is the profile's cold_start_s.sample() (clipped to its low/high bounds). Provisioned
  concurrency is billed for the configured target; a provisioned environment that finishes stays
  provisioned while the provisioned ones (idle + busy) are below the target, else it becomes an
  ordinary idle one.
* Not modelled: spot interruptions (Model refuses a spot scenario unless
  simulation.spot_interruptions = "off"); spot_interruptions and evicted are always 0.
"""
from __future__ import annotations

import math
from collections import deque

import numpy as np

try:
    import simpy
except ImportError:  # pragma: no cover - the benchmark and its test skip without simpy
    simpy = None

from controller.config import Config
from controller.loop import ControlLoop
from controller.policies import PolicyContext, make_policy
from controller.scenario import Scenario
from controller.types import Observation
from provisioners.base import DRAINING, PENDING, READY, FunctionSpec, InstanceRecord, LaunchSpec
from traces.arrivals import iter_arrivals
from traces.model import Trace
from traces.transforms import slice_trace

from simulator.engine import ROUTER_QUEUE_CAPACITY


class Jitter:
    """Batch-latency multiplier with mean 1: lognormal with the profile's cv, or exponential(1)."""

    def __init__(self, profile, rng: np.random.Generator):
        self.rng = rng
        self.exponential = getattr(profile, "jitter_dist", "lognormal") == "exponential"
        cv = profile.jitter_cv
        self.sigma = math.sqrt(math.log1p(cv * cv)) if cv > 0 else 0.0

    def __call__(self) -> float:
        if self.exponential:
            return float(self.rng.exponential(1.0))
        if self.sigma == 0.0:
            return 1.0
        return math.exp(self.sigma * self.rng.standard_normal() - 0.5 * self.sigma ** 2)


class Stats:
    """Everything the summary needs, collected as requests finish."""

    def __init__(self, slo_s: float):
        self.slo_s = slo_s
        self.requests = 0
        self.latencies_ms: list[float] = []
        self.paths = {"instance": 0, "function_warm": 0, "function_cold": 0}
        self.over_slo = 0
        self.dropped = 0
        self.throttled = 0
        self.retries = 0
        self.router_queued = 0
        self.cold_starts = 0
        self.fn_ms_on_demand = 0
        self.fn_ms_provisioned = 0
        self.fn_requests = 0

    def done(self, latency_s: float, path: str) -> None:
        self.latencies_ms.append(latency_s * 1000.0)
        self.paths[path] += 1
        if latency_s > self.slo_s:
            self.over_slo += 1


class Instance:
    """One model server: a FIFO queue and a SimPy process that forms batches like Triton."""

    def __init__(self, env, seq: int, itype, market: str, profile, launched_at: float, ready_at: float,
                 decision_id: str, stats: Stats, rng: np.random.Generator, max_outstanding_batches: int,
                 on_room):
        self.env, self.stats = env, stats
        self.on_room = on_room           # called when room may have appeared (ready, batch done)
        self.id = f"simpy-{seq:06d}"
        self.seq = seq
        self.instance_type, self.market = itype.name, market
        self.usd_per_h = itype.price_usd_per_h(market)
        self.billing_minimum_s = itype.billing_minimum_s
        self.launched_at, self.ready_at = launched_at, ready_at
        self.decision_id = decision_id
        self.max_batch = profile.max_batch
        self.max_delay_s = profile.max_queue_delay_ms / 1000.0
        preferred = sorted(getattr(profile, "preferred_batch_sizes", ()) or ())
        self.preferred = [b for b in preferred if 1 <= b <= self.max_batch]
        self.fire_size = self.preferred[0] if self.preferred else self.max_batch
        self.lat_s = [0.0] + [profile.latency_ms(b) / 1000.0 for b in range(1, self.max_batch + 1)]
        self.limit = max_outstanding_batches * self.max_batch    # outstanding requests at most
        self.jitter = Jitter(profile, rng)
        self.queue: deque[tuple[float, float]] = deque()   # (joined the queue at, first arrival)
        self.busy_until = ready_at       # the batch in service ends here
        self.in_service = 0              # requests in that batch
        self.last_done = ready_at
        self.draining = False
        self.ended_at: float | None = None
        self.wake = None                 # an event the batcher sleeps on, or None
        self.process = env.process(self.batcher())
        env.process(self.become_ready())

    # ------------------------------------------------------------------ router side
    def accepting(self) -> bool:
        return not self.draining and self.ended_at is None

    def outstanding(self, t: float) -> int:
        """Requests held at t: queued plus the batch still in service."""
        return len(self.queue) + (self.in_service if self.busy_until > t else 0)

    def work(self, q: int) -> float:
        """Time to serve q requests in batches of max_batch: (q-1)//B full batches, then the rest."""
        full = (q - 1) // self.max_batch
        return full * self.lat_s[self.max_batch] + self.lat_s[q - full * self.max_batch]

    def expected_done(self, t: float) -> float:
        """If a request joined now (the instance has room)."""
        q = len(self.queue) + 1
        if self.busy_until > t:
            start = self.busy_until
        else:
            start = t + (self.max_delay_s if q < self.fire_size else 0.0)
        return start + self.work(q)

    def expected_done_via_router(self, ahead: int) -> float:
        """If a request waited at the router behind `ahead` others for this instance."""
        return max(self.busy_until, self.ready_at) + self.work(len(self.queue) + 1 + ahead)

    def enqueue(self, t: float, first_arrival: float) -> None:
        self.queue.append((t, first_arrival))
        if self.wake is not None and not self.wake.triggered:
            self.wake.succeed()

    def drain(self, now: float) -> None:
        """Scale-in: accept no new work; end now if pending or idle, else after the queue."""
        if self.draining or self.ended_at is not None:
            return
        self.draining = True
        if self.ready_at > now:
            self.ended_at = now
        elif not self.queue and self.busy_until <= now:
            self.ended_at = max(now, self.last_done)
        if self.wake is not None and not self.wake.triggered:
            self.wake.succeed()

    # ------------------------------------------------------------------ the batcher
    def become_ready(self):
        if self.ready_at > self.env.now:
            yield self.env.timeout(self.ready_at - self.env.now)
        if self.accepting():
            self.on_room(self)

    def batcher(self):
        env = self.env
        while True:
            if self.ended_at is not None:
                return
            if not self.queue:
                if self.draining:
                    self.ended_at = max(env.now, self.last_done)
                    return
                self.wake = env.event()
                yield self.wake
                self.wake = None
                continue
            if len(self.queue) < self.fire_size:
                deadline = self.queue[0][0] + self.max_delay_s
                if deadline > env.now:
                    # Wait for the oldest request's queue delay, or for more requests.
                    self.wake = env.event()
                    yield self.wake | env.timeout(deadline - env.now)
                    self.wake = None
                    continue
            # Start a batch now with the requests that are here.
            n = min(len(self.queue), self.max_batch)
            if self.preferred:
                fits = [b for b in self.preferred if b <= n]
                if fits:
                    n = fits[-1]
            batch = [self.queue.popleft() for _ in range(n)]
            service = self.lat_s[n] * self.jitter()
            self.busy_until = env.now + service
            self.in_service = n
            yield env.timeout(service)
            self.last_done = env.now
            for _, first_arrival in batch:
                self.stats.done(env.now - first_arrival, "instance")
            # Room appeared: the router hands over waiting requests now, before the next batch
            # forms, so they can join a batch that starts at this moment.
            if self.accepting():
                self.on_room(self)

    # ------------------------------------------------------------------ provisioner view
    def record(self, now: float) -> InstanceRecord | None:
        if self.ended_at is not None and self.ended_at <= now:
            return None
        if self.draining:
            state = DRAINING
        else:
            state = READY if self.ready_at <= now else PENDING
        return InstanceRecord(self.id, self.instance_type, self.market, state, self.launched_at,
                              self.ready_at if self.ready_at <= now else None, None, self.decision_id)

    def finish(self, t_end: float) -> None:
        """End of the simulation: anything still running stops at t_end (or its last completion)."""
        if self.ended_at is None:
            self.ended_at = max(t_end, self.last_done) if self.ready_at <= t_end else t_end

    def bill_usd(self) -> float:
        life = self.ended_at - self.launched_at
        return max(self.billing_minimum_s, math.ceil(life - 1e-9)) * self.usd_per_h / 3600.0


class SimpyInstances:
    """The instance provisioner: launch / terminate / describe over SimPy instances."""

    def __init__(self, env, scenario: Scenario, stats: Stats, rng: np.random.Generator, warm_start: bool,
                 max_outstanding_batches: int, on_room):
        self.env, self.scenario, self.stats, self.rng = env, scenario, stats, rng
        self.warm_start = warm_start
        self.max_outstanding_batches = max_outstanding_batches
        self.on_room = on_room
        self.all: list[Instance] = []      # in launch order
        self.open: list[Instance] = []     # accepting (not draining), pending ones included

    def launch(self, spec: LaunchSpec) -> list[InstanceRecord]:
        now = self.env.now
        itype = self.scenario.catalog.instance(spec.instance_type)
        profile = self.scenario.model.instance(spec.instance_type)
        out = []
        for _ in range(spec.count):
            delay = 0.0 if (self.warm_start and now == 0.0) else float(itype.launch_to_ready_s.sample(self.rng))
            inst = Instance(self.env, len(self.all) + 1, itype, spec.market, profile, now, now + delay,
                            spec.decision_id, self.stats, self.rng, self.max_outstanding_batches, self.on_room)
            self.all.append(inst)
            self.open.append(inst)
            out.append(InstanceRecord(inst.id, inst.instance_type, inst.market, PENDING, now, None, None,
                                      spec.decision_id))
        return out

    def terminate(self, ids: list[str]) -> None:
        wanted = set(ids)
        for inst in self.all:
            if inst.id in wanted:
                inst.drain(self.env.now)
        self.open = [inst for inst in self.open if inst.accepting()]

    def describe(self) -> list[InstanceRecord]:
        now = self.env.now
        return [r for r in (inst.record(now) for inst in self.all) if r is not None]



class FunctionPool:
    """Lambda-like execution environments: warm reuse, keep-alive, cold starts, limits, billing.

    Environments are interchangeable, so an idle one is just the time it was freed."""

    def __init__(self, env, cfg: Config, scenario: Scenario, stats: Stats, rng: np.random.Generator):
        self.env, self.stats, self.rng = env, stats, rng
        fn = scenario.function
        self.profile = fn
        self.pricing = scenario.catalog.functions
        self.keep_alive_s = cfg.functions.keep_alive_s
        self.max_concurrency = cfg.functions.max_concurrency
        self.gb = cfg.functions.memory_mb / 1024.0
        self.service_s = fn.latency_ms(1) / 1000.0
        self.jitter = Jitter(fn, rng)
        self.idle: deque[float] = deque()    # ordinary idle environments' free times, oldest first
        self.busy = 0                        # busy environments, provisioned ones included
        self.prov_idle = 0                   # idle provisioned environments (never expire)
        self.prov_busy = 0                   # busy provisioned environments
        self.prov_target = 0                 # configured provisioned concurrency (billed)
        self.burst_capacity = float(self.pricing.burst_scaling_per_10s)
        self.tokens = self.burst_capacity
        self.tokens_at = 0.0
        self.provisioned_gb_s = 0.0          # provisioned concurrency configured x time
        self.provisioned_since = 0.0
        self.spec = FunctionSpec(cfg.functions.memory_mb, 0, cfg.functions.max_concurrency)

    # ------------------------------------------------------------------ provisioner verbs
    def configure(self, spec: FunctionSpec) -> None:
        now = self.env.now
        self._expire(now)
        self.provisioned_gb_s += self.prov_target * self.gb * (now - self.provisioned_since)
        self.provisioned_since = now
        want = spec.warm_concurrency
        have = self.prov_idle + self.prov_busy
        if want > have:
            # New provisioned environments, warm at once, within the concurrency limit.
            self.prov_idle += max(0, min(want - have, self.max_concurrency - self._count()))
        elif want < have:
            # Released idle ones become ordinary environments that can expire; busy ones become
            # ordinary when they finish (see _run).
            release = min(have - want, self.prov_idle)
            self.prov_idle -= release
            self.idle.extend([now] * release)
        self.prov_target = want
        self.spec = spec

    def describe_function(self) -> FunctionSpec:
        return self.spec

    # ------------------------------------------------------------------ invocation
    def _count(self) -> int:
        return self.busy + len(self.idle) + self.prov_idle

    def _expire(self, now: float) -> None:
        while self.idle and self.idle[0] + self.keep_alive_s < now:
            self.idle.popleft()

    def invoke(self, now: float, first_arrival: float) -> bool:
        """Serve one request on a function; False when throttled."""
        self._expire(now)
        service = self.service_s * self.jitter()
        if self.prov_idle > 0:
            self.prov_idle -= 1
            self.prov_busy += 1
            self.env.process(self._run(True, now, first_arrival, 0.0, service, "function_warm"))
            return True
        if self.idle:
            self.idle.pop()                  # the most recently freed
            self.env.process(self._run(False, now, first_arrival, 0.0, service, "function_warm"))
            return True
        self.tokens = min(self.burst_capacity, self.tokens + (now - self.tokens_at) * self.burst_capacity / 10.0)
        self.tokens_at = now
        if self._count() >= self.max_concurrency or self.tokens < 1.0:
            self.stats.throttled += 1
            return False
        self.tokens -= 1.0
        init = float(self.profile.cold_start_s.sample(self.rng))   # clipped to low/high by sample()
        self.stats.cold_starts += 1
        self.env.process(self._run(False, now, first_arrival, init, service, "function_cold"))
        return True

    def _run(self, provisioned: bool, now: float, first_arrival: float, init: float, service: float, path: str):
        self.busy += 1
        billed_s = service + (init if self.pricing.bills_init_phase else 0.0)
        ms = math.ceil(billed_s * 1000.0 - 1e-9)
        if provisioned:
            self.stats.fn_ms_provisioned += ms
        else:
            self.stats.fn_ms_on_demand += ms
        self.stats.fn_requests += 1
        yield self.env.timeout(init + service)
        self.busy -= 1
        self.stats.done(self.env.now - first_arrival, path)
        if provisioned:
            self.prov_busy -= 1
            if self.prov_idle + self.prov_busy < self.prov_target:
                self.prov_idle += 1
                return
        self.idle.append(self.env.now)   # freed now, so the deque stays ordered by free time

    def cost_breakdown(self, t_end: float) -> dict:
        prov_gb_s = self.provisioned_gb_s + self.prov_target * self.gb * (t_end - self.provisioned_since)
        p, st = self.pricing, self.stats
        return {"function_duration_usd": (st.fn_ms_on_demand * p.usd_per_gb_s
                                          + st.fn_ms_provisioned * p.provisioned_duration_usd_per_gb_s)
                / 1000.0 * self.gb,
                "function_requests_usd": st.fn_requests * p.usd_per_request,
                "function_provisioned_usd": prov_gb_s * p.provisioned_usd_per_gb_s}


class Model:
    def __init__(self, cfg: Config, scenario: Scenario, trace: Trace, policy_name: str, seed: int):
        if simpy is None:
            raise ImportError("bench.simpy_model needs simpy (pip install simpy)")
        self.cfg, self.scenario, self.trace, self.seed = cfg, scenario, trace, seed
        self.env = simpy.Environment()
        self.rng = np.random.default_rng([seed, 7919])   # not the simulator's streams
        if cfg.simulation.spot_interruptions != "off" and any(o.key[1] == "spot" for o in scenario.options):
            raise NotImplementedError("bench.simpy_model does not model spot interruptions: set "
                                      "simulation.spot_interruptions = \"off\" or use on-demand only")
        self.stats = Stats(cfg.slo.latency_ms / 1000.0)
        self.router_queue: deque[float] = deque()     # first-arrival times of requests waiting, FIFO
        self.instances = SimpyInstances(self.env, scenario, self.stats, self.rng, cfg.simulation.warm_start,
                                        cfg.router.max_outstanding_batches, self.hand_off)
        self.functions = FunctionPool(self.env, cfg, scenario, self.stats, self.rng) \
            if scenario.function is not None else None
        ctx = PolicyContext(cfg, scenario, trace_peak_rps=trace.peak_rps(60.0))
        self.loop = ControlLoop(make_policy(policy_name), ctx, self.instances, self.functions)
        self.decision = None
        self.recent: deque[float] = deque()      # arrival times inside the metrics window

    # ------------------------------------------------------------------ processes
    def controller(self):
        env, cfg, trace = self.env, self.cfg, self.trace
        dt, window = cfg.controller.interval_s, cfg.controller.metrics_window_s
        n_ticks = max(1, math.ceil(trace.duration_s / dt - 1e-9))
        for k in range(n_ticks):
            now = k * dt
            if now > env.now:
                yield env.timeout(now - env.now)
            if k == 0:
                if cfg.simulation.warm_start:
                    span = min(window, trace.duration_s)
                    obs = Observation(0.0, span, slice_trace(trace, 0.0, span).expected_requests() / span)
                else:
                    obs = None
            else:
                while self.recent and self.recent[0] < now - window:
                    self.recent.popleft()
                span = min(window, now)
                obs = Observation(now, span, len(self.recent) / span)
            self.decision = self.loop.tick(now, obs).decision

    def arrivals(self):
        env = self.env
        # Chunked as the simulator chunks them (the chunk length selects the random streams).
        for chunk in iter_arrivals(self.trace, self.seed):
            for t in chunk.tolist():
                if t > env.now:
                    yield env.timeout(t - env.now)
                self.stats.requests += 1
                self.recent.append(t)
                self.route(t, 0)

    def retry(self, delay: float, first_arrival: float, attempt: int):
        yield self.env.timeout(delay)
        self.route(first_arrival, attempt)

    # ------------------------------------------------------------------ the router
    def route(self, first_arrival: float, attempt: int) -> None:
        now = self.env.now
        waiting = len(self.router_queue)
        best, best_done = None, math.inf
        wait_done = math.inf                  # expected completion via the router queue
        n_open = 0
        for inst in self.instances.open:      # launch order: ties go to the earliest
            n_open += 1
            if waiting or inst.ready_at > now or inst.outstanding(now) >= inst.limit:
                d = inst.expected_done_via_router(waiting)
                if d < wait_done:
                    wait_done = d
                continue
            d = inst.expected_done(now)
            if d < best_done:
                best, best_done = inst, d
        expected = best_done if best is not None else wait_done
        queue_limit = min(self.cfg.router.max_queue_per_instance * n_open, ROUTER_QUEUE_CAPACITY)
        can_wait = best is None and n_open > 0 and waiting < queue_limit
        d = self.decision
        spill = self.functions is not None and d.spill_enabled
        if spill and ((best is None and not can_wait) or expected - now > d.spill_threshold_ms / 1000.0):
            if self.functions.invoke(now, first_arrival):
                return
            if best is None and not can_wait:
                fc = self.cfg.functions
                if fc.on_throttle == "retry" and attempt < fc.max_retries:
                    self.stats.retries += 1
                    self.env.process(self.retry(fc.retry_delay_s * 2 ** attempt, first_arrival, attempt + 1))
                else:
                    self.stats.dropped += 1
                return
            # Throttled, but an instance or the router queue can take it.
        if best is not None:
            best.enqueue(now, first_arrival)
        elif can_wait:
            self.router_queue.append(first_arrival)
            self.stats.router_queued += 1
        else:
            self.stats.dropped += 1

    def hand_off(self, inst: Instance) -> None:
        """Room may have appeared on inst (it became ready or a batch ended): hand it as many
        requests waiting at the router as fit, in FIFO order, queued from now."""
        if not self.router_queue:
            return
        now = self.env.now
        if inst.ready_at > now or not inst.accepting():
            return
        room = inst.limit - inst.outstanding(now)
        while room > 0 and self.router_queue:
            inst.enqueue(now, self.router_queue.popleft())
            room -= 1

    # ------------------------------------------------------------------ run
    def run(self) -> dict:
        self.env.process(self.controller())   # first, so the t = 0 fleet exists before arrivals at 0
        self.env.process(self.arrivals())
        self.env.run()                        # until every request has finished
        # Requests still at the router with no instance left to take them are lost.
        self.stats.dropped += len(self.router_queue)
        self.router_queue.clear()
        return self.summary()

    def summary(self) -> dict:
        st, t_end = self.stats, self.trace.duration_s
        for inst in self.instances.all:
            inst.finish(t_end)
        costs = {"instances_on_demand_usd": 0.0, "instances_spot_usd": 0.0, "function_duration_usd": 0.0,
                 "function_requests_usd": 0.0, "function_provisioned_usd": 0.0}
        for inst in self.instances.all:
            costs["instances_spot_usd" if inst.market == "spot" else "instances_on_demand_usd"] += inst.bill_usd()
        if self.functions is not None:
            costs.update(self.functions.cost_breakdown(t_end))
        iaas = costs["instances_on_demand_usd"] + costs["instances_spot_usd"]
        faas = costs["function_duration_usd"] + costs["function_requests_usd"] + costs["function_provisioned_usd"]
        lat = np.asarray(st.latencies_ms)
        n = st.requests

        def pct(q):
            return float(np.percentile(lat, q)) if lat.size else None

        served_fn = st.paths["function_warm"] + st.paths["function_cold"]
        return {
            "requests": n, "cost_usd": iaas + faas, "iaas_usd": iaas, "faas_usd": faas,
            "cost_breakdown": costs, "slo_ms": self.cfg.slo.latency_ms,
            "slo_attainment": 1.0 - (st.over_slo + st.dropped) / n if n else 1.0,
            "p50_ms": pct(50), "p95_ms": pct(95), "p99_ms": pct(99), "p999_ms": pct(99.9),
            "mean_ms": float(lat.mean()) if lat.size else None,
            "faas_fraction": served_fn / n if n else 0.0,
            "dropped": st.dropped, "throttled": st.throttled, "retries": st.retries,
            "router_queued": st.router_queued, "cold_starts": st.cold_starts,
            "spot_interruptions": 0, "evicted": 0,
            "instance_hours": sum(i.ended_at - i.launched_at for i in self.instances.all) / 3600.0,
            "launches": len(self.instances.all),
            "served": dict(st.paths), "duration_s": t_end,
        }


def run_simpy(cfg: Config, scenario: Scenario, trace: Trace, policy_name: str, seed: int,
              return_latencies: bool = False) -> dict:
    """Simulate `trace` under `policy_name` with the SimPy model; returns a summary dict with the
    simulator's keys (requests, cost_usd, iaas_usd, faas_usd, cost_breakdown, slo_attainment,
    p50/p95/p99/p999_ms, mean_ms, faas_fraction, dropped, throttled, retries, router_queued,
    cold_starts, spot_interruptions, evicted, instance_hours, launches).
    With return_latencies, also "latencies_ms" in completion order (for tests)."""
    model = Model(cfg, scenario, trace, policy_name, seed)
    out = model.run()
    if return_latencies:
        out["latencies_ms"] = list(model.stats.latencies_ms)
    return out
