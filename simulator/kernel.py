"""The per-request kernel: router + instance queues with dynamic batching + function pool.

Compiled with numba and run between two controller ticks over that interval's arrivals, so the
per-request work never touches the Python interpreter. Times are seconds since the trace start.

Router (late binding, as Knative's activator and Ray Serve's router do it). Each instance holds
at most L outstanding requests (`limit`: router.max_outstanding_batches x its max batch). A
request goes to the instance with the earliest expected completion among those with room; when
every instance is full it waits in the router's FIFO queue and is handed to the first instance
that frees room. It spills to functions instead when spilling is on and its expected completion
is more than `spill_thr_s` away (or no instance can ever take it). With L = 1 and unbatched
instances this is exactly the M/M/c (or M/G/c) central queue, which the validation tests check.
A throttled function request joins the router queue if there are instances, else it is retried
with exponential backoff (or dropped, per config).

Instances are simulated lazily and exactly. A batch's start depends only on requests that
arrived before it, so each instance keeps `next_start`, when its next batch would begin given
its queue, and is advanced only when time passes that point. Triton's dynamic batcher fires when
the queue can form a batch of `fire` requests (the smallest preferred batch size, or max_batch)
or the oldest request has waited `max_queue_delay`, whichever is first, and never before the
model instance is free:

    start = max(free_at, min(oldest + max_delay, arrival of the fire-th queued request))

It takes the queued requests that arrived by `start` (at most max_batch); with preferred sizes,
the largest preferred size that fits. With max_batch = 1 and max_delay = 0 it is a FIFO server.

Functions: one request per execution environment. Environments are anonymous, so the pool keeps
only times: a min-heap of busy environments' finish times, a deque of idle ones' free times
(oldest at the bottom expire first, the most recently freed at the top is reused first, so the
rest can expire), a count of idle provisioned ones, which serve first and never expire, and a
min-heap of the busy provisioned ones' finish times.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from simulator.histogram import bin_index as _bin
from traces.rng import normal, uniform

PATH_INSTANCE, PATH_WARM, PATH_COLD = 0, 1, 2

# Counters accumulated per window (indices into the `counters` array). Only what cannot be
# derived is counted: function requests are the warm plus the cold ones (a cold start each), and
# function arrivals add the throttled ones.
C_SERVED_INSTANCE, C_SERVED_WARM, C_SERVED_COLD = 0, 1, 2
C_DROPPED, C_THROTTLED, C_SLO_MISS = 3, 4, 5
C_FN_MS_ON_DEMAND, C_FN_MS_PROVISIONED = 6, 7
C_ARRIVALS, C_RETRIES, C_EVICTED = 8, 9, 10
C_FN_BUSY_SEEN = 11                               # PASTA: busy environments seen by function arrivals
C_LAT_SUM_INSTANCE, C_LAT_SUM_WARM, C_LAT_SUM_COLD = 12, 13, 14   # seconds, for means
C_ROUTER_QUEUED = 15                              # requests that waited in the router's queue
C_WAIT_SUM_INSTANCE = 16                          # seconds from arrival to batch start
N_COUNTERS = 17

# Instance state: float columns of `inst_f`, int columns of `inst_i`.
IF_FREE, IF_READY, IF_ACCEPT_UNTIL, IF_LAST_DONE, IF_NEXT = 0, 1, 2, 3, 4
N_IF = 5
II_TYPE, II_HEAD, II_LEN, II_INFLIGHT = 0, 1, 2, 3
N_II = 4
# Per instance type: float params, int params.
TF_DELAY, TF_SIGMA, TF_EXPONENTIAL = 0, 1, 2
N_TF = 3
TI_BMAX, TI_FIRE, TI_LIMIT = 0, 1, 2
N_TI = 3
# Functions: float params, int params, float state.
FP_KEEP_ALIVE, FP_SVC, FP_SIGMA, FP_EXPONENTIAL, FP_COLD1, FP_COLD2 = 0, 1, 2, 3, 4, 5
FP_RETRY_DELAY, FP_TOKEN_RATE, FP_TOKEN_MAX, FP_COLD_LO, FP_COLD_HI = 6, 7, 8, 9, 10
N_FP = 11
FI_COLD_KIND, FI_BILLS_INIT, FI_MAX_RETRIES, FI_RETRY, FI_MAX_ENVS = 0, 1, 2, 3, 4
N_FI = 5
FS_TOKENS, FS_TOKENS_T, FS_RETRY_SIZE = 0, 1, 2
FS_BUSY, FS_IDLE_HEAD, FS_IDLE_LEN, FS_PROV_TARGET, FS_PROV_IDLE, FS_PROV_BUSY = 3, 4, 5, 6, 7, 8
FS_CQ_HEAD, FS_CQ_LEN = 9, 10
N_FS = 11

# Distribution codes for cold starts (see simulator.tables.dist_params).
D_FIXED, D_LOGNORMAL, D_UNIFORM, D_NORMAL = 0, 1, 2, 3


@njit(cache=True, inline="always")
def _draw(kind, p1, p2, rng):
    if kind == D_FIXED:
        return p1
    if kind == D_LOGNORMAL:
        return math.exp(p1 + p2 * normal(rng))
    if kind == D_UNIFORM:
        return p1 + (p2 - p1) * uniform(rng)
    # Truncated at 0 (redrawn, as Distribution.sample does), not clamped.
    for _ in range(1000):
        x = p1 + p2 * normal(rng)
        if x >= 0.0:
            return x
    return 0.0


@njit(cache=True, inline="always")
def _jitter(sigma, is_exponential, rng):
    # A mean-1 multiplier: exponential(1) (cv 1), or lognormal exp(sigma*z - sigma^2/2).
    if is_exponential:
        # By inversion, not with traces.rng's ziggurat: this case is rare (the queueing
        # validation's exponential service) and the ziggurat's code, inlined into the hot
        # loop, slows every other case by 5%.
        return -math.log1p(-uniform(rng))
    if sigma <= 0.0:
        return 1.0
    return math.exp(sigma * normal(rng) - 0.5 * sigma * sigma)


# NOTE on speed. What numba adds to array code can cost more than the simulation itself:
# 1. Reference counting: a function that can raise, or a helper that uses an array argument on
#    one branch only, increments and decrements (atomically) the count of its array arguments
#    on every call. So nothing in the kernel can raise: random numbers come from traces.rng
#    instead of np.random (whose calls return an error status), integer division follows
#    error_model="numpy", and helpers take scalars or use their array arguments unconditionally.
#    (The counting took about 40% of the kernel's time.)
# 2. Negative-index wrap-around: three instructions on every access with an index that LLVM
#    cannot prove non-negative. Indices read from arrays (slots, instance types) and the ring
#    masks go through _index, which proves it for free (about 10% of the reactive kernel).
# 3. State that every request reads and writes (the function pool's and the router queue's
#    sizes) lives in locals for the window, not in the float64 state vector fn_s: a float-int
#    conversion and a store-load round trip on each request's critical path (5 to 10%).

_NONNEG = (1 << 63) - 1


@njit(cache=True, inline="always")
def _index(x):
    """A valid (non-negative) index with its sign bit cleared: a no-op that tells LLVM so."""
    return x & _NONNEG


@njit(cache=True, inline="always")
def _next_start(n, oldest_t, fire_t, delay, free):
    """When an instance's next batch starts: max(free, min(oldest + delay, fire-th arrival)).
    fire_t is +inf when fewer than `fire` requests are queued; n = 0 means never."""
    if n == 0:
        return math.inf
    trigger = oldest_t + delay
    if fire_t < trigger:
        trigger = fire_t
    return free if free > trigger else trigger


@njit(cache=True)
def _update_next(i, inst_f, inst_i, qt, qmask, type_f, type_i):
    """Recompute when instance i's next batch would start, from its queue."""
    n = inst_i[i, II_LEN]
    ty = _index(inst_i[i, II_TYPE])
    h = _index(inst_i[i, II_HEAD])
    fire = type_i[ty, TI_FIRE]
    fire_t = qt[i, (h + fire - 1) & qmask] if n >= fire else math.inf
    inst_f[i, IF_NEXT] = _next_start(n, qt[i, h], fire_t, type_f[ty, TF_DELAY], inst_f[i, IF_FREE])


@njit(cache=True, inline="always")
def _advance(i, t, inst_f, inst_i, qt, qa, qi, qmask, type_f, type_i, lat_tab, take_tab, slo_s,
             hist, win_hist, counters, lat_out, rng):
    """Start every batch of instance i whose start time is before t."""
    ty = _index(inst_i[i, II_TYPE])
    bmax = type_i[ty, TI_BMAX]
    while inst_f[i, IF_NEXT] < t:
        start = inst_f[i, IF_NEXT]
        h = _index(inst_i[i, II_HEAD])
        n_q = inst_i[i, II_LEN]
        limit = n_q if n_q < bmax else bmax
        n = 0
        while n < limit and qt[i, (h + n) & qmask] <= start:
            n += 1
        take = take_tab[ty, n]
        done = start + lat_tab[ty, take] * _jitter(type_f[ty, TF_SIGMA], type_f[ty, TF_EXPONENTIAL] != 0.0, rng)
        lat_sum = 0.0
        wait_sum = 0.0
        for j in range(take):
            k = (h + j) & qmask
            wait_sum += start - qa[i, k]
            latency_s = done - qa[i, k]
            b = _bin(latency_s)
            hist[PATH_INSTANCE, b] += 1
            win_hist[b] += 1
            lat_sum += latency_s
            if latency_s > slo_s:
                counters[C_SLO_MISS] += 1
            if lat_out.shape[0] > 0:
                lat_out[qi[i, k]] = latency_s
        counters[C_LAT_SUM_INSTANCE] += lat_sum
        counters[C_WAIT_SUM_INSTANCE] += wait_sum
        counters[C_SERVED_INSTANCE] += take
        h = (h + take) & qmask
        n_q -= take
        inst_i[i, II_HEAD] = h
        inst_i[i, II_LEN] = n_q
        inst_i[i, II_INFLIGHT] = take
        inst_f[i, IF_FREE] = done
        inst_f[i, IF_LAST_DONE] = done
        _update_next(i, inst_f, inst_i, qt, qmask, type_f, type_i)


@njit(cache=True, inline="always")
def _held(queued, in_service, free_at, t):
    """Requests an instance holds at t: its queue plus the batch in service until free_at."""
    return queued + in_service if free_at > t else queued


@njit(cache=True, error_model="numpy")
def _est(ty, q, bmax, est_tab):
    """Router's estimate of the time to serve q queued requests in batches of max_batch: the
    table, or beyond it (q-1)//bmax full batches and the rest (est_tab[b] is one batch of b)."""
    if q < est_tab.shape[1]:
        return est_tab[ty, q]
    full = (q - 1) // bmax
    return full * est_tab[ty, bmax] + est_tab[ty, q - full * bmax]


@njit(cache=True)
def _enqueue(i, t, a, idx, inst_i, qt, qa, qi, qmask):
    """Append request idx (arrived at a, queued at t) to instance i's queue. The caller then
    updates when the instance's next batch starts (_update_next), once for all it enqueues."""
    k = (inst_i[i, II_HEAD] + inst_i[i, II_LEN]) & qmask
    qt[i, k] = t
    qa[i, k] = a
    qi[i, k] = idx
    inst_i[i, II_LEN] += 1


@njit(cache=True)
def _pool_push(heap, n, done):
    """Add a finish time to one of the pool's 4-ary min-heaps of n; returns the new size."""
    k = n
    while k > 0:
        parent = (k - 1) >> 2
        if heap[parent] <= done:
            break
        heap[k] = heap[parent]
        k = parent
    heap[k] = done
    return n + 1


@njit(cache=True)
def _pool_pop(heap, n):
    """Remove the top of one of the pool's heaps of n (the caller read it); returns the new size.

    Four children per node halve the depth of a binary heap, and the slots past the heap hold
    +inf (see SimFunctionPool), so each level compares four values without branching on the
    heap's end: popping is a chain of dependent loads, 20% faster this way."""
    n -= 1
    last = heap[n]
    heap[n] = math.inf
    k, c = 0, 1
    while c < n:
        v0, v1, v2, v3 = heap[c], heap[c + 1], heap[c + 2], heap[c + 3]
        a, va = c + (v1 < v0), min(v0, v1)
        b, vb = c + 2 + (v3 < v2), min(v2, v3)
        m, vm = (b, vb) if vb < va else (a, va)
        if vm >= last:
            break
        heap[k] = vm
        k, c = m, 4 * m + 1
    heap[k] = last
    return n


@njit(cache=True, inline="always")
def _release(t, busy_t, n_busy, prov_t, idle_t, head, n_idle, imask, keep_alive, fn_s):
    """Environments that finished by t become idle, in finish order so that the idle deque stays
    sorted by free time; provisioned ones go back to the provisioned pool; idle ones past
    keep-alive are gone (the oldest, at the bottom). Returns the new (n_busy, head, n_idle)."""
    while n_busy > 0 and busy_t[0] <= t:
        idle_t[(head + n_idle) & imask] = busy_t[0]
        n_idle += 1
        n_busy = _pool_pop(busy_t, n_busy)
    while fn_s[FS_PROV_BUSY] > 0 and prov_t[0] <= t:
        fn_s[FS_PROV_BUSY] = _pool_pop(prov_t, int(fn_s[FS_PROV_BUSY]))
        # Back to the provisioned pool, or deallocated if provisioning was reduced.
        if fn_s[FS_PROV_IDLE] + fn_s[FS_PROV_BUSY] < fn_s[FS_PROV_TARGET]:
            fn_s[FS_PROV_IDLE] += 1
    while n_idle > 0 and idle_t[head] + keep_alive < t:
        head = (head + 1) & imask
        n_idle -= 1
    return n_busy, head, n_idle


@njit(cache=True, inline="always")
def _new_environment(t, n_envs, fn_p, fn_i, fn_s):
    """Whether a new execution environment can start at t, given n_envs (busy, idle and
    provisioned): it needs room under the concurrency limit and a burst-scaling token (Lambda
    adds at most `burst` environments per 10 s); without them the request is throttled."""
    tokens = min(fn_p[FP_TOKEN_MAX], fn_s[FS_TOKENS] + (t - fn_s[FS_TOKENS_T]) * fn_p[FP_TOKEN_RATE])
    ok = n_envs < fn_i[FI_MAX_ENVS] and tokens >= 1.0
    fn_s[FS_TOKENS] = tokens - 1.0 if ok else tokens
    fn_s[FS_TOKENS_T] = t
    return ok


@njit(cache=True)
def _init_time(fn_p, fn_i, rng):
    """A cold start's init time, clipped to the distribution's bounds (high = 0: none), as
    Distribution.sample does. (Once per cold start: its reference counting does not matter.)"""
    init = _draw(fn_i[FI_COLD_KIND], fn_p[FP_COLD1], fn_p[FP_COLD2], rng)
    if init < fn_p[FP_COLD_LO]:
        init = fn_p[FP_COLD_LO]
    if fn_p[FP_COLD_HI] > 0.0 and init > fn_p[FP_COLD_HI]:
        init = fn_p[FP_COLD_HI]
    return init


@njit(cache=True)
def _heap_push(h_t, h_a, h_i, h_n, size, t, a, idx, n):
    """Push onto a min-heap keyed by h_t; returns the new size (-1 if full)."""
    if size >= h_t.shape[0]:
        return -1
    k = size
    while k > 0:
        parent = (k - 1) >> 1
        if h_t[parent] <= t:
            break
        h_t[k], h_a[k], h_i[k], h_n[k] = h_t[parent], h_a[parent], h_i[parent], h_n[parent]
        k = parent
    h_t[k], h_a[k], h_i[k], h_n[k] = t, a, idx, n
    return size + 1


@njit(cache=True)
def _heap_pop(h_t, h_a, h_i, h_n, size):
    """Remove the heap's top (the caller read it first); returns the new size."""
    size -= 1
    t, a, idx, n = h_t[size], h_a[size], h_i[size], h_n[size]
    k = 0
    while True:
        c = 2 * k + 1
        if c >= size:
            break
        if c + 1 < size and h_t[c + 1] < h_t[c]:
            c += 1
        if h_t[c] >= t:
            break
        h_t[k], h_a[k], h_i[k], h_n[k] = h_t[c], h_a[c], h_i[c], h_n[c]
        k = c
    h_t[k], h_a[k], h_i[k], h_n[k] = t, a, idx, n
    return size


@njit(cache=True, error_model="numpy")
def run_window(arrivals, idx0, t_start, t_end, route, n_route, live, n_live, evict_slot, evict_t,
               inst_f, inst_i, qt, qa, qi, qmask, cq_a, cq_i, cq_limit,
               type_f, type_i, lat_tab, take_tab, est_tab, spill, spill_thr_s, slo_s,
               busy_t, prov_t, idle_t, fn_p, fn_i, fn_s, rh_t, rh_a, rh_i, rh_n,
               hist, win_hist, counters, lat_out, rng):
    """Route and serve `arrivals` (sorted, within [t_start, t_end)) and the retries and
    router-queue hand-offs due before t_end, then start every batch that begins before t_end.
    Arrival j has global index idx0 + j.

    rng is the state of traces.rng's generator (jitter, cold starts), advanced in place.
    If evict_slot >= 0, that instance was reclaimed (spot) at evict_t: batches that started by
    then finish, and its remaining queue is routed again at evict_t.

    Arrivals, retries (a min-heap) and hand-offs from the router queue are merged in time order
    in one loop, so routing is written once and inlined: numba calls with dozens of array
    arguments would cost more than the routing itself.
    """
    size = int(fn_s[FS_RETRY_SIZE])
    qmask = _index(qmask)
    imask = idle_t.shape[0] - 1
    n_busy, head, n_idle = int(fn_s[FS_BUSY]), int(fn_s[FS_IDLE_HEAD]), int(fn_s[FS_IDLE_LEN])
    cmask = cq_a.shape[0] - 1
    cq_head, cq_len = int(fn_s[FS_CQ_HEAD]), int(fn_s[FS_CQ_LEN])
    t_prev = t_start
    if evict_slot >= 0:
        i = evict_slot
        _advance(i, evict_t, inst_f, inst_i, qt, qa, qi, qmask, type_f, type_i, lat_tab, take_tab, slo_s,
                 hist, win_hist, counters, lat_out, rng)
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
        t_arr = arrivals[j] if j < n_arr else math.inf
        t_ret = rh_t[0] if size > 0 else math.inf
        t_evt = t_arr if t_arr < t_ret else t_ret
        if t_evt > t_end:
            t_evt = t_end
        # Hand requests waiting in the router queue to instances that free room by t_evt, in
        # time order. Instances are advanced no further than t_prev (the last event handled), so
        # a handed-off request can still join a batch that starts at the moment room appears.
        while cq_len > 0:
            best, best_t = -1, math.inf
            for r in range(n_route):
                i = _index(route[r])
                ready = inst_f[i, IF_READY]
                accept_until = inst_f[i, IF_ACCEPT_UNTIL]
                limit = type_i[inst_i[i, II_TYPE], TI_LIMIT]
                if ready >= accept_until:
                    continue
                if _held(inst_i[i, II_LEN], inst_i[i, II_INFLIGHT], inst_f[i, IF_FREE], t_prev) < limit:
                    room_at = ready if ready > t_prev else t_prev
                else:
                    if inst_f[i, IF_FREE] <= t_prev:
                        # Full with no batch in service: its next batch starts now (no request can
                        # join a full instance anyway), and room appears when that batch ends.
                        _advance(i, np.nextafter(inst_f[i, IF_NEXT], math.inf), inst_f, inst_i, qt, qa, qi,
                                 qmask, type_f, type_i, lat_tab, take_tab, slo_s, hist, win_hist, counters,
                                 lat_out, rng)
                    room_at = inst_f[i, IF_FREE]
                if room_at < accept_until and room_at < best_t:
                    best, best_t = i, room_at
            if best < 0 or best_t > t_evt:
                break
            t_prev = best_t
            _advance(best, best_t, inst_f, inst_i, qt, qa, qi, qmask, type_f, type_i, lat_tab, take_tab, slo_s,
                     hist, win_hist, counters, lat_out, rng)
            room = type_i[inst_i[best, II_TYPE], TI_LIMIT] - _held(inst_i[best, II_LEN], inst_i[best, II_INFLIGHT],
                                                                  inst_f[best, IF_FREE], best_t)
            while room > 0 and cq_len > 0:
                _enqueue(best, best_t, cq_a[cq_head], cq_i[cq_head], inst_i, qt, qa, qi, qmask)
                cq_head = (cq_head + 1) & cmask
                cq_len -= 1
                room -= 1
            _update_next(best, inst_f, inst_i, qt, qmask, type_f, type_i)
        # The next event: a due retry (first on ties) or the next arrival.
        if size > 0 and t_ret < t_end and t_ret <= t_arr:
            t, a, idx, attempt = rh_t[0], rh_a[0], rh_i[0], rh_n[0]
            size = _heap_pop(rh_t, rh_a, rh_i, rh_n, size)
        elif j < n_arr:
            t = t_arr
            a, idx, attempt = t, idx0 + j, 0
            j += 1
        else:
            break
        t_prev = t
        best = -1
        best_done = math.inf
        wait_done = math.inf      # expected completion via the router queue
        n_open = 0
        for r in range(n_route):
            i = _index(route[r])
            if inst_f[i, IF_NEXT] < t:
                _advance(i, t, inst_f, inst_i, qt, qa, qi, qmask, type_f, type_i, lat_tab, take_tab, slo_s,
                         hist, win_hist, counters, lat_out, rng)
            if t >= inst_f[i, IF_ACCEPT_UNTIL]:
                continue
            n_open += 1
            ty = _index(inst_i[i, II_TYPE])
            free = inst_f[i, IF_FREE]
            q = inst_i[i, II_LEN]
            held = _held(q, inst_i[i, II_INFLIGHT], free, t)
            if inst_f[i, IF_READY] > t or cq_len > 0 or held >= type_i[ty, TI_LIMIT]:
                # Full (or booting): the request could wait in the router queue for this one.
                start = free if free > inst_f[i, IF_READY] else inst_f[i, IF_READY]
                d = start + _est(ty, q + 1 + cq_len, type_i[ty, TI_BMAX], est_tab)
                if d < wait_done:
                    wait_done = d
                continue
            # Expected completion if this request joined: the batch in service ends (or, on an
            # idle instance, the batcher waits its delay unless this request fills a batch), then
            # the queued requests ahead of it and itself in batches of max_batch (est_tab).
            if free > t:
                d = free + est_tab[ty, q + 1]
            elif q + 1 < type_i[ty, TI_FIRE]:
                d = t + type_f[ty, TF_DELAY] + est_tab[ty, q + 1]
            else:
                d = t + est_tab[ty, q + 1]
            if d < best_done:
                best, best_done = i, d
        expected = best_done if best >= 0 else wait_done
        can_wait = best < 0 and n_open > 0 and cq_len < cq_limit
        if spill and (best < 0 and not can_wait or expected - t > spill_thr_s):
            # ---- Serve it on a function. ----
            n_busy, head, n_idle = _release(t, busy_t, n_busy, prov_t, idle_t, head, n_idle, imask,
                                            fn_p[FP_KEEP_ALIVE], fn_s)
            counters[C_FN_BUSY_SEEN] += n_busy + fn_s[FS_PROV_BUSY]
            svc = fn_p[FP_SVC] * _jitter(fn_p[FP_SIGMA], fn_p[FP_EXPONENTIAL] != 0.0, rng)
            path, prov, init = PATH_WARM, False, 0.0
            if fn_s[FS_PROV_IDLE] >= 1.0:            # provisioned environments serve first
                fn_s[FS_PROV_IDLE] -= 1
                prov = True
            elif n_idle > 0:
                n_idle -= 1                           # the most recently freed environment
            else:
                n_envs = n_busy + n_idle + fn_s[FS_PROV_BUSY] + fn_s[FS_PROV_IDLE]
                if _new_environment(t, n_envs, fn_p, fn_i, fn_s):
                    path, init = PATH_COLD, _init_time(fn_p, fn_i, rng)
                else:
                    path = -1                          # throttled
            if path >= 0:
                done = t + init + svc
                if prov:
                    fn_s[FS_PROV_BUSY] = _pool_push(prov_t, int(fn_s[FS_PROV_BUSY]), done)
                else:
                    n_busy = _pool_push(busy_t, n_busy, done)
                latency_s = done - a
                b = _bin(latency_s)
                hist[path, b] += 1
                win_hist[b] += 1
                counters[C_LAT_SUM_INSTANCE + path] += latency_s
                if latency_s > slo_s:
                    counters[C_SLO_MISS] += 1
                if lat_out.shape[0] > 0:
                    lat_out[idx] = latency_s
                if path == PATH_WARM:
                    counters[C_SERVED_WARM] += 1
                    billed_ms = math.ceil(svc * 1000.0 - 1e-9)
                    counters[C_FN_MS_PROVISIONED if prov else C_FN_MS_ON_DEMAND] += billed_ms
                else:
                    counters[C_SERVED_COLD] += 1
                    billed_s = (init if fn_i[FI_BILLS_INIT] != 0 else 0.0) + svc
                    counters[C_FN_MS_ON_DEMAND] += math.ceil(billed_s * 1000.0 - 1e-9)
                continue
            counters[C_THROTTLED] += 1
            # Throttled: an instance (now, or via the router queue) beats losing the request.
            if best < 0 and not can_wait:
                if fn_i[FI_RETRY] != 0 and attempt < fn_i[FI_MAX_RETRIES]:
                    pushed = _heap_push(rh_t, rh_a, rh_i, rh_n, size,
                                        t + fn_p[FP_RETRY_DELAY] * (2.0 ** attempt), a, idx, attempt + 1)
                    if pushed >= 0:
                        size = pushed
                        counters[C_RETRIES] += 1
                        continue
                counters[C_DROPPED] += 1
                continue
        if best >= 0:
            _enqueue(best, t, a, idx, inst_i, qt, qa, qi, qmask)
            _update_next(best, inst_f, inst_i, qt, qmask, type_f, type_i)
        elif can_wait:
            k = (cq_head + cq_len) & cmask
            cq_a[k], cq_i[k] = a, idx
            cq_len += 1
            counters[C_ROUTER_QUEUED] += 1
        else:
            counters[C_DROPPED] += 1
    counters[C_ARRIVALS] += n_arr
    fn_s[FS_RETRY_SIZE] = size
    fn_s[FS_BUSY], fn_s[FS_IDLE_HEAD], fn_s[FS_IDLE_LEN] = n_busy, head, n_idle
    fn_s[FS_CQ_HEAD], fn_s[FS_CQ_LEN] = cq_head, cq_len
    for r in range(n_live):
        i = live[r]
        if inst_f[i, IF_NEXT] < t_end:
            _advance(i, t_end, inst_f, inst_i, qt, qa, qi, qmask, type_f, type_i, lat_tab, take_tab, slo_s,
                     hist, win_hist, counters, lat_out, rng)
