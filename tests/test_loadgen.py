"""The open-loop load generator (serving/loadgen.py) against fake servers on loopback."""
from __future__ import annotations

import asyncio
import itertools
import socket

import numpy as np
import pytest
from aiohttp import web

from serving.loadgen import LoadgenError, LoadResult, replay, run_replay
from serving.router.fakes import FakeBackend

BODY = b'{"inputs": [{"name": "INPUT", "shape": [1], "datatype": "FP32", "data": [1.0]}]}'


async def _fake(**kwargs) -> FakeBackend:
    return await FakeBackend(**kwargs).start()


def _infer_url(backend: FakeBackend) -> str:
    return f"{backend.url}/v2/models/resnet8/infer"


def test_every_request_gets_a_row_and_is_sent_on_schedule():
    arrivals = np.array([0.0, 0.0, 0.1, 0.1, 0.1, 0.3, 0.3, 0.45])

    async def go():
        backend = await _fake()
        try:
            result = await replay(_infer_url(backend), arrivals, BODY)
        finally:
            await backend.stop()
        return result, np.array(backend.received_s)

    result, received = asyncio.run(go())
    assert isinstance(result, LoadResult) and len(result.status) == len(arrivals)
    assert (result.status == 200).all() and np.isfinite(result.latency_ms).all()
    assert (result.path == -1).all()                      # no X-Spillway-Path from a bare backend
    np.testing.assert_array_equal(result.scheduled_s, arrivals)
    assert (result.late_ms >= 0).all()                    # never sent before its time
    # The server saw each request no earlier than its schedule, relative to the first one.
    slack_s = result.late_ms[0] / 1000.0 + 0.005
    received = np.sort(received) - received.min()
    assert (received >= arrivals - slack_s).all()


def test_open_loop_a_slow_server_does_not_hold_requests_back():
    arrivals = np.linspace(0.0, 0.1, 10)

    async def go():
        backend = await _fake(delay_s=0.5)
        try:
            return await replay(_infer_url(backend), arrivals, BODY), backend.max_in_flight
        finally:
            await backend.stop()

    result, max_in_flight = asyncio.run(go())
    assert max_in_flight == 10                            # a closed loop would have had 1
    assert (result.status == 200).all()
    assert (result.latency_ms >= 500.0).all()             # measured from the scheduled time


def test_statuses_and_paths_are_recorded():
    answers = itertools.cycle([(200, "instance"), (200, "function-warm"), (200, "function-cold"), (503, None)])

    async def handler(_request: web.Request) -> web.Response:
        status, path = next(answers)
        return web.Response(status=status, body=b"{}", headers={"X-Spillway-Path": path} if path else None)

    async def go():
        app = web.Application()
        app.router.add_post("/v2/models/resnet8/infer", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        try:
            return await replay(f"http://127.0.0.1:{port}/v2/models/resnet8/infer", np.arange(40) * 0.002, BODY)
        finally:
            await runner.cleanup()

    result = asyncio.run(go())
    assert np.bincount(result.path + 1, minlength=4).tolist() == [10, 10, 10, 10]   # none, 0, 1, 2
    assert sorted(np.unique(result.status, return_counts=True)[1].tolist()) == [10, 30]
    s = result.summary()
    assert (s["requests"], s["ok"], s["errors"]) == (40, 30, 10)
    assert s["status_counts"] == {200: 30, 503: 10}
    assert s["share"] == {"instance": pytest.approx(1 / 3, abs=1e-3), "function-warm": pytest.approx(1 / 3, abs=1e-3),
                          "function-cold": pytest.approx(1 / 3, abs=1e-3), "none": 0.0}
    assert s["p50_ms"] <= s["p95_ms"] <= s["p99_ms"] <= s["p999_ms"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_connection_failures_are_errors_not_exceptions(tmp_path):
    async def go():
        backend = await _fake(mode="close")
        try:
            return await replay(_infer_url(backend), np.arange(6) * 0.01, BODY)
        finally:
            await backend.stop()

    closed = asyncio.run(go())
    refused = run_replay(f"http://127.0.0.1:{_free_port()}/v2/models/resnet8/infer", np.arange(3) * 0.01, BODY)
    for result in (closed, refused):
        assert (result.status == 0).all() and (result.path == -1).all()
        assert np.isfinite(result.latency_ms).all()
        s = result.summary()
        assert s["ok"] == 0 and s["errors"] == len(result.status) and s["p99_ms"] is None
    out = tmp_path / "r.csv"
    closed.to_csv(out)
    lines = out.read_text().splitlines()
    assert lines[0] == "scheduled_s,latency_ms,status,path,late_ms" and len(lines) == 7


def test_processes_split_the_arrivals_and_merge_the_results():
    arrivals = np.sort(np.random.default_rng(3).uniform(0.0, 0.5, 200))

    async def go():
        backend = await _fake()
        try:
            return await replay(_infer_url(backend), arrivals, BODY, processes=2), backend.requests
        finally:
            await backend.stop()

    result, served = asyncio.run(go())
    assert served == 200 and (result.status == 200).all()
    np.testing.assert_array_equal(result.scheduled_s, arrivals)
    assert np.isfinite(result.latency_ms).all() and (result.late_ms >= 0).all()


@pytest.mark.parametrize("arrivals, message", [
    ([0.2, 0.1], "must be sorted"),
    ([], "non-empty"),
    ([-1.0, 0.0], ">= 0"),
    ([0.0, float("nan")], "finite"),
])
def test_bad_arrivals_are_one_line_errors(arrivals, message):
    with pytest.raises(LoadgenError, match=message):
        run_replay("http://127.0.0.1:9/x", np.array(arrivals), BODY)
    with pytest.raises(LoadgenError, match="url"):
        run_replay("localhost:9", np.array([0.0]), BODY)
