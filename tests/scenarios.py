"""Small hand-built scenarios for simulator tests: one instance kind and/or one function size."""
from __future__ import annotations

import dataclasses

import numpy as np

from controller.config import Config, FunctionsConfig, StaticPeakPolicyConfig, load_config
from controller.scenario import InstanceOption, Scenario
from provisioners.catalog import load_catalog
from provisioners.distributions import Distribution
from serving.profiles import BackendProfile, ModelProfile
from simulator.engine import Simulation
from traces.model import Trace

G4DN_USD_PER_H = 0.526


def make_config(**sections) -> Config:
    """Defaults with whole sections replaced, e.g. make_config(functions=FunctionsConfig(...))."""
    cfg = load_config()
    for name, value in sections.items():
        cfg = dataclasses.replace(cfg, **{name: value})
    return cfg


def with_static_fleet(cfg: Config, n_instances: int, scenario: Scenario) -> Config:
    """static-peak sized to exactly n instances of the scenario's first kind."""
    cap = scenario.options[0].capacity_rps
    policies = dataclasses.replace(cfg.policies, static_peak=StaticPeakPolicyConfig(peak_rps=cap * n_instances))
    return dataclasses.replace(cfg, policies=policies)


def instance_profile(latencies_ms, max_delay_ms=0.0, jitter_dist="lognormal", jitter_cv=0.0,
                     preferred=()) -> BackendProfile:
    return BackendProfile("g4dn.xlarge", "instance", len(latencies_ms), tuple(latencies_ms), jitter_cv,
                          max_delay_ms, jitter_dist=jitter_dist, preferred_batch_sizes=tuple(preferred))


def function_profile(service_ms=100.0, cold_s=2.0, memory_mb=2048, jitter_dist="lognormal") -> BackendProfile:
    return BackendProfile(f"lambda-{memory_mb}", "function", 1, (service_ms,), 0.0, 0.0, memory_mb=memory_mb,
                          cold_start_s=Distribution(kind="fixed", value=cold_s), jitter_dist=jitter_dist)


def scenario(cfg: Config, instance: BackendProfile, function: BackendProfile | None = None,
             market: str = "on-demand", catalog=None) -> Scenario:
    """One instance kind priced as g4dn.xlarge (on-demand $0.526/h) plus an optional function."""
    catalog = catalog or load_catalog()
    backends = {instance.backend: instance}
    if function is not None:
        backends[function.backend] = function
    model = ModelProfile("test", backends, "test")
    itype = catalog.instance("g4dn.xlarge")
    opt = InstanceOption(("g4dn.xlarge", market), itype, instance, itype.price_usd_per_h(market),
                         instance.capacity_rps_at_slo(cfg.slo.latency_ms))
    return Scenario(catalog, model, (opt,), function, cfg.slo.latency_ms)


def trace_of(arrivals, duration_s: float) -> Trace:
    return Trace("hand", "test", "none", "", duration_s, arrivals_s=np.asarray(arrivals, float))


def run(cfg, scen, trace_or_arrivals, duration_s=None, policy="static-peak", record=True, seed=None):
    trace = trace_or_arrivals if isinstance(trace_or_arrivals, Trace) else trace_of(trace_or_arrivals, duration_s)
    return Simulation(cfg, scen, trace, policy, seed=seed, record_latencies=record).run()


def functions_config(**kw) -> FunctionsConfig:
    base = dict(enabled=True, memory_mb=2048, keep_alive_s=600.0)
    base.update(kw)
    return FunctionsConfig(**base)
