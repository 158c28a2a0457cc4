"""The per-request kernel: router + instance queues with dynamic batching + function pool.

Compiled with numba and run between two controller ticks over that interval's arrivals, so the
per-request work never touches the Python interpreter. Times are seconds since the trace start.

Instances are simulated lazily and exactly. A batch's start depends only on requests that
arrived before it, so each instance keeps `next_start`, the time its next batch would begin given
its queue, and is advanced (its batches started) only when a request arrives after that time.
Triton's dynamic batcher fires when the queue can form a batch of `fire` requests (the smallest
preferred batch size, or max_batch) or the oldest request has waited `max_queue_delay`, whichever
is first, and never before the model instance is free:

    start = max(free_at, min(oldest + max_delay, arrival of the fire-th queued request))

It takes the queued requests that arrived by `start` (at most max_batch); with preferred sizes,
the largest preferred size that fits (else all of them). With max_batch = 1 and max_delay = 0
this is a FIFO single server, which the M/D/1 and M/M/1 tests check.

The router sends a request to the ready, accepting instance with the earliest expected
completion (`_expected_done`), or to functions when spilling is on and that completion would be
more than `spill_thr_s` away (or no instance can take it). A throttled function request goes to
the best instance if there is one, else is retried with exponential backoff or dropped.
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
C_COLD_STARTS, C_ARRIVALS, C_RETRIES, C_EVICTED = 9, 10, 11, 12
C_FN_ARRIVALS, C_FN_BUSY_SEEN = 13, 14            # PASTA: busy environments seen by arrivals
C_LAT_SUM_INSTANCE, C_LAT_SUM_WARM, C_LAT_SUM_COLD = 15, 16, 17   # seconds, for means
N_COUNTERS = 18

# Instance state: float columns of `inst_f`, int columns of `inst_i`.
IF_FREE, IF_READY, IF_ACCEPT_UNTIL, IF_LAST_DONE, IF_NEXT = 0, 1, 2, 3, 4
N_IF = 5
II_TYPE, II_HEAD, II_LEN = 0, 1, 2
N_II = 3
# Per instance type: float params, int params.
TF_DELAY, TF_SIGMA, TF_EXPONENTIAL = 0, 1, 2
N_TF = 3
TI_BMAX, TI_FIRE = 0, 1
N_TI = 2
# Functions: float params, int params, float state.
FP_KEEP_ALIVE, FP_SVC, FP_SIGMA, FP_EXPONENTIAL, FP_COLD1, FP_COLD2 = 0, 1, 2, 3, 4, 5
FP_RETRY_DELAY, FP_TOKEN_RATE, FP_TOKEN_MAX, FP_COLD_LO, FP_COLD_HI = 6, 7, 8, 9, 10
N_FP = 11
FI_COLD_KIND, FI_BILLS_INIT, FI_MAX_RETRIES, FI_RETRY = 0, 1, 2, 3
N_FI = 4
FS_TOKENS, FS_TOKENS_T, FS_N_HI, FS_RETRY_SIZE = 0, 1, 2, 3
N_FS = 4

# Distribution codes for cold starts (see simulator.engine.dist_params).
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
def _jitter(sigma, exponential):
    # A mean-1 multiplier: exponential(1) (cv 1), or lognormal exp(sigma*z - sigma^2/2).
    if exponential:
        return np.random.exponential(1.0)
    if sigma <= 0.0:
        return 1.0
    return math.exp(sigma * np.random.standard_normal() - 0.5 * sigma * sigma)


@njit(cache=True, inline="always")
def _record(latency_s, path, idx, slo_s, hist, win_hist, counters, lat_out):
    ms = latency_s * 1000.0
    b = 0
    if ms > LO_MS:
        b = int(math.log(ms / LO_MS) / LOG_RATIO)
        if b >= N_BINS:
            b = N_BINS - 1
    hist[path, b] += 1
    win_hist[b] += 1
    counters[C_LAT_SUM_INSTANCE + path] += latency_s
    if latency_s > slo_s:
        counters[C_SLO_MISS] += 1
    if lat_out.shape[0] > 0:
        lat_out[idx] = latency_s


@njit(cache=True, inline="always")
def _update_next(i, inst_f, inst_i, qt, qmask, type_f, type_i):
    """Recompute when instance i's next batch would start, from its queue."""
    n = inst_i[i, II_LEN]
    if n == 0:
        inst_f[i, IF_NEXT] = math.inf
        return
    ty = inst_i[i, II_TYPE]
    h = inst_i[i, II_HEAD]
    trigger = qt[i, h] + type_f[ty, TF_DELAY]
    fire = type_i[ty, TI_FIRE]
    if n >= fire:
        full_at = qt[i, (h + fire - 1) & qmask]
        if full_at < trigger:
            trigger = full_at
    free = inst_f[i, IF_FREE]
    inst_f[i, IF_NEXT] = free if free > trigger else trigger


@njit(cache=True, inline="always")
def _advance(i, t, inst_f, inst_i, qt, qa, qi, qmask, type_f, type_i, lat_tab, take_tab, slo_s,
             hist, win_hist, counters, lat_out):
    """Start every batch of instance i whose start time is before t."""
    ty = inst_i[i, II_TYPE]
    bmax = type_i[ty, TI_BMAX]
    while inst_f[i, IF_NEXT] < t:
        start = inst_f[i, IF_NEXT]
        h = inst_i[i, II_HEAD]
        n_q = inst_i[i, II_LEN]
        limit = n_q if n_q < bmax else bmax
        n = 0
        while n < limit and qt[i, (h + n) & qmask] <= start:
            n += 1
        take = take_tab[ty, n]
        done = start + lat_tab[ty, take] * _jitter(type_f[ty, TF_SIGMA], type_f[ty, TF_EXPONENTIAL] != 0.0)
        for j in range(take):
            k = (h + j) & qmask
            _record(done - qa[i, k], PATH_INSTANCE, qi[i, k], slo_s, hist, win_hist, counters, lat_out)
        counters[C_SERVED_INSTANCE] += take
        inst_i[i, II_HEAD] = (h + take) & qmask
        inst_i[i, II_LEN] = n_q - take
        inst_f[i, IF_FREE] = done
        inst_f[i, IF_LAST_DONE] = done
        _update_next(i, inst_f, inst_i, qt, qmask, type_f, type_i)


@njit(cache=True)
def advance_instance(i, t, inst_f, inst_i, qt, qa, qi, qmask, type_f, type_i, lat_tab, take_tab, slo_s,
                     hist, win_hist, counters, lat_out):
    """Start every batch of instance i whose start time is before t (t = inf: finish the queue)."""
    _advance(i, t, inst_f, inst_i, qt, qa, qi, qmask, type_f, type_i, lat_tab, take_tab, slo_s,
             hist, win_hist, counters, lat_out)


@njit(cache=True, inline="always")
def _heap_push(rh_t, rh_a, rh_i, rh_n, size, t, a, idx, attempt):
    """Push onto the retry min-heap (keyed by retry time); returns the new size (-1 if full)."""
    if size >= rh_t.shape[0]:
        return -1
    k = size
    while k > 0:
        parent = (k - 1) >> 1
        if rh_t[parent] <= t:
            break
        rh_t[k], rh_a[k], rh_i[k], rh_n[k] = rh_t[parent], rh_a[parent], rh_i[parent], rh_n[parent]
        k = parent
    rh_t[k], rh_a[k], rh_i[k], rh_n[k] = t, a, idx, attempt
    return size + 1


@njit(cache=True, inline="always")
def _heap_pop(rh_t, rh_a, rh_i, rh_n, size):
    """Remove the heap's top (the caller read it first); returns the new size."""
    size -= 1
    t, a, idx, n = rh_t[size], rh_a[size], rh_i[size], rh_n[size]
    k = 0
    while True:
        c = 2 * k + 1
        if c >= size:
            break
        if c + 1 < size and rh_t[c + 1] < rh_t[c]:
            c += 1
        if rh_t[c] >= t:
            break
        rh_t[k], rh_a[k], rh_i[k], rh_n[k] = rh_t[c], rh_a[c], rh_i[c], rh_n[c]
        k = c
    rh_t[k], rh_a[k], rh_i[k], rh_n[k] = t, a, idx, n
    return size


@njit(cache=True, inline="always")
def _invoke_function(t, a, idx, env_f, env_alive, env_prov, fn_p, fn_i, fn_s, slo_s,
                     hist, win_hist, counters, lat_out):
    """Serve one request on a function; returns False when throttled."""
    keep_alive = fn_p[FP_KEEP_ALIVE]
    best = -1
    best_free = -math.inf
    best_prov = False
    dead = -1
    busy = 0
    n_hi = int(fn_s[FS_N_HI])
    for k in range(n_hi):
        if env_alive[k] == 0:
            if dead < 0:
                dead = k
            continue
        f = env_f[k]
        if f > t:
            busy += 1
            continue
        if env_prov[k] == 0 and f + keep_alive < t:
            env_alive[k] = 0               # idle past keep-alive: the environment is gone
            if dead < 0:
                dead = k
            continue
        prov = env_prov[k] == 1
        # Provisioned environments serve first (as Lambda does); then the most recently used
        # idle one, so that the others can expire.
        if best < 0 or (prov and not best_prov) or (prov == best_prov and f > best_free):
            best, best_free, best_prov = k, f, prov
    while n_hi > 0 and env_alive[n_hi - 1] == 0:
        n_hi -= 1
    counters[C_FN_ARRIVALS] += 1
    counters[C_FN_BUSY_SEEN] += busy
    svc = fn_p[FP_SVC] * _jitter(fn_p[FP_SIGMA], fn_p[FP_EXPONENTIAL] != 0.0)
    if best >= 0:
        env_f[best] = t + svc
        fn_s[FS_N_HI] = n_hi
        _record(t - a + svc, PATH_WARM, idx, slo_s, hist, win_hist, counters, lat_out)
        counters[C_SERVED_WARM] += 1
        counters[C_FN_REQUESTS] += 1
        billed = math.ceil(svc * 1000.0 - 1e-9)
        if best_prov:
            counters[C_FN_MS_PROVISIONED] += billed
        else:
            counters[C_FN_MS_ON_DEMAND] += billed
        return True
    # A new execution environment: needs a free concurrency slot and a burst-scaling token.
    if dead < 0 or dead >= n_hi:
        dead = n_hi
    tokens = min(fn_p[FP_TOKEN_MAX], fn_s[FS_TOKENS] + (t - fn_s[FS_TOKENS_T]) * fn_p[FP_TOKEN_RATE])
    fn_s[FS_TOKENS_T] = t
    if dead >= env_f.shape[0] or tokens < 1.0:
        fn_s[FS_TOKENS] = tokens
        fn_s[FS_N_HI] = n_hi
        counters[C_THROTTLED] += 1
        return False
    fn_s[FS_TOKENS] = tokens - 1.0
    init = _draw(fn_i[FI_COLD_KIND], fn_p[FP_COLD1], fn_p[FP_COLD2])
    # The distribution's optional clip bounds (high = 0: none), as Distribution.sample applies them.
    if init < fn_p[FP_COLD_LO]:
        init = fn_p[FP_COLD_LO]
    if fn_p[FP_COLD_HI] > 0.0 and init > fn_p[FP_COLD_HI]:
        init = fn_p[FP_COLD_HI]
    env_alive[dead] = 1
    env_prov[dead] = 0
    env_f[dead] = t + init + svc
    if dead >= n_hi:
        n_hi = dead + 1
    fn_s[FS_N_HI] = n_hi
    _record(t - a + init + svc, PATH_COLD, idx, slo_s, hist, win_hist, counters, lat_out)
    counters[C_SERVED_COLD] += 1
    counters[C_COLD_STARTS] += 1
    counters[C_FN_REQUESTS] += 1
    billed_s = (init if fn_i[FI_BILLS_INIT] != 0 else 0.0) + svc
    counters[C_FN_MS_ON_DEMAND] += math.ceil(billed_s * 1000.0 - 1e-9)
    return True


@njit(cache=True)
def run_window(arrivals, idx0, t_end, route, n_route, live, n_live, evict_slot, evict_t,
               inst_f, inst_i, qt, qa, qi, qmask, qlimit,
               type_f, type_i, lat_tab, take_tab, est_tab, spill, spill_thr_s, slo_s,
               env_f, env_alive, env_prov, fn_p, fn_i, fn_s, rh_t, rh_a, rh_i, rh_n,
               hist, win_hist, counters, lat_out, seed):
    """Route and serve `arrivals` (sorted, within [window start, t_end)) and the retries due
    before t_end, then start every batch that begins before t_end. Arrival j has global index
    idx0 + j.

    If evict_slot >= 0, that instance was reclaimed (spot) at evict_t: batches that started by
    then finish, and its remaining queue is routed again at evict_t.

    Retries and evictions go through the same time-ordered loop as arrivals (a min-heap merged
    with the sorted arrivals), so routing is written once and inlined: numba function calls with
    dozens of array arguments cost more than the routing itself.
    """
    np.random.seed(seed)
    size = int(fn_s[FS_RETRY_SIZE])
    if evict_slot >= 0:
        i = evict_slot
        _advance(i, evict_t, inst_f, inst_i, qt, qa, qi, qmask, type_f, type_i, lat_tab, take_tab, slo_s,
                 hist, win_hist, counters, lat_out)
        while inst_i[i, II_LEN] > 0:
            h = inst_i[i, II_HEAD]
            pushed = _heap_push(rh_t, rh_a, rh_i, rh_n, size, evict_t, qa[i, h], qi[i, h], 0)
            if pushed < 0:
                counters[C_DROPPED] += 1
            else:
                size = pushed
                counters[C_EVICTED] += 1
            inst_i[i, II_HEAD] = (h + 1) & qmask
            inst_i[i, II_LEN] -= 1
        inst_f[i, IF_NEXT] = math.inf
    n_arr = arrivals.shape[0]
    j = 0
    while True:
        # The next event: a due retry (first on ties) or the next arrival.
        if size > 0 and rh_t[0] < t_end and (j >= n_arr or rh_t[0] <= arrivals[j]):
            t, a, idx, attempt = rh_t[0], rh_a[0], rh_i[0], rh_n[0]
            size = _heap_pop(rh_t, rh_a, rh_i, rh_n, size)
        elif j < n_arr:
            t = arrivals[j]
            a, idx, attempt = t, idx0 + j, 0
            j += 1
            counters[C_ARRIVALS] += 1
        else:
            break
        best = -1
        best_done = math.inf
        for r in range(n_route):
            i = route[r]
            if inst_f[i, IF_NEXT] < t:
                _advance(i, t, inst_f, inst_i, qt, qa, qi, qmask, type_f, type_i, lat_tab, take_tab, slo_s,
                         hist, win_hist, counters, lat_out)
            q = inst_i[i, II_LEN]
            if inst_f[i, IF_READY] > t or t >= inst_f[i, IF_ACCEPT_UNTIL] or q >= qlimit:
                continue
            # Expected completion if this request joined: the batch in service ends (or, on an
            # idle instance, the batcher waits its delay unless this request fills a batch), then
            # the queued requests ahead of it and itself in batches of max_batch (est_tab).
            ty = inst_i[i, II_TYPE]
            free = inst_f[i, IF_FREE]
            if free > t:
                d = free + est_tab[ty, q + 1]
            elif q + 1 < type_i[ty, TI_FIRE]:
                d = t + type_f[ty, TF_DELAY] + est_tab[ty, q + 1]
            else:
                d = t + est_tab[ty, q + 1]
            if d < best_done:
                best, best_done = i, d
        if spill and (best < 0 or best_done - t > spill_thr_s):
            if _invoke_function(t, a, idx, env_f, env_alive, env_prov, fn_p, fn_i, fn_s, slo_s,
                                hist, win_hist, counters, lat_out):
                continue
            if best < 0:
                if fn_i[FI_RETRY] != 0 and attempt < fn_i[FI_MAX_RETRIES]:
                    pushed = _heap_push(rh_t, rh_a, rh_i, rh_n, size,
                                        t + fn_p[FP_RETRY_DELAY] * (2.0 ** attempt), a, idx, attempt + 1)
                    if pushed >= 0:
                        size = pushed
                        counters[C_RETRIES] += 1
                        continue
                counters[C_DROPPED] += 1
                continue
            # Throttled, but an instance can take it: a slow queue beats losing the request.
        if best < 0:
            counters[C_DROPPED] += 1
            continue
        k = (inst_i[best, II_HEAD] + inst_i[best, II_LEN]) & qmask
        qt[best, k] = t
        qa[best, k] = a
        qi[best, k] = idx
        inst_i[best, II_LEN] += 1
        _update_next(best, inst_f, inst_i, qt, qmask, type_f, type_i)
    fn_s[FS_RETRY_SIZE] = size
    for r in range(n_live):
        i = live[r]
        if inst_f[i, IF_NEXT] < t_end:
            _advance(i, t_end, inst_f, inst_i, qt, qa, qi, qmask, type_f, type_i, lat_tab, take_tab, slo_s,
                     hist, win_hist, counters, lat_out)
