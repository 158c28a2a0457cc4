"""The router's HTTP server (aiohttp): KServe v2 inference in front of Triton instances and
serverless functions, plus health, metrics and a small control API.

Data plane: POST /v2/models/{model}/infer. The body is checked (size, JSON, v2 shape) and the
ORIGINAL bytes are forwarded, never re-serialised. Where it goes is decided by
serving.router.rule (see there); every response says which path served it in
`X-Spillway-Path: instance | function-warm | function-cold` (plus `X-Spillway-Instance`).

Failures never lose a request: connection refused/reset, timeout or 5xx from an instance marks
it down (a background probe of /v2/health/ready puts it back) and the request is retried on
another instance, or on functions when none can take it (even with spilling off). A 4xx from a
backend is passed through. A throttled function (429) is sent to an instance that has room (or
the router queue), else invoked again after an exponential backoff (settings.throttle_retries and
throttle_backoff_s: the simulator's [functions] retry rule), then answered 503.

Control plane (bearer token when configured): PUT /admin/instances, PUT /admin/spill,
GET /admin/state; the same as methods set_instances, set_spill_rule, stats.
Every error is JSON {"error": "<one line>"}.
"""
from __future__ import annotations

import asyncio
import hmac
import time
from collections import Counter
from typing import Any, Callable, Iterable

import aiohttp
import orjson
from aiohttp import web

from serving.functions.client import FunctionClient, FunctionInvokeError, FunctionInvoker
from serving.profiles import BackendProfile, ModelProfile, ProfileError
from serving.router.fleet import Fleet, Instance, InstanceSpec
from serving.router.metrics import RouterMetrics
from serving.router.rule import FUNCTION, INSTANCE, QUEUE, Route
from serving.router.settings import RouterError, RouterSettings
from serving.router.upstream import Pool
from serving.router.v2 import BadRequest, check_request

PROBE_TIMEOUT_S = 1.0
LISTEN_BACKLOG = 1024          # clients opening hundreds of connections at once must not see SYN drops
JSON = "application/json"
_FORWARD_HEADERS = {"Content-Type": JSON}
_BACKEND_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)


FunctionClientFactory = Callable[[aiohttp.ClientSession], FunctionInvoker]


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps({"error": message}), content_type=JSON, headers=headers)


def _default_function_factory(url: str) -> FunctionClientFactory:
    # The client's own timeout (60 s) covers a cold start; the instance timeout would not.
    return lambda session: FunctionClient(url, session=session)


class Router:
    def __init__(self, settings: RouterSettings, instance_profile: BackendProfile, *,
                 model_profile: ModelProfile | None = None,
                 function_client_factory: FunctionClientFactory | None = None,
                 instances: Iterable[InstanceSpec | dict] = ()) -> None:
        if instance_profile.kind != "instance":
            raise RouterError(f"router: instance_profile {instance_profile.backend!r} is a {instance_profile.kind} "
                              "profile; give an instance profile")
        self.settings = settings
        self._profile = instance_profile
        self._model_profile = model_profile
        if function_client_factory is None and settings.function_url is not None:
            function_client_factory = _default_function_factory(settings.function_url)
        self._function_factory = function_client_factory
        self.fleet = Fleet(settings.model, settings.max_outstanding_batches, settings.max_queue_per_instance,
                           self._profile_for, function_client_factory is not None,
                           settings.spill_enabled, settings.spill_threshold_ms / 1000.0)
        self.metrics = RouterMetrics(lambda: (self.fleet.queue_len, self.fleet.outstanding(),
                                              sum(i.open for i in self.fleet.instances.values())))
        self.counts: Counter[str] = Counter()
        self._session: aiohttp.ClientSession | None = None
        self._functions: FunctionInvoker | None = None
        self._probe_task: asyncio.Task | None = None
        self._runner: web.AppRunner | None = None
        self._probe_timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S)
        self._model_name = settings.model
        self.url = ""
        self.set_instances(instances)

    # ------------------------------------------------------------------ control (Python API)
    def _profile_for(self, backend: str | None) -> BackendProfile:
        if backend is None or backend == self._profile.backend:
            return self._profile
        if self._model_profile is None:
            raise RouterError(f"instances: profile_backend {backend!r}: the router knows only "
                              f"{self._profile.backend!r} (start it with a model profile to use others)")
        try:
            return self._model_profile.instance(backend)
        except ProfileError as exc:
            raise RouterError(f"instances: profile_backend: {exc}") from None

    def set_instances(self, instances: Iterable[InstanceSpec | dict]) -> None:
        """Replace the instance set; instances left out are drained (in-flight work completes)."""
        specs = [s if isinstance(s, InstanceSpec) else InstanceSpec.parse(s, f"instances[{k}]")
                 for k, s in enumerate(instances)]
        self.fleet.set_instances(specs, self._now())

    def set_spill_rule(self, enabled: bool, threshold_ms: float) -> None:
        # Validated like the settings: the same key names and ranges.
        RouterSettings(spill_enabled=enabled, spill_threshold_ms=threshold_ms)
        self.fleet.set_spill_rule(enabled, threshold_ms / 1000.0)

    def stats(self) -> dict[str, Any]:
        return {"model": self.settings.model,
                "instances": self.fleet.describe(self._now()),
                "queue_length": self.fleet.queue_len,
                "spill": {"enabled": self.fleet.spill_enabled,
                          "threshold_ms": self.fleet.spill_threshold_s * 1000.0},
                "functions": self.fleet.functions,
                "counters": dict(self.counts)}

    @staticmethod
    def _now() -> float:
        # Not loop.time(): uvloop's has 1 ms resolution, coarse for latencies of a few ms.
        return time.monotonic()

    # ------------------------------------------------------------------ lifecycle
    def app(self) -> web.Application:
        # aiohttp refuses a body over client_max_size while reading it; _errors answers 413 in JSON.
        app = web.Application(client_max_size=self.settings.max_body_bytes, middlewares=[self._errors])
        app.add_routes([
            web.post("/v2/models/{name}/infer", self._infer),
            web.get("/v2/health/live", self._live),
            web.get("/v2/health/ready", self._ready),
            web.get("/v2/models/{name}", self._model_metadata),
            web.get("/v2/models/{name}/ready", self._model_ready),
            web.get("/metrics", self._metrics),
            web.put("/admin/instances", self._admin_instances),
            web.put("/admin/spill", self._admin_spill),
            web.get("/admin/state", self._admin_state),
        ])
        app.on_startup.append(self._on_startup)
        app.on_cleanup.append(self._on_cleanup)
        return app

    async def _on_startup(self, _app: web.Application) -> None:
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30))
        if self._function_factory is not None:
            self._functions = self._function_factory(self._session)
        self._probe_task = asyncio.create_task(self._probe_loop())

    async def _on_cleanup(self, _app: web.Application) -> None:
        if self._probe_task is not None:
            self._probe_task.cancel()
            await asyncio.gather(self._probe_task, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
        for inst in [*self.fleet.instances.values(), *self.fleet.draining]:
            if inst.pool is not None:
                inst.pool.close()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> "Router":
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, backlog=LISTEN_BACKLOG)
        await site.start()
        bound = site._server.sockets[0].getsockname()   # the port the OS chose when port=0
        self.url = f"http://{bound[0]}:{bound[1]}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _probe_loop(self) -> None:
        """Put instances that were marked down back once /v2/health/ready answers 200."""
        while True:
            await asyncio.sleep(self.settings.probe_interval_s)
            down = [i for i in self.fleet.instances.values() if not i.up]
            if down:
                results = await asyncio.gather(*(self._probe(i) for i in down))
                for inst, ok in zip(down, results):
                    if ok:
                        self.fleet.mark_up(inst, self._now())
                        self.counts["instance_up"] += 1

    async def _probe(self, inst: Instance) -> bool:
        try:
            async with self._session.get(inst.ready_url, timeout=self._probe_timeout) as resp:
                return resp.status == 200
        except _BACKEND_ERRORS:
            return False

    # ------------------------------------------------------------------ HTTP plumbing
    @web.middleware
    async def _errors(self, request: web.Request, handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:      # unknown route, wrong method, body too large
            if exc.status == 413:
                return error_response(413, f"request body over {self.settings.max_body_bytes} bytes")
            return error_response(exc.status, exc.reason)
        except Exception as exc:               # a bug: answer, log, keep serving
            request.app.logger.exception("router: unhandled error")
            return error_response(500, f"internal error: {type(exc).__name__}")

    def _denied(self, request: web.Request) -> web.Response | None:
        token = self.settings.auth_token
        if token is None:
            return None
        given = request.headers.get("Authorization", "")
        if given.startswith("Bearer ") and hmac.compare_digest(given[7:].strip().encode(), token.encode()):
            return None
        return error_response(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})

    def _ready_now(self) -> bool:
        return self.fleet.functions or any(i.open for i in self.fleet.instances.values())

    async def _live(self, _request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def _ready(self, _request: web.Request) -> web.Response:
        return web.Response(status=200) if self._ready_now() else error_response(503, "no backend ready")

    async def _metrics(self, _request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.exposition(), content_type="text/plain", charset="utf-8")

    def _unknown_model(self, request: web.Request) -> web.Response | None:
        name = request.match_info["name"]
        if name != self._model_name:
            return error_response(404, f"unknown model {name!r} (this router serves {self._model_name!r})")
        return None

    async def _model_metadata(self, request: web.Request) -> web.Response:
        refused = self._denied(request) or self._unknown_model(request)
        if refused:
            return refused
        for inst in self.fleet.instances.values():      # the backends know the tensors
            if inst.open:
                try:
                    url = f"{inst.url}/v2/models/{self._model_name}"
                    async with self._session.get(url, timeout=self._probe_timeout) as resp:
                        if resp.status == 200:
                            return web.Response(body=await resp.read(), content_type=JSON)
                except _BACKEND_ERRORS:
                    pass
        return web.Response(body=orjson.dumps({"name": self._model_name, "versions": [],
                                               "platform": "spillway-router", "inputs": [], "outputs": []}),
                            content_type=JSON)

    async def _model_ready(self, request: web.Request) -> web.Response:
        refused = self._denied(request) or self._unknown_model(request)
        if refused:
            return refused
        return await self._ready(request)

    # ------------------------------------------------------------------ admin
    async def _admin_body(self, request: web.Request) -> dict[str, Any]:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError as exc:
            raise RouterError(f"malformed JSON: {str(exc).splitlines()[0]}") from None
        if not isinstance(body, dict):
            raise RouterError("expected a JSON object")
        return body

    async def _admin(self, request: web.Request, apply: Callable[[dict[str, Any]], None]) -> web.Response:
        refused = self._denied(request)
        if refused:
            return refused
        try:
            apply(await self._admin_body(request))
        except RouterError as exc:
            return error_response(400, str(exc))
        return web.Response(body=orjson.dumps(self.stats()), content_type=JSON)

    async def _admin_instances(self, request: web.Request) -> web.Response:
        def apply(body: dict[str, Any]) -> None:
            if not isinstance(body.get("instances"), list):
                raise RouterError("instances: expected {\"instances\": [{\"id\": ..., \"url\": ...}, ...]}")
            self.set_instances(body["instances"])
        return await self._admin(request, apply)

    async def _admin_spill(self, request: web.Request) -> web.Response:
        def apply(body: dict[str, Any]) -> None:
            unknown = sorted(set(body) - {"enabled", "threshold_ms"})
            if unknown:
                raise RouterError(f"spill: unknown key {unknown[0]!r} (allowed: enabled, threshold_ms)")
            self.set_spill_rule(body.get("enabled", self.fleet.spill_enabled),
                                body.get("threshold_ms", self.fleet.spill_threshold_s * 1000.0))
        return await self._admin(request, apply)

    async def _admin_state(self, request: web.Request) -> web.Response:
        return self._denied(request) or web.Response(body=orjson.dumps(self.stats()), content_type=JSON)

    # ------------------------------------------------------------------ inference
    async def _infer(self, request: web.Request) -> web.Response:
        started_s = self._now()
        refused = self._denied(request) or self._unknown_model(request)
        if refused is None:
            body = await request.read()
            try:
                check_request(body)
            except BadRequest as exc:
                refused = error_response(400, str(exc))
        if refused is not None:
            self.metrics.observe("none", refused.status, 0.0)
            self.counts[f"none_{refused.status}"] += 1
            return refused
        response = await self._serve(body)
        path = response.headers.get("X-Spillway-Path", "none")
        self.metrics.observe(path, response.status, self._now() - started_s)
        self.counts[f"{path}_{response.status}"] += 1
        return response

    async def _serve(self, body: bytes) -> web.Response:
        """Route, send, and on failure route again until a backend answers or none is left."""
        failover, use_functions, force_functions, throttles, failures = False, True, False, 0, 0
        max_failures = 2 + len(self.fleet.instances)    # a flapping instance cannot loop us forever
        while True:
            if force_functions and use_functions:
                route = Route(FUNCTION, reason="instances failing")
            else:
                route = self.fleet.route(self._now(), failover=failover, functions=use_functions)
            if route.kind == FUNCTION:
                if throttles == 0:                      # count the spill once, not per retry
                    self.metrics.spills.labels(route.reason).inc()
                    self.counts["spills"] += 1
                result = await self._invoke(body)
                if isinstance(result, web.Response):
                    return result
                if result == "throttled":
                    throttles += 1
                    if self.fleet.route(self._now(), functions=False).kind in (INSTANCE, QUEUE):
                        use_functions = False           # an instance (now, or via the queue) beats waiting
                    elif throttles <= self.settings.throttle_retries:
                        self.metrics.retries.labels("function_throttled").inc()
                        await asyncio.sleep(self.settings.throttle_backoff_s * 2 ** (throttles - 1))
                    else:
                        return error_response(503, f"functions throttled ({throttles} attempts) and no instance free")
                    continue
                use_functions = False                   # the function backend failed: instances only
                if self.fleet.route(self._now(), functions=False).kind not in (INSTANCE, QUEUE):
                    return error_response(502, f"function backend failed ({result}) and no instance can take it")
                self.metrics.retries.labels("function_failed").inc()
                continue
            if route.kind == INSTANCE:
                inst = self.fleet.take(route.instance_id, self._now())
            elif route.kind == QUEUE:
                inst = await self._wait_in_queue()
                if inst is None:                        # every instance went away meanwhile
                    failover = True
                    continue
            else:
                return error_response(503, f"no backend can take the request: {route.reason}")
            response = await self._forward(inst, body)
            if response is not None:
                return response
            failures += 1
            self.metrics.retries.labels("instance_failed").inc()
            self.counts["retries"] += 1
            if inst.up and not inst.draining:
                self.fleet.mark_down(inst)
                self.counts["instance_down"] += 1
            failover = True
            if failures >= max_failures:
                if not (self.fleet.functions and use_functions):
                    return error_response(502, f"instances failed {failures} times for this request")
                force_functions = True

    async def _wait_in_queue(self) -> Instance | None:
        fut = self.fleet.enqueue()
        self.counts["queued"] += 1
        try:
            return await fut
        except asyncio.CancelledError:
            self.fleet.leave(fut, self._now())
            raise

    async def _forward(self, inst: Instance, body: bytes) -> web.Response | None:
        """Send to an instance; None when it failed (refused, reset, timeout, 5xx)."""
        if inst.pool is None:
            inst.pool = Pool(inst.url)
        try:
            resp = await inst.pool.send(inst.pool.build_post(inst.infer_path, body, _FORWARD_HEADERS),
                                        self.settings.instance_timeout_s)
        except (OSError, TimeoutError):
            return None
        finally:
            self.fleet.release(inst, self._now())
            if inst.draining and inst.load.outstanding == 0:
                inst.pool.close()
        if resp.status >= 500:
            return None
        headers = {"Content-Type": resp.headers.get("content-type", JSON),
                   "X-Spillway-Path": "instance", "X-Spillway-Instance": inst.id}
        extra = resp.headers.get("inference-header-content-length")
        if extra is not None:
            headers["Inference-Header-Content-Length"] = extra
        return web.Response(status=resp.status, body=resp.body, headers=headers)

    async def _invoke(self, body: bytes) -> web.Response | str:
        """Invoke the function backend: a response, or why not ("throttled" or a failure)."""
        try:
            result = await self._functions.invoke(body)
        except (FunctionInvokeError, *_BACKEND_ERRORS) as exc:
            return type(exc).__name__
        if result.throttled or result.status == 429:
            self.metrics.throttles.inc()
            self.counts["throttles"] += 1
            return "throttled"
        if result.status >= 500:
            return f"HTTP {result.status}"
        path = "function-cold" if result.cold_start else "function-warm"
        headers = {"X-Spillway-Path": path}
        if result.function_error:
            return error_response(502, f"function error: {_first_line(result.body)}", headers)
        if result.status != 200:
            return web.Response(status=result.status, body=result.body, content_type=JSON, headers=headers)
        if result.body.startswith(b'{"statusCode"'):
            # The handler's answer to a bad request: {"statusCode": 400, "error": "..."}.
            answer = orjson.loads(result.body)
            return error_response(int(answer.get("statusCode", 400)), str(answer.get("error", "bad request")),
                                  headers)
        return web.Response(status=200, body=result.body, content_type=JSON, headers=headers)


def _first_line(body: bytes) -> str:
    text = body.decode("utf-8", "replace").strip()
    return (text.splitlines() or [""])[0][:300]
