"""The router (serving/router): its routing rule as pure functions, and the real aiohttp server
against fake backends on loopback (serving/router/fakes.py: a Triton-like instance and a
Lambda-like invoke endpoint whose delay and failure mode the tests change while they run).
The function path goes through the real FunctionClient (serving/functions/client.py)."""
from __future__ import annotations

import asyncio
import math
import subprocess
import sys
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
import orjson
import pytest
from hypothesis import given, settings as hyp_settings
from hypothesis import strategies as st

from serving.profiles import BackendProfile
from serving.router import Router, RouterError, RouterSettings
from serving.router import rule
from serving.router.fakes import FakeBackend
from serving.router.rule import FUNCTION, INSTANCE, QUEUE, REJECT, BatchModel, InstanceLoad, InstanceView, RuleSettings

# Batches of up to 4; latency 100/120/140/160 ms; the batcher waits 50 ms for a full batch.
PROFILE = BackendProfile(backend="fake", kind="instance", max_batch=4, batch_latency_ms=(100, 120, 140, 160),
                         jitter_cv=0.0, max_queue_delay_ms=50.0)
# One request at a time: with max_outstanding_batches = 1 an instance holds one request.
SERIAL = BackendProfile(backend="serial", kind="instance", max_batch=1, batch_latency_ms=(10,),
                        jitter_cv=0.0, max_queue_delay_ms=0.0)
BODY = orjson.dumps({"inputs": [{"name": "INPUT", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]})
MODEL = BatchModel.from_profile(PROFILE, 2)


# ====================================================================== the rule (pure)
def test_batch_model_follows_the_profile():
    assert (MODEL.max_batch, MODEL.fire, MODEL.delay_s, MODEL.limit) == (4, 4, 0.05, 8)
    # q queued in batches of 4: (q-1)//4 full batches plus the rest.
    assert MODEL.work_s(1) == pytest.approx(0.100)
    assert MODEL.work_s(4) == pytest.approx(0.160)
    assert MODEL.work_s(6) == pytest.approx(0.160 + 0.120)
    assert MODEL.work_s(9) == pytest.approx(2 * 0.160 + 0.100)
    pref = BackendProfile(backend="p", kind="instance", max_batch=8, batch_latency_ms=tuple(range(1, 9)),
                          jitter_cv=0.0, max_queue_delay_ms=1.0, preferred_batch_sizes=(4, 8))
    assert BatchModel.from_profile(pref, 3).fire == 4 and BatchModel.from_profile(pref, 3).limit == 24


def test_expected_completion_matches_the_kernel_rule():
    idle = InstanceLoad()
    # Idle and the request does not fill a batch: the batcher's delay, then a batch of 1.
    assert rule.expected_completion_s(10.0, idle, MODEL) == pytest.approx(10.0 + 0.05 + 0.1)
    # Three queued (no batch running yet): the 4th fills the batch, no delay.
    load = idle
    for _ in range(3):
        load = rule.sent(load, 10.0, MODEL)
    assert (load.outstanding, load.running) == (3, 0)
    assert rule.expected_completion_s(10.0, load, MODEL) == pytest.approx(10.0 + 0.16)
    # Sending it fires the batch: running 4 until 10.16; the next request waits for it.
    load = rule.sent(load, 10.0, MODEL)
    assert (load.running, load.free_at_s) == (4, pytest.approx(10.16))
    assert rule.expected_completion_s(10.01, load, MODEL) == pytest.approx(10.16 + 0.1)
    # Replies: the batch is over when its 4th reply arrives.
    load = rule.sent(load, 10.02, MODEL)            # queued behind the batch
    for _ in range(3):
        load = rule.replied(load, 10.16, MODEL)
    assert (load.outstanding, load.running) == (2, 1)
    load = rule.replied(load, 10.16, MODEL)
    assert (load.outstanding, load.running, load.free_at_s) == (1, 1, pytest.approx(10.26))
    load = rule.replied(load, 10.26, MODEL)
    assert load == InstanceLoad(free_at_s=10.26)


def test_batcher_delay_starts_a_batch_in_the_estimate():
    load = rule.sent(InstanceLoad(), 0.0, MODEL)
    # After 50 ms the batcher fires the lone request: it runs until 0.05 + 0.1.
    later = rule.advance(load, 0.06, MODEL)
    assert (later.running, later.free_at_s) == (1, pytest.approx(0.15))
    assert rule.expected_completion_s(0.06, load, MODEL) == pytest.approx(0.15 + 0.1)
    # A batch slower than its estimate is taken to end now, not in the past.
    assert rule.expected_completion_s(0.5, load, MODEL) == pytest.approx(0.5 + 0.1)


def _views(*loads: InstanceLoad, open_: tuple[bool, ...] | None = None) -> list[InstanceView]:
    return [InstanceView(f"i{k}", load, MODEL, True if open_ is None else open_[k]) for k, load in enumerate(loads)]


def _full(now: float = 0.0) -> InstanceLoad:
    load = InstanceLoad()
    for _ in range(MODEL.limit):
        load = rule.sent(load, now, MODEL)
    return load


def test_choose_covers_every_outcome():
    spill_on = RuleSettings(spill_enabled=True, spill_threshold_s=0.2, queue_per_instance=2, functions=True)
    spill_off = RuleSettings(spill_enabled=False, spill_threshold_s=0.2, queue_per_instance=2, functions=True)
    no_fn = RuleSettings(spill_enabled=True, spill_threshold_s=0.2, queue_per_instance=2, functions=False)
    busy = rule.sent(rule.sent(InstanceLoad(), 0.0, MODEL), 0.0, MODEL)
    # The earlier completion wins: the idle instance (0.15 s) over the one with two queued (0.17 s).
    r = rule.choose(0.0, _views(busy, InstanceLoad()), 0, spill_on)
    assert (r.kind, r.instance_id, r.expected_s) == (INSTANCE, "i1", pytest.approx(0.15))
    # Over the threshold: spill when spilling is on, stay on the instance when it is off.
    five = InstanceLoad(outstanding=5, running=4, free_at_s=0.16, queued_since_s=math.inf)
    assert rule.choose(0.0, _views(five), 0, spill_on).kind == FUNCTION       # 0.16 + 0.1 > 0.2
    assert rule.choose(0.0, _views(five), 0, spill_off).kind == INSTANCE
    # Every instance full: wait (spill off, or spill on within the threshold), else spill.
    assert rule.choose(0.0, _views(_full()), 0, spill_off).kind == QUEUE
    assert rule.choose(0.0, _views(_full()), 0, spill_on).kind == FUNCTION     # waiting would exceed 0.2 s
    lax = RuleSettings(True, 10.0, 2, True)
    assert rule.choose(0.0, _views(_full()), 0, lax).kind == QUEUE
    # Queue full (2 per open instance): spill, or with spilling off answer "rejected".
    assert rule.choose(0.0, _views(_full()), 2, lax).reason == "no room"
    r = rule.choose(0.0, _views(_full()), 2, spill_off)
    assert (r.kind, r.reason) == (REJECT, "router queue full")
    # Requests already waiting keep the queue FIFO: a newcomer does not jump it.
    assert rule.choose(0.0, _views(InstanceLoad()), 1, spill_off).kind == QUEUE
    # No open instance: functions are the failover even with spilling off; without them, reject.
    assert rule.choose(0.0, _views(InstanceLoad(), open_=(False,)), 0, spill_off).kind == FUNCTION
    assert rule.choose(0.0, [], 0, no_fn).kind == REJECT
    # A failed request takes functions rather than the queue.
    assert rule.choose(0.0, _views(_full()), 0, spill_off, failover=True).kind == FUNCTION


@st.composite
def _loads(draw):
    load, now = InstanceLoad(), 0.0
    for _ in range(draw(st.integers(0, 30))):
        now += draw(st.floats(0.0, 0.2))
        if load.outstanding and draw(st.booleans()):
            load = rule.replied(load, now, MODEL)
        elif load.outstanding < MODEL.limit:
            load = rule.sent(load, now, MODEL)
    return load


@hyp_settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_loads(), st.booleans()), min_size=1, max_size=6), st.floats(0.0, 8.0))
def test_chosen_instance_has_room_and_the_earliest_completion(instances, now):
    views = [InstanceView(f"i{k}", load, MODEL, is_open) for k, (load, is_open) in enumerate(instances)]
    settings = RuleSettings(spill_enabled=False, spill_threshold_s=0.2, queue_per_instance=4, functions=False)
    route = rule.choose(now, views, 0, settings)
    with_room = [v for v in views if v.open and v.load.outstanding < MODEL.limit]
    if not with_room:
        assert route.kind in (QUEUE, REJECT)
        return
    assert route.kind == INSTANCE
    chosen = next(v for v in views if v.id == route.instance_id)
    assert chosen in with_room
    best = min(rule.expected_completion_s(now, v.load, MODEL) for v in with_room)
    assert rule.expected_completion_s(now, chosen.load, MODEL) == best == route.expected_s


def test_settings_errors_are_one_line():
    with pytest.raises(RouterError, match=r"max_outstanding_batches = 0: must be a whole number in \[1, 64\]"):
        RouterSettings(max_outstanding_batches=0)
    with pytest.raises(RouterError, match="spill_threshold_ms = -1"):
        RouterSettings(spill_threshold_ms=-1)
    with pytest.raises(RouterError, match="function_url"):
        RouterSettings(function_url="ftp://x")


# ====================================================================== the server
@dataclass
class Env:
    router: Router
    fakes: list[FakeBackend]
    fn: FakeBackend | None
    http: aiohttp.ClientSession

    async def infer(self, body: bytes = BODY, model: str = "resnet8", headers=None):
        async with self.http.post(f"{self.router.url}/v2/models/{model}/infer", data=body, headers=headers) as r:
            return r.status, r.headers, await r.read()

    async def get(self, path: str, headers=None):
        async with self.http.get(self.router.url + path, headers=headers) as r:
            return r.status, r.headers, await r.read()

    async def put(self, path: str, doc, headers=None):
        async with self.http.put(self.router.url + path, data=orjson.dumps(doc), headers=headers) as r:
            return r.status, await r.read()

    async def state(self) -> dict:
        return orjson.loads((await self.get("/admin/state"))[2])

    async def until(self, predicate, timeout_s: float = 10.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not await predicate():
            assert loop.time() < deadline, "condition not reached in time"
            await asyncio.sleep(0.02)


@asynccontextmanager
async def running(n_instances: int = 1, *, function: bool = False, profile: BackendProfile = PROFILE,
                  **settings):
    """Fake instances i0, i1, ... (and a fake function), a router in front, an HTTP client."""
    started = []
    try:
        fakes = [await FakeBackend(name=f"i{k}").start() for k in range(n_instances)]
        started += fakes
        fn = await FakeBackend(name="fn").start() if function else None
        if fn is not None:
            started.append(fn)
            settings["function_url"] = fn.invoke_url
        settings.setdefault("probe_interval_s", 0.05)
        router = Router(RouterSettings(**settings), profile,
                        instances=[{"id": f.name, "url": f.url} for f in fakes])
        await router.start()
        try:
            async with aiohttp.ClientSession() as http:
                yield Env(router, fakes, fn, http)
        finally:
            await router.stop()
    finally:
        for backend in started:
            await backend.stop()


def run(coro):
    return asyncio.run(coro)


def test_routes_to_an_instance_with_room():
    async def go():
        async with running(2) as env:
            status, headers, body = await env.infer()
            assert status == 200
            assert headers["X-Spillway-Path"] == "instance" and headers["X-Spillway-Instance"] == "i0"
            assert orjson.loads(body)["backend"] == "i0"
            assert env.fakes[0].requests == 1 and env.fakes[1].requests == 0
    run(go())


def test_spills_when_the_expected_completion_exceeds_the_threshold():
    async def go():
        async with running(1, function=True, spill_threshold_ms=200.0) as env:
            env.fakes[0].set(delay_s=1.0)
            # Four requests fill one batch: expected 150, 170, 190, 160 ms, all within 200 ms.
            first = [asyncio.create_task(env.infer()) for _ in range(4)]
            await env.until(lambda: _true(env.fakes[0].in_flight == 4))
            # The fifth waits for that batch: 160 + 100 ms > 200 ms, so it spills (warm, then cold).
            status, headers, _ = await env.infer()
            assert status == 200 and headers["X-Spillway-Path"] == "function-warm"
            env.fn.cold_starts = 1
            status, headers, _ = await env.infer()
            assert status == 200 and headers["X-Spillway-Path"] == "function-cold"
            assert all(r[1]["X-Spillway-Path"] == "instance" for r in await asyncio.gather(*first))
            assert env.fakes[0].requests == 4 and env.fn.requests == 2
            assert (await env.state())["counters"]["spills"] == 2
    run(go())


async def _true(value: bool) -> bool:
    return value


def test_queues_when_instances_are_full_and_spill_is_off():
    async def go():
        async with running(1, function=True, profile=SERIAL, max_outstanding_batches=1, spill_enabled=False) as env:
            env.fakes[0].set(delay_s=0.2)
            tasks = [asyncio.create_task(env.infer()) for _ in range(3)]
            await env.until(lambda: _queue_len_is(env, 2))
            results = await asyncio.gather(*tasks)
            assert [r[0] for r in results] == [200, 200, 200]
            assert {r[1]["X-Spillway-Path"] for r in results} == {"instance"}
            assert env.fakes[0].max_in_flight == 1 and env.fn.requests == 0
            assert (await env.state())["counters"]["queued"] == 2
    run(go())


async def _queue_len_is(env: Env, n: int) -> bool:
    return (await env.state())["queue_length"] == n


@pytest.mark.parametrize("mode", ["close", "500", "hang"])
def test_failed_instance_is_retried_marked_down_and_probed_back(mode):
    async def go():
        async with running(2, instance_timeout_s=0.5) as env:
            env.fakes[0].set(mode=mode)
            status, headers, _ = await env.infer()          # i0 is tried first, fails, i1 answers
            assert status == 200 and headers["X-Spillway-Instance"] == "i1"
            state = await env.state()
            assert [i["up"] for i in state["instances"]] == [False, True]
            assert state["counters"]["retries"] == 1 and env.fakes[0].requests == 1
            # While down, i0 gets nothing; the probe puts it back once it reports ready.
            assert (await env.infer())[1]["X-Spillway-Instance"] == "i1"
            env.fakes[0].set(mode="ok")
            await env.until(lambda: _up(env, "i0"))
            assert (await env.infer())[1]["X-Spillway-Instance"] == "i0"
    run(go())


async def _up(env: Env, instance_id: str) -> bool:
    return next(i for i in (await env.state())["instances"] if i["id"] == instance_id)["up"]


def test_functions_are_the_failover_even_with_spill_off():
    async def go():
        async with running(1, function=True, spill_enabled=False) as env:
            env.fakes[0].set(mode="close")
            status, headers, _ = await env.infer()
            assert status == 200 and headers["X-Spillway-Path"] == "function-warm"
        async with running(1) as env:                      # nothing to fail over to: an answer, not a hang
            env.fakes[0].set(mode="500")
            status, _, body = await env.infer()
            assert status == 503 and "no open instance" in orjson.loads(body)["error"]
    run(go())


def test_backend_4xx_is_passed_through_without_retry():
    async def go():
        async with running(2) as env:
            env.fakes[0].set(mode="400")
            status, headers, body = await env.infer()
            assert status == 400 and headers["X-Spillway-Instance"] == "i0"
            assert orjson.loads(body) == {"error": "fake bad request"}
            assert env.fakes[1].requests == 0 and (await env.state())["instances"][0]["up"]
    run(go())


def test_throttled_functions_back_off_then_503_or_use_an_instance():
    async def go():
        async with running(0, function=True) as env:
            env.fn.set(mode="throttle")
            status, _, body = await env.infer()
            assert status == 503 and "throttled" in orjson.loads(body)["error"]
            assert env.fn.requests == 4 and (await env.state())["counters"]["throttles"] == 4
        async with running(1, function=True, spill_threshold_ms=0.0) as env:   # everything spills...
            env.fn.set(mode="throttle")
            status, headers, _ = await env.infer()       # ...but a throttled request takes the instance
            assert status == 200 and headers["X-Spillway-Path"] == "instance" and env.fn.requests == 1
    run(go())


def test_bad_requests_get_a_json_error_and_the_server_keeps_serving():
    async def go():
        async with running(1, auth_token="s3cret", max_body_bytes=4096) as env:
            good = {"Authorization": "Bearer s3cret"}
            cases = [
                (401, env.infer()),
                (401, env.infer(headers={"Authorization": "Bearer wrong"})),
                (400, env.infer(b"{not json", headers=good)),
                (400, env.infer(b'{"inputs": []}', headers=good)),
                (400, env.infer(b'{"inputs": [{"name": "INPUT", "shape": [2, 2], "datatype": "FP32"}]}', headers=good)),
                (400, env.infer(b'{"inputs": [{"name": "INPUT", "shape": [1, 4], "datatype": "FP32", '
                                b'"data": [1, 2, 3]}]}', headers=good)),
                (413, env.infer(b"[" + b"1," * 4000 + b"1]", headers=good)),
                (404, env.infer(model="nope", headers=good)),
                (404, env.get("/v2/no/such/route")),
                (401, env.get("/admin/state")),
            ]
            for expected, call in cases:
                status, headers, body = await call
                assert status == expected, body
                error = orjson.loads(body)["error"]
                assert isinstance(error, str) and error and "\n" not in error
                if status == 401:
                    assert headers["WWW-Authenticate"] == "Bearer"
            status, headers, _ = await env.infer(headers=good)
            assert status == 200 and headers["X-Spillway-Path"] == "instance"
            assert (await env.get("/metrics"))[0] == 200               # metrics need no token
    run(go())


def test_metrics_have_the_per_path_series():
    async def go():
        async with running(1, function=True, spill_threshold_ms=1000.0) as env:
            await env.infer()
            env.router.set_spill_rule(True, 0.0)                       # everything spills now
            await env.infer()
            env.fn.cold_starts = 1
            await env.infer()
            text = (await env.get("/metrics"))[2].decode()
            for line in ('spillway_router_requests_total{code="200",path="instance"} 1.0',
                         'spillway_router_requests_total{code="200",path="function-warm"} 1.0',
                         'spillway_router_requests_total{code="200",path="function-cold"} 1.0',
                         'spillway_router_request_duration_seconds_count{path="instance"} 1.0',
                         'spillway_router_request_duration_seconds_count{path="function-warm"} 1.0',
                         'spillway_router_request_duration_seconds_count{path="function-cold"} 1.0',
                         'spillway_router_spills_total{reason="over threshold"} 2.0',
                         'spillway_router_queue_length 0.0',
                         'spillway_router_outstanding{instance="i0"} 0.0',
                         'spillway_router_instances_up 1.0'):
                assert line in text, line
            assert "spillway_router_retries_total" in text and "spillway_router_function_throttles_total" in text
    run(go())


def test_admin_api_changes_instances_and_spill_rule():
    async def go():
        async with running(2, auth_token="tok") as env:
            auth = {"Authorization": "Bearer tok"}
            status, body = await env.put("/admin/instances", {"instances": [
                {"id": "only", "url": env.fakes[1].url}]}, auth)
            assert status == 200 and [i["id"] for i in orjson.loads(body)["instances"]] == ["only"]
            assert (await env.infer(headers=auth))[1]["X-Spillway-Instance"] == "only"
            status, body = await env.put("/admin/spill", {"enabled": False, "threshold_ms": 75.0}, auth)
            assert status == 200 and orjson.loads(body)["spill"] == {"enabled": False, "threshold_ms": 75.0}
            for path, doc in (("/admin/spill", {"threshold_ms": -5}), ("/admin/spill", {"enable": True}),
                              ("/admin/instances", {"instances": [{"id": "x", "url": "not a url"}]}),
                              ("/admin/instances", {"instances": [{"id": "a", "url": env.fakes[0].url}] * 2}),
                              ("/admin/instances", [1, 2])):
                status, body = await env.put(path, doc, auth)
                assert status == 400 and "\n" not in orjson.loads(body)["error"]
            assert (await env.put("/admin/spill", {"enabled": True}))[0] == 401
            # The same through the Python API; an empty set with no functions is not ready.
            env.router.set_instances([])
            assert (await env.get("/v2/health/ready"))[0] == 503
            env.router.set_instances([{"id": "back", "url": env.fakes[0].url}])
            assert (await env.get("/v2/health/ready"))[0] == 200
            assert env.router.stats()["instances"][0]["id"] == "back"
    run(go())


def test_draining_instance_finishes_its_in_flight_request():
    async def go():
        async with running(2) as env:
            env.fakes[0].set(delay_s=0.5)
            slow = asyncio.create_task(env.infer())
            await env.until(lambda: _true(env.fakes[0].in_flight == 1))
            env.router.set_instances([{"id": "i1", "url": env.fakes[1].url}])
            state = await env.state()
            assert [(i["id"], i["draining"], i["outstanding"]) for i in state["instances"]] == [
                ("i1", False, 0), ("i0", True, 1)]
            assert (await env.infer())[1]["X-Spillway-Instance"] == "i1"
            status, headers, _ = await slow
            assert status == 200 and headers["X-Spillway-Instance"] == "i0"
            assert [i["id"] for i in (await env.state())["instances"]] == ["i1"]
    run(go())


def test_health_and_model_metadata():
    async def go():
        async with running(1) as env:
            assert (await env.get("/v2/health/live"))[0] == 200
            assert (await env.get("/v2/health/ready"))[0] == 200
            assert (await env.get("/v2/models/resnet8/ready"))[0] == 200
            status, _, body = await env.get("/v2/models/resnet8")
            assert status == 200 and orjson.loads(body)["platform"] == "fake"   # proxied from an instance
            assert (await env.get("/v2/models/other"))[0] == 404
    run(go())


def test_runs_as_its_own_process(tmp_path):
    profile = tmp_path / "p.toml"
    profile.write_text('model = "resnet8"\n[backends.cpu]\nkind = "instance"\nmax_batch = 2\n'
                       'batch_latency_ms = [5.0, 6.0]\nmax_queue_delay_ms = 1.0\nsource = "test"\n')

    async def go():
        fake = await FakeBackend(name="solo").start()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "serving.router", "--profile", str(profile), "--instance", fake.url,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            url = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().strip()
            async with aiohttp.ClientSession() as http:
                async with http.post(f"{url}/v2/models/resnet8/infer", data=BODY) as r:
                    assert r.status == 200 and r.headers["X-Spillway-Instance"] == "i0"
        finally:
            proc.terminate()
            await proc.wait()
            await fake.stop()
    run(go())
    bad = subprocess.run([sys.executable, "-m", "serving.router", "--profile", str(profile), "--instance", "nope"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "must be an http(s) URL" in bad.stderr
