"""The local stack on one host: the router, N real Triton servers and the local function runtime.

`spillway serve`, the end-to-end tests and the fidelity benchmark all start it through
`LocalStack`, so they run the same thing. Everything listens on loopback. The Triton servers'
batching settings come from the instance profile (max batch, max queue delay, preferred batch
sizes: the settings the profile was measured with), and the router's spill rule from the SLO by
the same rule the policies use (controller.policies.base.spill_threshold_ms), so a simulation
with the same profile and config models exactly this stack.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from serving.functions.runtime import FunctionRuntimeConfig, LocalFunctionRuntime
from serving.profiles import BackendProfile
from serving.router.app import Router, RouterSettings
from serving.triton.repository import TritonModelConfig, write_model_repository
from serving.triton.server import TritonServer, TritonSpec


@dataclass(frozen=True)
class StackSpec:
    instances: int
    instance_profile: BackendProfile
    router: RouterSettings
    functions: FunctionRuntimeConfig | None     # None: no function backend
    host: str = "127.0.0.1"
    port: int = 0
    pin_cpus: bool = False     # Triton servers on their own cores, this process on the last one

    @property
    def triton(self) -> TritonModelConfig:
        p = self.instance_profile
        return TritonModelConfig(max_batch_size=p.max_batch, max_queue_delay_ms=p.max_queue_delay_ms,
                                 preferred_batch_sizes=p.preferred_batch_sizes)


def spec_from_config(cfg) -> StackSpec:
    """The stack a config describes ([serve], [router], [functions], [slo], [scenario])."""
    from controller.config import ConfigError
    from controller.policies.base import PolicyContext, spill_threshold_ms
    from controller.scenario import build_scenario

    if cfg.serve.instance_type not in cfg.fleet.instance_types:
        raise ConfigError(f"serve.instance_type = {cfg.serve.instance_type!r}: must be one of "
                          f"fleet.instance_types ({', '.join(cfg.fleet.instance_types)})")
    scenario = build_scenario(cfg)
    profile = scenario.model.instance(cfg.serve.instance_type)
    key = (cfg.serve.instance_type, "on-demand")
    threshold_ms, _ = spill_threshold_ms(PolicyContext(cfg, scenario), {key})
    token = os.environ.get(cfg.serve.auth_token_env, "") if cfg.serve.auth_token_env else ""
    router = RouterSettings(max_outstanding_batches=cfg.router.max_outstanding_batches,
                            max_queue_per_instance=cfg.router.max_queue_per_instance,
                            spill_enabled=cfg.functions.enabled, spill_threshold_ms=threshold_ms,
                            max_body_bytes=cfg.serve.max_body_bytes, auth_token=token or None,
                            instance_timeout_s=cfg.serve.instance_timeout_s,
                            throttle_retries=cfg.functions.max_retries if cfg.functions.on_throttle == "retry" else 0,
                            throttle_backoff_s=cfg.functions.retry_delay_s)
    functions = None
    if cfg.functions.enabled:
        functions = FunctionRuntimeConfig(memory_mb=cfg.functions.memory_mb,
                                          max_concurrency=cfg.functions.max_concurrency,
                                          keep_alive_s=cfg.functions.keep_alive_s,
                                          warm_concurrency=cfg.functions.warm_concurrency,
                                          bills_init=scenario.catalog.functions.bills_init_phase)
    return StackSpec(instances=cfg.serve.instances, instance_profile=profile, router=router,
                     functions=functions, host=cfg.serve.host, port=cfg.serve.port, pin_cpus=cfg.serve.pin_cpus)


class LocalStack:
    """Start with `await stack.start()` (or `async with`), stop with `await stack.stop()`."""

    def __init__(self, spec: StackSpec, workdir: Path | None = None):
        self.spec = spec
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="spillway-stack-")
        self.workdir = Path(workdir or self._tmp.name)
        self.tritons: list[TritonServer] = []
        self.functions: LocalFunctionRuntime | None = None
        self.router: Router | None = None
        self._next_id = 0
        self._pinning = contextlib.ExitStack()
        self._server_cpus: tuple[int, ...] = ()

    @property
    def url(self) -> str:
        return self.router.url

    def infer_url(self) -> str:
        return f"{self.router.url}/v2/models/{self.spec.router.model}/infer"

    async def start(self) -> "LocalStack":
        try:
            if self.spec.pin_cpus:
                self._server_cpus = self._pinning.enter_context(pinned_apart())
            write_model_repository(self.workdir / "models", self.spec.triton)
            if self.spec.functions is not None:
                self.functions = await LocalFunctionRuntime(self.spec.functions).start()
                if self.spec.functions.warm_concurrency:      # ready before any traffic arrives
                    await self.functions.set_warm_concurrency(self.spec.functions.warm_concurrency, wait=True)
            settings = self.spec.router
            if self.functions is not None:
                settings = replace(settings, function_url=self.functions.invoke_url)
            self.router = await Router(settings, self.spec.instance_profile).start(self.spec.host, self.spec.port)
            await self.add_instances(self.spec.instances)
        except BaseException:
            await self.stop()
            raise
        return self

    async def add_instances(self, n: int) -> list[TritonServer]:
        """Start n Triton servers at once (their start-up overlaps) and route to them when ready."""
        new = [TritonServer(TritonSpec(self.workdir / "models", log_path=self._log_path(), cpus=self._server_cpus))
               for _ in range(n)]
        self.tritons.extend(new)
        await asyncio.gather(*(asyncio.to_thread(t.start) for t in new))
        self._publish()
        return new

    async def remove_instance(self, server: TritonServer) -> None:
        """Drain one server at the router (in-flight requests finish), then stop it."""
        self.tritons.remove(server)
        self._publish()
        await asyncio.to_thread(server.stop)

    def _log_path(self) -> Path:
        self._next_id += 1
        return self.workdir / f"triton-{self._next_id}.log"

    def _publish(self) -> None:
        self.router.set_instances([{"id": f"triton-{t.pid}", "url": f"http://{t.url}"} for t in self.tritons])

    async def stop(self) -> None:
        if self.router is not None:
            await self.router.stop()
        await asyncio.gather(*(asyncio.to_thread(t.stop) for t in self.tritons))
        if self.functions is not None:
            await self.functions.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
        self._pinning.close()

    async def __aenter__(self) -> "LocalStack":
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()


@contextlib.contextmanager
def pinned_apart():
    """Keep model servers and this process off each other's cores: yields the cores for Triton
    servers (all but the last of this process's CPUs) and pins this process -- the router, the
    function runtime and the workers it spawns from now on -- to the last one, until exit.
    On a 2-core host: Triton on core 0, everything else on core 1, so the instance's batch
    latency is what the profile measured however busy the router and functions are (as on
    separate machines). With one CPU there is nothing to separate: yields ()."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        yield ()
        return
    os.sched_setaffinity(0, cpus[-1:])
    try:
        yield tuple(cpus[:-1])
    finally:
        os.sched_setaffinity(0, cpus)
