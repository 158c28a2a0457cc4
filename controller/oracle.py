"""The oracle: a lower bound on the cost of meeting the SLO, and an integer schedule to simulate.

Both know the whole trace in advance (simulation only) and work in bins of
`policies.oracle.bin_s` (60 s by default).

Bound (`oracle_bound`): an LP relaxation. Per bin t, fractional instance counts x[k,t] for every
allowed (type, market) k, a function-served rate s[t] and an SLO-violating rate u[t]:

    min   sum_t w_t * (sum_k usd_per_h_k / 3600 * x[k,t] + fn_usd_per_request * s[t])
    s.t.  sum_k mu_k x[k,t] + s[t] + u[t] >= lambda_t         (the bin's mean arrival rate)
          sum_t w_t u[t] <= (1 - slo.attainment) * requests   (the violation allowance)
          sum over the markets of a type of x[k,t] <= fleet.max_instances_per_type
          sum_k usd_per_h_k x[k,t] <= budget.max_usd_per_h
          0 <= s[t] <= functions.max_concurrency / warm latency

It is a bound (no policy that meets the SLO costs less) because every term is optimistic:
  * mu_k is an upper bound on SLO-meeting throughput: the saturation throughput b*1000/latency(b)
    at the best batch size b whose profile latency is within the SLO (a larger batch counts only
    with the probability that its jitter still lands within the SLO). Not capacity_rps_at_slo,
    which keeps 10% headroom and a p99 rule. A request waits at least for its own batch, so no
    instance can deliver more SLO-meeting requests per second than this.
  * instances are fluid (x = 2.3 is allowed), ready the moment they are paid for (no launch delay),
    billed per second with no 60 s minimum, never interrupted; functions never start cold.
  * load is the bin's mean: a peak within a bin needs no extra capacity.
  * a function request costs the cheaper of on-demand and fully used provisioned concurrency
    (0.0000097222 + 0.0000041667 $/GB-s < 0.0000166667), at the mean warm duration (rounded up to
    the billing granularity only when the profile has no jitter: E[ceil(d)] >= E[d]).
  * violating requests cost nothing, and the allowance goes where it saves the most.
Two approximations go the other way, both tiny at 60 s bins: requests arriving in the last
SLO-length of a bin may be served in the next (250 ms of 60 s = 0.4%), and on a Poisson-rate
trace the bound prices the expected load, not one run's draw (relative difference ~1/sqrt(requests)).

Worked example (the bundled scenario, SLO 250 ms, attainment 0.995): the cheapest kind per
request is g6.xlarge, mu = 64 * 1000 / 30.215 ms = 2,118 req/s at $0.8048/h, i.e.
0.8048 / (3600 * 2118) = $0.1055 per million; a 10,240 MB function costs $11.85 per million
(83.9 ms x 10 GB at the provisioned rates + $0.20 per million requests). One hour at a constant
5,000 req/s is 18,000,000 requests with a 90,000 violation allowance, so the bound is
(18,000,000 - 90,000) x $0.1055e-6 = $1.890, i.e. 2.35 fluid g6.xlarge for an hour.

Solution: the bins couple only through the violation allowance. Within a bin the cheapest way
to serve d req/s is a merit order (`merit_order`): resources sorted by $ per request, each filled
up to its capacity (type caps; the budget, whose $ per req/s equals the objective's, is used by
the cheapest resources first, so greedy filling is optimal). Its cost g(d) is convex piecewise
linear, the same for every bin, so the allowance goes to the most expensive layers across all
bins first. `method="merit"` computes that in O(bins x layers); `method="lp"` solves the LP above
with HiGHS, the reference the tests compare it with (Twitter, 22 days at 60 s bins = 31,680 bins:
merit 0.13 s, HiGHS 2.6 s, equal to the cent).

Schedule (`oracle_schedule`): per bin an integer fleet whose capacity_rps_at_slo (the
simulator's realistic capacity) covers the bin's peak one-second rate: taken from the trace where
it resolves seconds (arrival times, or exact counts at <= 1 s bins), else the bin's rate plus
Poisson headroom, rate + 2.33 sqrt(rate) (the 99th percentile of a one-second count). E.g. at
5,000 req/s: 5,165 req/s, and the cheapest integer fleet covering it is 3 g6.xlarge (5,719 req/s,
$2.41/h, 1.28x the bound's $1.89/h). `cheapest_fleets` gives the exact frontier of integer
fleets (cost against capacity); a DP over it picks, across bins, the sequence with the least
running plus launch cost, since a launch pays the p95 launch delay before the instance serves.
Load that caps or the budget leave uncovered goes to functions.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
from scipy import sparse
from scipy.optimize import linprog

from controller.config import Config
from controller.scenario import Scenario
from controller.types import FleetKey
from serving.profiles import P99_Z, slo_throughput_rps, within_slo_share  # slo_throughput_rps: re-exported
from traces.model import Trace, bin_edges, n_bins_for

LEAD_QUANTILE = 0.95   # launch lead: the p95 launch-to-ready delay of the type
STATES = 48            # frontier fleets per bin the schedule's DP considers

__all__ = ["OracleBound", "OracleSchedule", "Layer", "oracle_bound", "oracle_schedule", "explain_bound",
           "slo_throughput_rps", "merit_order", "cheapest_fleets", "peak_rps", "launch_lead_s"]


# ------------------------------------------------------------------------------ throughput
def _function_terms(scenario: Scenario, cfg: Config) -> tuple[float, float]:
    """($ per SLO-meeting function request, max SLO-meeting function req/s); (inf, 0) if none."""
    fn = scenario.function
    if fn is None:
        return math.inf, 0.0
    share = within_slo_share(fn, fn.latency_ms(1), cfg.slo.latency_ms)
    if share == 0.0:
        return math.inf, 0.0
    pricing = scenario.catalog.functions
    mean_ms = fn.latency_ms(1)
    billed_s = (pricing.billed_ms(mean_ms) if fn.jitter_cv == 0 and fn.jitter_dist == "lognormal"
                else mean_ms) / 1000.0
    gb = fn.memory_mb / 1024.0
    on_demand = billed_s * gb * pricing.usd_per_gb_s
    provisioned = gb * (billed_s * pricing.provisioned_duration_usd_per_gb_s
                        + mean_ms / 1000.0 * pricing.provisioned_usd_per_gb_s)
    usd = min(on_demand, provisioned) + pricing.usd_per_request
    # Little's law: concurrency = rate x duration; only a `share` of invocations meet the SLO.
    return usd / share, cfg.functions.max_concurrency * share / (mean_ms / 1000.0)


# ------------------------------------------------------------------------------ merit order
@dataclass(frozen=True)
class Layer:
    """One resource of the merit order: up to `rps` req/s at `usd_per_request`."""
    name: str                  # "g6.xlarge/on-demand" or "functions"
    key: FleetKey | None       # None: functions
    usd_per_request: float
    rps: float
    mu_rps: float              # per instance (0 for functions)


def merit_order(scenario: Scenario, cfg: Config) -> tuple[Layer, ...]:
    """Resources cheapest per request first, each as large as type caps and the budget allow.

    E.g. max 50 per type and a $200/h budget: g6.xlarge first (50 x 2,118 = 105,904 req/s,
    $40.24/h), then g4dn.xlarge (50 x 1,203), ... until the budget is spent, then functions.
    """
    cands = []
    for o in scenario.options:
        mu = scenario.slo_throughput_rps[o.key]
        if mu > 0:
            cands.append((o.usd_per_h / 3600.0 / mu, o, mu))
    fn_usd, fn_rps = _function_terms(scenario, cfg)
    if fn_rps > 0:
        cands.append((fn_usd, None, 0.0))
    layers, used, budget = [], {}, cfg.budget.max_usd_per_h
    for usd, o, mu in sorted(cands, key=lambda c: (c[0], c[1] is None)):
        if o is None:
            layers.append(Layer("functions", None, usd, fn_rps, 0.0))
            continue
        n = min(cfg.fleet.max_instances_per_type - used.get(o.key[0], 0), budget / o.usd_per_h)
        if n > 1e-12:
            used[o.key[0]] = used.get(o.key[0], 0) + n
            budget -= n * o.usd_per_h
            layers.append(Layer(f"{o.key[0]}/{o.key[1]}", o.key, usd, n * mu, mu))
    return tuple(layers)


# ------------------------------------------------------------------------------ bound
@dataclass(frozen=True, eq=False)
class OracleBound:
    usd: float
    iaas_usd: float
    faas_usd: float
    requests: float               # expected requests in the trace
    allowance: float              # violations allowed: (1 - attainment) x requests
    forced: float                 # violations no fleet within caps and budget can avoid
    feasible: bool                # forced <= allowance
    bin_s: float
    method: str
    wall_s: float
    layers: tuple[Layer, ...]
    keys: tuple[FleetKey, ...]    # columns of `instances`
    edges_s: np.ndarray = field(repr=False)
    demand_rps: np.ndarray = field(repr=False)     # per bin: mean arrival rate
    instances: np.ndarray = field(repr=False)      # [bin, key]: fractional instance counts
    function_rps: np.ndarray = field(repr=False)
    violation_rps: np.ndarray = field(repr=False)
    notes: str = ""


def _bin_rates(trace: Trace, bin_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    edges = bin_edges(n_bins_for(trace.duration_s, bin_s), bin_s, trace.duration_s)
    widths = np.diff(edges)
    return edges, widths, trace.counts_in(edges) / widths


def oracle_bound(trace: Trace, scenario: Scenario, cfg: Config, method: str = "merit") -> OracleBound:
    """Lower bound on the cost of any policy meeting the SLO on `trace` (see the module doc)."""
    if method not in ("merit", "lp"):
        raise ValueError(f"method must be 'merit' or 'lp', got {method!r}")
    t0 = time.perf_counter()
    bin_s = cfg.policies.oracle.bin_s
    edges, widths, rate = _bin_rates(trace, bin_s)
    layers = merit_order(scenario, cfg)
    keys = tuple(o.key for o in scenario.options)
    requests = float(rate @ widths)
    allowance = (1.0 - cfg.slo.attainment) * requests
    # Load above the total capacity is violated whatever the fleet: when that exceeds the
    # allowance no policy meets the SLO, and the bound prices serving everything else.
    top = sum(layer.rps for layer in layers)
    forced = float(np.maximum(rate - top, 0.0) @ widths)
    budget = max(allowance, forced)
    if method == "merit":
        x, s, u = _solve_merit(rate, widths, layers, keys, budget)
    else:
        x, s, u = _solve_lp(rate, widths, keys, scenario, cfg, budget)
    price = np.array([scenario.option(k).usd_per_h for k in keys]) / 3600.0
    fn_usd = next((layer.usd_per_request for layer in layers if layer.key is None), 0.0)
    iaas = float(widths @ (x @ price))
    faas = float(widths @ s) * fn_usd
    bound = OracleBound(iaas + faas, iaas, faas, requests, allowance, forced, forced <= allowance + 1e-9 * requests,
                        bin_s, method, time.perf_counter() - t0, layers, keys, edges, rate, x, s, u)
    return _with_notes(bound)


def _solve_merit(rate, widths, layers, keys, budget):
    """Fill each bin's demand through the merit order, then give the violation allowance to the
    most expensive layers first (the same share of a layer in every bin)."""
    caps = np.array([layer.rps for layer in layers])
    starts = np.concatenate(([0.0], np.cumsum(caps)[:-1]))
    fill = np.clip(rate[:, None] - starts[None, :], 0.0, caps[None, :])       # [bin, layer]
    left = budget - float(np.maximum(rate - caps.sum(), 0.0) @ widths)
    for j in range(len(layers) - 1, -1, -1):
        volume = float(widths @ fill[:, j])
        take = min(volume, max(left, 0.0))
        if volume > 0:
            fill[:, j] *= 1.0 - take / volume
        left -= take
    x = np.zeros((rate.size, len(keys)))
    s = np.zeros(rate.size)
    for j, layer in enumerate(layers):
        if layer.key is None:
            s += fill[:, j]
        else:
            x[:, keys.index(layer.key)] += fill[:, j] / layer.mu_rps
    return x, s, rate - fill.sum(axis=1)


def _solve_lp(rate, widths, keys, scenario, cfg, budget):
    """The LP of the module doc with sparse matrices, solved by HiGHS (the reference)."""
    T, K = rate.size, len(keys)
    opts = [scenario.option(k) for k in keys]
    mu = np.array([scenario.slo_throughput_rps[o.key] for o in opts])
    price = np.array([o.usd_per_h for o in opts])
    fn_usd, fn_rps = _function_terms(scenario, cfg)
    nx = K * T                                        # x[k, t] at k * T + t, then s[t], then u[t]
    eye = sparse.identity(T, format="csr")
    demand = sparse.hstack([sparse.hstack([-m * eye for m in mu]), -eye, -eye])
    allowance = sparse.csr_matrix(np.concatenate([np.zeros(nx + T), widths])[None, :])
    per_type = [sparse.hstack([eye if o.key[0] == name else 0 * eye for o in opts] + [0 * eye, 0 * eye])
                for name in sorted({k[0] for k in keys})]
    spend = sparse.hstack([sparse.hstack([p * eye for p in price]), 0 * eye, 0 * eye])
    A = sparse.vstack([demand, allowance, *per_type, spend]).tocsr()
    b = np.concatenate([-rate, [budget], np.full(T * len(per_type), float(cfg.fleet.max_instances_per_type)),
                        np.full(T, cfg.budget.max_usd_per_h)])
    c = np.concatenate([np.kron(price / 3600.0, widths), (fn_usd if fn_rps else 0.0) * widths, np.zeros(T)])
    upper = np.concatenate([np.full(nx, np.inf), np.full(T, fn_rps), np.full(T, np.inf)])
    res = linprog(c, A_ub=A, b_ub=b, bounds=np.column_stack([np.zeros(nx + 2 * T), upper]), method="highs")
    if res.status != 0:
        raise RuntimeError(f"oracle LP: {res.message}")
    return res.x[:nx].reshape(K, T).T, res.x[nx:nx + T], res.x[nx + T:]


def _with_notes(b: OracleBound) -> OracleBound:
    return OracleBound(**{**b.__dict__, "notes": explain_bound(b)})


def explain_bound(b: OracleBound) -> str:
    """One paragraph for the comparison report: the figure, what it assumes, why it is a bound."""
    order = ", ".join(f"{layer.name} ${layer.usd_per_request * 1e6:.3g}/M up to {layer.rps:,.0f} req/s"
                      for layer in b.layers)
    used = float(np.diff(b.edges_s) @ b.violation_rps)
    head = (f"oracle bound ${b.usd:,.2f} (instances ${b.iaas_usd:,.2f}, functions ${b.faas_usd:,.2f}) "
            f"for {b.requests:,.0f} requests: LP relaxation over {b.edges_s.size - 1} bins of {b.bin_s:g} s "
            f"({b.method}, {b.wall_s:.2f} s); merit order {order}; {used:,.0f} SLO violations used of "
            f"{b.allowance:,.0f} allowed.")
    if not b.feasible:
        head += (f" NO policy can meet the SLO here: caps and budget leave {b.forced:,.0f} requests "
                 f"unservable; the bound prices serving the rest.")
    return head + (" Lower than any SLO-meeting policy can reach: fluid instances ready when paid for, "
                   "no 60 s minimum, no cold starts, bin-mean load, saturation throughput at the SLO "
                   "(not the 90% capacity_rps_at_slo).")


# ------------------------------------------------------------------------------ schedule
def peak_rps(trace: Trace, bin_s: float) -> np.ndarray:
    """Per bin, the peak one-second rate to cover (see the module doc).

    Seconds are taken as bin_s / ceil(bin_s) so they tile the bin (60 s -> 60 windows of 1 s).
    E.g. a 60 s bin of expected rate 5,000 req/s: 5,000 + 2.33 * sqrt(5,000) = 5,165 req/s.
    """
    n_bins = n_bins_for(trace.duration_s, bin_s)
    m = max(1, math.ceil(bin_s - 1e-9))
    sub = bin_s / m
    edges = np.minimum(np.arange(n_bins * m + 1) * sub, trace.duration_s)
    widths = np.diff(edges)
    counts = trace.counts_in(edges)
    rate = np.divide(counts, widths, out=np.zeros_like(counts), where=widths > 0)
    peak = rate.reshape(n_bins, m).max(axis=1)
    resolved = not trace.is_counts or (not trace.counts_are_rates and trace.bin_s <= sub * (1 + 1e-9))
    return peak if resolved else peak + P99_Z * np.sqrt(peak / sub)


def cheapest_fleets(scenario: Scenario, cfg: Config, need_rps: float) -> tuple[tuple[FleetKey, ...], np.ndarray,
                                                                                   np.ndarray, np.ndarray]:
    """The exact frontier of integer fleets: (keys, counts [fleet, key], capacity_rps, usd_per_h),
    sorted by cost with capacity strictly rising, so the cheapest fleet covering d req/s is the
    first whose capacity >= d. Within a type only the cheapest market can be on it (same capacity,
    shared cap). Built type by type: add 0..cap instances to every fleet so far, drop fleets over
    the budget and fleets that cost at least as much as one with more capacity (capacity is
    clipped at `need_rps`, beyond which more does not help).
    """
    keys = tuple(o.key for o in scenario.options)
    best = {}
    for o in scenario.options:
        if o.key[0] not in best or o.usd_per_h < best[o.key[0]].usd_per_h:
            best[o.key[0]] = o
    counts = np.zeros((1, len(keys)), np.int32)
    cap, usd = np.zeros(1), np.zeros(1)
    budget = cfg.budget.max_usd_per_h * (1 + 1e-12)
    for o in best.values():
        n = np.arange(min(cfg.fleet.max_instances_per_type, math.floor(budget / o.usd_per_h)) + 1)
        c = (cap[:, None] + n * o.capacity_rps).ravel()
        p = (usd[:, None] + n * o.usd_per_h).ravel()
        cnt = np.repeat(counts, n.size, axis=0)
        cnt[:, keys.index(o.key)] += np.tile(n, cap.size)
        ok = p <= budget
        c, p, cnt = c[ok], p[ok], cnt[ok]
        eff = np.minimum(c, need_rps)
        order = np.lexsort((-eff, p))                 # cheapest first; at equal cost, most capacity
        eff_o = eff[order]
        keep = order[eff_o > np.concatenate(([-1.0], np.maximum.accumulate(eff_o)[:-1])) * (1 + 1e-12)]
        counts, cap, usd = cnt[keep], c[keep], p[keep]
    return keys, counts, cap, usd


@dataclass(frozen=True, eq=False)
class OracleSchedule:
    bin_s: float
    keys: tuple[FleetKey, ...]
    edges_s: np.ndarray = field(repr=False)
    mean_rps: np.ndarray = field(repr=False)
    peak_rps: np.ndarray = field(repr=False)
    counts: np.ndarray = field(repr=False)          # [bin, key] integer instances
    capacity_rps: np.ndarray = field(repr=False)    # capacity_rps_at_slo of that fleet
    uncovered_rps: np.ndarray = field(repr=False)   # peak the caps/budget leave to functions
    iaas_usd: float = 0.0                           # planned: instances x price x bin, no launches
    faas_usd: float = 0.0                           # planned: mean load above capacity, warm functions
    notes: str = ""

    @property
    def usd(self) -> float:
        return self.iaas_usd + self.faas_usd

    def bins(self, start_s: float, end_s: float) -> slice:
        """The bins overlapping [start_s, end_s] (at least one, clipped to the trace)."""
        n = self.counts.shape[0]
        i0 = min(max(int(start_s // self.bin_s), 0), n - 1)
        return slice(i0, min(max(int(end_s // self.bin_s), i0), n - 1) + 1)


def launch_lead_s(scenario: Scenario, instance_type: str) -> float:
    """How far ahead the oracle launches: the p95 launch-to-ready delay (231 s for the bundled GPU
    types), so an instance is ready when its bin starts in 95% of launches."""
    return scenario.catalog.instance(instance_type).launch_to_ready_s.quantile(LEAD_QUANTILE)


def _stable_picks(fleets: np.ndarray, cap: np.ndarray, usd: np.ndarray, peak: np.ndarray, widths: np.ndarray,
                  launch_usd: np.ndarray) -> np.ndarray:
    """Frontier index per bin minimising running cost + launch cost over the whole trace (DP).

    Bin t may use the STATES frontier fleets from its cheapest covering one upwards (all of them
    when the frontier is that small; 44 for the bundled scenario up to 8,000 req/s). Going from
    fleet i to fleet j launches max(n_j - n_i, 0) instances of each kind, each paid for its lead
    before it serves (launch_usd = usd_per_h x lead / 3600); removing instances is free.
    """
    n = cap.size
    lo = np.minimum(np.searchsorted(cap, peak * (1 - 1e-12), side="left"), n - 1)
    hi = np.minimum(lo + STATES, n)
    run = usd[None, :] * widths[:, None] / 3600.0
    value = run[0, lo[0]:hi[0]]
    back, moves = [], {}
    for t in range(1, peak.size):
        pair = (lo[t - 1], lo[t])
        if pair not in moves:
            prev, cur = fleets[lo[t - 1]:hi[t - 1]], fleets[lo[t]:hi[t]]
            moves[pair] = np.maximum(cur[None, :, :] - prev[:, None, :], 0) @ launch_usd
        total = value[:, None] + moves[pair]
        arg = total.argmin(axis=0)
        back.append(arg)
        value = total[arg, np.arange(arg.size)] + run[t, lo[t]:hi[t]]
    pick = np.empty(peak.size, np.int64)
    j = int(value.argmin())
    for t in range(peak.size - 1, -1, -1):
        pick[t] = lo[t] + j
        if t:
            j = int(back[t - 1][j])
    return pick


def oracle_schedule(trace: Trace, scenario: Scenario, cfg: Config) -> OracleSchedule:
    """Per bin an integer fleet whose capacity at the SLO covers the bin's peak second: the
    cheapest sequence of frontier fleets counting launches (without the launch term, near-equal
    mixes such as 3 g4dn.xlarge + 1 g6.xlarge at $2.38/h and 3 g6.xlarge at $2.41/h alternate, and
    every switch pays ~231 s of a new instance plus the overlap while it boots)."""
    bin_s = cfg.policies.oracle.bin_s
    edges, widths, mean = _bin_rates(trace, bin_s)
    peak = peak_rps(trace, bin_s)
    keys, fleets, cap, usd = cheapest_fleets(scenario, cfg, float(peak.max()))
    launch_usd = np.array([scenario.option(k).usd_per_h * launch_lead_s(scenario, k[0]) / 3600.0 for k in keys])
    pick = _stable_picks(fleets, cap, usd, peak, widths, launch_usd)
    counts, capacity = fleets[pick], cap[pick]
    uncovered = np.maximum(peak - capacity, 0.0)
    fn = scenario.function
    fn_usd = (scenario.catalog.functions.invocation_usd(fn.latency_ms(1), fn.memory_mb) if fn is not None
              else 0.0)
    iaas = float(widths @ usd[pick]) / 3600.0
    faas = float(widths @ np.maximum(mean - capacity, 0.0)) * fn_usd
    short = int((uncovered > 0).sum())
    launches = int(np.maximum(np.diff(counts, axis=0), 0).sum())
    notes = (f"oracle schedule: {edges.size - 1} bins of {bin_s:g} s, integer fleets covering each bin's peak "
             f"second at capacity_rps_at_slo, {launches} launches; planned ${iaas + faas:,.2f} "
             f"(instances ${iaas:,.2f} without launch time, functions ${faas:,.2f})"
             + (f"; caps/budget leave {short} bins short (up to {uncovered.max():,.0f} req/s to functions)"
                if short else ""))
    return OracleSchedule(bin_s, keys, edges, mean, peak, counts, capacity, uncovered, iaas, faas, notes)
