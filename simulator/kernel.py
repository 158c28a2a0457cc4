"""The per-request kernel: router + instance queues with dynamic batching + function pool.

Compiled with numba and run between two controller ticks over that interval's arrivals, so the
per-request work never touches the Python interpreter. All times are seconds since the trace
start; latencies are recorded in the histogram in milliseconds.

Instances are simulated lazily and exactly: a batch's start time depends only on requests that
arrived before it, so before routing a request arriving at t, each instance is advanced by
starting every batch whose start time is < t. Triton's dynamic batcher fires when the queue holds
a full batch or the oldest request has waited `max_queue_delay`, whichever is first, and never
before the model instance is free:

    start = max(free_at, min(oldest + max_delay, arrival of the max_batch-th queued request))

and it takes the queued requests that arrived by `start` (at most max_batch). With max_batch = 1
and max_delay = 0 this is a FIFO single server, which the M/D/1 and M/M/1 tests check.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from simulator.histogram import LO_MS, LOG_RATIO, N_BINS

PATH_INSTANCE, PATH_WARM, PATH_COLD = 0, 1, 2

# Counters accumulated per window (indices into the `counters` array).
C_SERVED_INSTANCE, C_SERVED_WARM, C_SERVED_COLD = 0, 1, 2
C_DROPPED, C_THROTTLED, C_SLO_MISS = 3, 4, 5
C_FN_MS_ON_DEMAND, C_FN_MS_PROVISIONED, C_FN_REQUESTS = 6, 7, 8
C_COLD_STARTS, C_ARRIVALS = 9, 10
N_COUNTERS = 11

# Distribution codes for cold starts (see simulator.engine.dist_code).
D_FIXED, D_LOGNORMAL, D_UNIFORM, D_NORMAL = 0, 1, 2, 3


@njit(cache=True, inline="always")
def _draw(kind, p1, p2):
    if kind == D_FIXED:
        return p1
    if kind == D_LOGNORMAL:
        return math.exp(p1 + p2 * np.random.standard_normal())
    if kind == D_UNIFORM:
        return p1 + (p2 - p1) * np.random.random()
    return max(0.0, p1 + p2 * np.random.standard_normal())


@njit(cache=True, inline="always")
def _jitter(sigma):
    # Lognormal multiplier with mean 1: exp(sigma*z - sigma^2/2); sigma = 0 means deterministic.
    if sigma <= 0.0:
        return 1.0
    return math.exp(sigma * np.random.standard_normal() - 0.5 * sigma * sigma)


@njit(cache=True, inline="always")
def _record(latency_s, path, idx, slo_s, hist, win_hist, counters, lat_out):
    ms = latency_s * 1000.0
    if ms <= LO_MS:
        b = 0
    else:
        b = int(math.log(ms / LO_MS) / LOG_RATIO)
        if b >= N_BINS:
            b = N_BINS - 1
    hist[path, b] += 1
    win_hist[b] += 1
    if latency_s > slo_s:
        counters[C_SLO_MISS] += 1
    if lat_out.shape[0] > 0:
        lat_out[idx] = latency_s


@njit(cache=True, inline="always")
def _advance(i, t, inst_type, free_at, qt, qi, qhead, qlen, last_done,
                     lat_tab, max_batch, max_delay_s, jit_sigma, slo_s,
                     hist, win_hist, counters, lat_out):
    """Start every batch of instance i whose start time is before t (inlined in the hot loop)."""
    cap = qt.shape[1]
    ty = inst_type[i]
    bmax = max_batch[ty]
    while qlen[i] > 0:
        h = qhead[i]
        trigger = qt[i, h] + max_delay_s[ty]
        if qlen[i] >= bmax:
            full_at = qt[i, (h + bmax - 1) % cap]
            if full_at < trigger:
                trigger = full_at
        start = free_at[i] if free_at[i] > trigger else trigger
        if start >= t:
            break
        limit = qlen[i] if qlen[i] < bmax else bmax
        n = 0
        while n < limit and qt[i, (h + n) % cap] <= start:
            n += 1
        done = start + lat_tab[ty, n] * _jitter(jit_sigma[ty])
        for j in range(n):
            k = (h + j) % cap
            _record(done - qt[i, k], PATH_INSTANCE, qi[i, k], slo_s, hist, win_hist, counters, lat_out)
        counters[C_SERVED_INSTANCE] += n
        qhead[i] = (h + n) % cap
        qlen[i] -= n
        free_at[i] = done
        last_done[i] = done


@njit(cache=True)
def advance_instance(i, t, inst_type, free_at, qt, qi, qhead, qlen, last_done,
                     lat_tab, max_batch, max_delay_s, jit_sigma, slo_s,
                     hist, win_hist, counters, lat_out):
    """Start every batch of instance i whose start time is before t."""
    _advance(i, t, inst_type, free_at, qt, qi, qhead, qlen, last_done,
             lat_tab, max_batch, max_delay_s, jit_sigma, slo_s, hist, win_hist, counters, lat_out)


@njit(cache=True, inline="always")
def _expected_done(i, t, inst_type, free_at, qlen, lat_tab, max_batch, max_delay_s):
    """The router's estimate of when a request joining instance i now would complete."""
    ty = inst_type[i]
    bmax = max_batch[ty]
    q = qlen[i] + 1
    if free_at[i] > t:
        start = free_at[i]
    else:
        start = t + (max_delay_s[ty] if q < bmax else 0.0)
    full = (q - 1) // bmax
    rest = q - full * bmax
    return start + full * lat_tab[ty, bmax] + lat_tab[ty, rest]


@njit(cache=True, inline="always")
def _invoke_function(t, idx, env_free_at, env_alive, env_prov, keep_alive_s, fn_svc_s, fn_sigma,
                     cold_kind, cold_p1, cold_p2, bills_init, slo_s,
                     hist, win_hist, counters, lat_out):
    """Serve one request on a function; returns False when throttled (no slot free)."""
    best = -1
    best_free = -math.inf
    best_prov = False
    dead = -1
    n = env_free_at.shape[0]
    for k in range(n):
        if env_alive[k] == 0:
            if dead < 0:
                dead = k
            continue
        f = env_free_at[k]
        if f > t:
            continue                       # busy
        if env_prov[k] == 0 and f + keep_alive_s < t:
            env_alive[k] = 0               # idle past keep-alive: the environment is gone
            if dead < 0:
                dead = k
            continue
        prov = env_prov[k] == 1
        # Provisioned environments serve first (as Lambda does); then the most recently used
        # idle one, so the rest can expire.
        if best < 0 or (prov and not best_prov) or (prov == best_prov and f > best_free):
            best, best_free, best_prov = k, f, prov
    svc = fn_svc_s * _jitter(fn_sigma)
    if best >= 0:
        env_free_at[best] = t + svc
        _record(svc, PATH_WARM, idx, slo_s, hist, win_hist, counters, lat_out)
        counters[C_SERVED_WARM] += 1
        counters[C_FN_REQUESTS] += 1
        billed = math.ceil(svc * 1000.0)
        if best_prov:
            counters[C_FN_MS_PROVISIONED] += billed
        else:
            counters[C_FN_MS_ON_DEMAND] += billed
        return True
    if dead < 0:
        counters[C_THROTTLED] += 1
        return False
    init = _draw(cold_kind, cold_p1, cold_p2)
    env_alive[dead] = 1
    env_prov[dead] = 0
    env_free_at[dead] = t + init + svc
    _record(init + svc, PATH_COLD, idx, slo_s, hist, win_hist, counters, lat_out)
    counters[C_SERVED_COLD] += 1
    counters[C_COLD_STARTS] += 1
    counters[C_FN_REQUESTS] += 1
    counters[C_FN_MS_ON_DEMAND] += math.ceil(((init if bills_init else 0.0) + svc) * 1000.0)
    return True


@njit(cache=True)
def run_window(arrivals, idx0, t_end,
               inst_type, ready_at, accepting, free_at, qt, qi, qhead, qlen, last_done, n_inst,
               lat_tab, max_batch, max_delay_s, jit_sigma,
               slo_s, spill_on, spill_thr_s, fn_enabled,
               env_free_at, env_alive, env_prov, keep_alive_s, fn_svc_s, fn_sigma,
               cold_kind, cold_p1, cold_p2, bills_init,
               hist, win_hist, counters, lat_out, seed):
    """Route and serve `arrivals` (sorted, all in [window start, t_end)), then start every batch
    that begins before t_end. Arrival j has global index idx0 + j (for `lat_out`)."""
    np.random.seed(seed)
    cap = qt.shape[1]
    for j in range(arrivals.shape[0]):
        t = arrivals[j]
        counters[C_ARRIVALS] += 1
        best = -1
        best_done = math.inf
        for i in range(n_inst):
            if qlen[i] > 0:
                _advance(i, t, inst_type, free_at, qt, qi, qhead, qlen, last_done,
                                 lat_tab, max_batch, max_delay_s, jit_sigma, slo_s,
                                 hist, win_hist, counters, lat_out)
            if accepting[i] == 0 or ready_at[i] > t or qlen[i] >= cap:
                continue
            d = _expected_done(i, t, inst_type, free_at, qlen, lat_tab, max_batch, max_delay_s)
            if d < best_done:
                best, best_done = i, d
        want_function = fn_enabled and spill_on and (best < 0 or best_done - t > spill_thr_s)
        if want_function:
            if _invoke_function(t, idx0 + j, env_free_at, env_alive, env_prov, keep_alive_s, fn_svc_s,
                                fn_sigma, cold_kind, cold_p1, cold_p2, bills_init, slo_s,
                                hist, win_hist, counters, lat_out):
                continue
            # Throttled: an instance queue, even a slow one, is better than losing the request.
        if best < 0:
            counters[C_DROPPED] += 1
            continue
        k = (qhead[best] + qlen[best]) % cap
        qt[best, k] = t
        qi[best, k] = idx0 + j
        qlen[best] += 1
    for i in range(n_inst):
        if qlen[i] > 0:
            _advance(i, t_end, inst_type, free_at, qt, qi, qhead, qlen, last_done,
                             lat_tab, max_batch, max_delay_s, jit_sigma, slo_s,
                             hist, win_hist, counters, lat_out)
