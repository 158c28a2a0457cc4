"""Profile and catalog figures turned into the flat arrays the kernel reads."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from controller.config import Config
from controller.scenario import Scenario
from simulator import kernel as K


@dataclass(frozen=True)
class TypeTables:
    index: dict[str, int]     # instance type -> row
    type_f: np.ndarray        # [type, TF_*]: max queue delay (s), jitter sigma, exponential flag
    type_i: np.ndarray        # [type, TI_*]: max batch, fire size, outstanding limit
    lat_tab: np.ndarray       # [type, b]: median latency (s) of a batch of b
    take_tab: np.ndarray      # [type, n]: batch size taken when n requests are available
    est_tab: np.ndarray       # [type, q]: router's estimate of the work for q queued requests (s)
    queue_capacity: int       # power of two >= the largest outstanding limit


def lognormal_sigma(cv: float) -> float:
    """sigma of a lognormal with mean 1 and coefficient of variation cv: sqrt(ln(1 + cv^2))."""
    return math.sqrt(math.log1p(cv * cv)) if cv > 0 else 0.0


def type_tables(scenario: Scenario, cfg: Config) -> TypeTables:
    types = sorted({o.key[0] for o in scenario.options})
    profiles = [scenario.model.instance(t) for t in types]
    bmax = max(p.max_batch for p in profiles)
    per_batch = cfg.router.max_outstanding_batches
    n = len(types)
    type_f, type_i = np.zeros((n, K.N_TF)), np.zeros((n, K.N_TI), np.int64)
    lat_tab = np.zeros((n, bmax + 1))
    take_tab = np.zeros((n, bmax + 1), np.int64)
    est_tab = np.zeros((n, bmax * per_batch + 2))
    for row, p in enumerate(profiles):
        type_f[row] = (p.max_queue_delay_ms / 1000.0, lognormal_sigma(p.jitter_cv),
                       1.0 if p.jitter_dist == "exponential" else 0.0)
        preferred = p.preferred_batch_sizes
        type_i[row] = (p.max_batch, min(preferred) if preferred else p.max_batch, p.max_batch * per_batch)
        for b in range(1, p.max_batch + 1):
            lat_tab[row, b] = p.latency_ms(b) / 1000.0
            # Triton takes the largest preferred size that the available requests can fill,
            # or all of them when none fits (e.g. preferred 4, 8 with 6 available -> 4).
            fits = [s for s in preferred if s <= b]
            take_tab[row, b] = max(fits) if fits else b
        # q requests in batches of max_batch: (q-1)//B full batches plus the rest.
        # E.g. B = 64, q = 100: one batch of 64 then one of 36.
        for q in range(1, est_tab.shape[1]):
            full = (q - 1) // p.max_batch
            rest = q - full * p.max_batch
            est_tab[row, q] = full * lat_tab[row, p.max_batch] + lat_tab[row, rest]
    capacity = 1 << max(0, (bmax * per_batch - 1).bit_length())
    return TypeTables({t: i for i, t in enumerate(types)}, type_f, type_i, lat_tab, take_tab, est_tab, capacity)


def dist_params(dist) -> tuple[int, float, float]:
    """A catalog/profile Distribution as the kernel's (code, p1, p2)."""
    if dist is None:
        return K.D_FIXED, 0.0, 0.0
    if dist.kind == "fixed":
        return K.D_FIXED, float(dist.value), 0.0
    if dist.kind == "lognormal":
        return K.D_LOGNORMAL, math.log(dist.median), dist.sigma
    if dist.kind == "uniform":
        return K.D_UNIFORM, float(dist.low), float(dist.high)
    if dist.kind == "normal":
        return K.D_NORMAL, float(dist.mean_), float(dist.sd)
    # An empirical distribution enters the kernel through its mean.
    return K.D_FIXED, float(dist.mean()), 0.0


def function_params(scenario: Scenario, cfg: Config) -> tuple[np.ndarray, np.ndarray]:
    fn, fc = scenario.function, cfg.functions
    fn_p, fn_i = np.zeros(K.N_FP), np.zeros(K.N_FI, np.int64)
    burst = scenario.catalog.functions.burst_scaling_per_10s
    fn_p[K.FP_KEEP_ALIVE] = fc.keep_alive_s
    fn_p[K.FP_RETRY_DELAY] = fc.retry_delay_s
    # Lambda adds up to `burst` execution environments per 10 s: a token bucket of that size,
    # refilled at burst/10 per second.
    fn_p[K.FP_TOKEN_RATE] = burst / 10.0
    fn_p[K.FP_TOKEN_MAX] = float(burst)
    fn_i[K.FI_MAX_RETRIES] = fc.max_retries
    fn_i[K.FI_MAX_ENVS] = fc.max_concurrency
    fn_i[K.FI_RETRY] = 1 if fc.on_throttle == "retry" else 0
    fn_i[K.FI_BILLS_INIT] = 1 if scenario.catalog.functions.bills_init_phase else 0
    if fn is not None:
        fn_p[K.FP_SVC] = fn.latency_ms(1) / 1000.0
        fn_p[K.FP_SIGMA] = lognormal_sigma(fn.jitter_cv)
        fn_p[K.FP_EXPONENTIAL] = 1.0 if fn.jitter_dist == "exponential" else 0.0
        code, p1, p2 = dist_params(fn.cold_start_s)
        fn_i[K.FI_COLD_KIND] = code
        fn_p[K.FP_COLD1], fn_p[K.FP_COLD2] = p1, p2
        if fn.cold_start_s is not None and fn.cold_start_s.kind != "uniform":
            fn_p[K.FP_COLD_LO], fn_p[K.FP_COLD_HI] = fn.cold_start_s.low, fn.cold_start_s.high
    return fn_p, fn_i
