"""The hybrid planner: the instance fleet that minimises instance cost plus expected spill cost.

Every decision solves one small integer program (scipy.optimize.milp, HiGHS). Two windows
matter, because an instance launched now serves only after its launch lead L:

  early  [now, now + L): only instances already there serve (ready ones in full, pending ones
         for the share of the window they are expected to be ready);
  late   [now + L, now + L + W): instances kept on, plus those launched now.

Per option k the plan chooses K_k instances kept now (of those there), X_k <= K_k of them kept
on into the late window, and Z_k new ones. K_k - X_k are kept only until launches are ready
(make before break: e.g. 57 small CPU instances topping up 2 GPUs serve the next 3.5 minutes
while a third GPU boots, then go). The instances running now are K_k + Z_k.

Load in each forecast step is a random variable given by quantile points Q_i with probability
masses w_i (the midpoint rule on the quantile grid), so a step's expected spill
E[(load - C)^+] is convex and piecewise linear in the capacity C (spill_tangents). In dollars:

    sum_k price_k (L K_k + W X_k + (L + W) Z_k) + f step_s sum_t E[(load_t - C_t)^+] (+ floor penalty)

with f the function cost per request; a new instance is billed while it boots. One more
instance of capacity mu pays for itself when f mu W P(load > C) > price (L + W): a newsvendor
trade-off with critical fractile price (L + W) / (f mu W). E.g. g6.xlarge: $0.8048/h, 2,118 req/s
within the SLO, f = $14.2 per million, L = 210 s, W = 180 s: 0.000224 x 390 / (0.0000142 x 2,118
x 180) = 0.016, so the fleet covers about the 98.4th percentile of the forecast load and
functions take the rest. Scale-in falls out of the same rows: an instance removed now is missing for the
whole early window (it cannot be back sooner), so it goes only when the forecast says that
window does not need it. The mix is the integer optimum (tests compare with brute force).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_matrix

from controller.types import FleetKey

# Quantile grid of the load distribution. Dense in the upper tail, where a fleet that costs
# 1-2% of the function price per request is sized.
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999)
# A tie-breaker far below a cent: among equal-cost plans, take the one with more capacity
# (so more forecast load never yields less capacity).
TIE_USD_PER_RPS = 1e-9
# HiGHS stops when the incumbent is provably within this fraction of the optimum: 1e-4 of a
# $10 planning window is a tenth of a cent, far below the price step between real fleets.
MIP_REL_GAP = 1e-4


def quantile_masses(quantiles=QUANTILES) -> np.ndarray:
    """Probability mass of each quantile point: halfway to its neighbours (0 and 1 at the ends).
    E.g. (0.5, 0.9, 0.99) -> (0.7, 0.245, 0.055)."""
    q = np.asarray(quantiles, dtype=float)
    edges = np.concatenate(([0.0], (q[1:] + q[:-1]) / 2.0, [1.0]))
    return np.diff(edges)


MASSES = quantile_masses(QUANTILES)


@dataclass(frozen=True)
class PlanOption:
    key: FleetKey                 # (instance type, market)
    capacity_rps: float           # at the SLO
    usd_per_h: float              # price, plus the expected cost of interruptions for spot
    ready: int                    # instances serving now
    pending: int                  # launched, not ready yet
    pending_share: float          # share of the early window a pending instance is expected to serve


@dataclass(frozen=True)
class PlanProblem:
    options: tuple[PlanOption, ...]
    step_s: float
    early: np.ndarray             # [steps, quantiles] req/s before a launch now is ready
    late: np.ndarray              # [steps, quantiles] req/s while new instances serve
    function_usd_per_request: float   # math.inf when functions are disabled
    budget_usd_per_h: float
    on_demand_floor_rps: float = 0.0
    type_cap: int = 10_000        # max instances per instance type, over markets


@dataclass(frozen=True)
class Plan:
    counts: tuple[tuple[FleetKey, int], ...]     # instances to run now per option (kept + new)
    late_counts: tuple[tuple[FleetKey, int], ...]  # the fleet once launches are ready
    launches: int
    removals: int
    capacity_rps: float                          # late-window capacity (late_counts)
    expected_spill_rps: float                    # mean over the late window
    objective_usd: float
    note: str                                    # "" or why the plan is not the plain optimum


def expected_spill(load_q: np.ndarray, masses: np.ndarray, capacity: float) -> float:
    """E[(load - capacity)^+] for one step's quantile row."""
    return float(np.sum(masses * np.maximum(load_q - capacity, 0.0)))


def spill_tangents(rows: np.ndarray, masses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The summed expected spill of several steps, sum_t E[(load_t - C)^+], as tangent lines
    a_j - b_j C whose maximum (with 0) is that function exactly: one line per breakpoint.

    Each step's function has slope -(mass above C) between its quantile points, so the sum is
    convex and piecewise linear with breakpoints at all the steps' quantile values. E.g. one
    step with points (100, 200) and masses (0.5, 0.5): lines 150 - C (C <= 100) and
    100 - 0.5 C (100 <= C <= 200), and 0 beyond 200.
    """
    points = np.unique(rows.ravel())
    a = np.empty(points.size)
    b = np.empty(points.size)
    for j, c in enumerate(points):
        above = rows >= c                       # the line that holds just below c
        b[j] = float(np.sum(masses * above))
        a[j] = float(np.sum(masses * rows * above))
    return a, b


def _dominated(j: PlanOption, i: PlanOption, type_cap: int, max_load_rps: float) -> bool:
    """Option j can be dropped for i: no j instances to keep, and i gives at least the capacity
    at no higher price, counting at least as much towards the on-demand floor, and i's type cap
    alone covers the highest load (so j is never needed once i is full)."""
    return (j.ready + j.pending == 0 and i.capacity_rps >= j.capacity_rps and i.usd_per_h <= j.usd_per_h
            and type_cap * i.capacity_rps >= max_load_rps
            and (i.key[1] == "on-demand" or j.key[1] != "on-demand")
            and (i.capacity_rps, -i.usd_per_h, i.key) > (j.capacity_rps, -j.usd_per_h, j.key))


def solve(problem: PlanProblem) -> Plan:
    """The least-cost integer plan for `problem` (see the module docstring).

    Variables per option: K (kept now), X (kept on into the late window), Z (new), all integer,
    and e (continuous: what the option serves in the early window, at most mu K and at most
    what is already there); then the two window capacities, the two windows' expected spill
    (epigraphs of spill_tangents) and the on-demand floor's shortfall. Dominated options (e.g.
    g6.2xlarge: the same GPU as g6.xlarge at a higher price) are dropped first; that leaves the
    optimum unchanged and spares the branch and bound.
    """
    # the most capacity worth having: the top load quantile, or the on-demand floor if higher
    top = max(float(problem.early.max()), float(problem.late.max()), problem.on_demand_floor_rps)
    opts = tuple(j for j in problem.options
                 if not any(_dominated(j, i, problem.type_cap, top) for i in problem.options))
    K = len(opts)
    masses = MASSES                       # forecast rows hold the QUANTILES grid
    f = problem.function_usd_per_request
    spill_usd = f if math.isfinite(f) else 1.0   # no functions: spilled load is lost; price it high
    mu = np.array([o.capacity_rps for o in opts])
    price_s = np.array([o.usd_per_h for o in opts]) / 3600.0
    have = np.array([o.ready + o.pending for o in opts])
    early_cap = mu * np.array([o.ready + o.pending_share * o.pending for o in opts])
    early_s = problem.early.shape[0] * problem.step_s
    late_s = problem.late.shape[0] * problem.step_s
    KEEP, ON, NEW, E = 0, K, 2 * K, 3 * K
    CE, CL, SE, SL, SLACK = 4 * K, 4 * K + 1, 4 * K + 2, 4 * K + 3, 4 * K + 4
    n_var = 4 * K + 5
    c = np.zeros(n_var)
    c[KEEP:KEEP + K] = price_s * early_s
    c[ON:ON + K] = price_s * late_s - TIE_USD_PER_RPS * mu
    c[NEW:NEW + K] = price_s * (early_s + late_s) - TIE_USD_PER_RPS * mu
    c[SE] = c[SL] = spill_usd * problem.step_s
    c[SLACK] = spill_usd * late_s          # floor shortfall priced as if it all spilled
    rows, cols, vals, lo, up = [], [], [], [], []

    def row(entries, low, high):
        r = len(lo)
        for col, val in entries:
            rows.append(r); cols.append(col); vals.append(val)
        lo.append(low); up.append(high)

    for k in range(K):
        row([(E + k, 1.0), (KEEP + k, -mu[k])], -np.inf, 0.0)        # e_k <= mu_k K_k
        row([(ON + k, 1.0), (KEEP + k, -1.0)], -np.inf, 0.0)          # X_k <= K_k
    row([(CE, 1.0)] + [(E + k, -1.0) for k in range(K)], 0.0, 0.0)
    row([(CL, 1.0)] + [(b + k, -mu[k]) for k in range(K) for b in (ON, NEW)], 0.0, 0.0)
    for window, cap_col, spill_col in ((problem.early, CE, SE), (problem.late, CL, SL)):
        for a, b in zip(*spill_tangents(window, masses)):
            row([(spill_col, 1.0), (cap_col, b)], a, np.inf)
    running = [(b + k, o.usd_per_h) for k, o in enumerate(opts) for b in (KEEP, NEW)]
    row(running, -np.inf, problem.budget_usd_per_h)
    for itype in sorted({o.key[0] for o in opts}):
        row([(b + k, 1.0) for k, o in enumerate(opts) if o.key[0] == itype for b in (KEEP, NEW)],
            -np.inf, problem.type_cap)
    if problem.on_demand_floor_rps > 0:
        row([(b + k, mu[k]) for k, o in enumerate(opts) if o.key[1] == "on-demand" for b in (ON, NEW)]
            + [(SLACK, 1.0)], problem.on_demand_floor_rps, np.inf)
    A = coo_matrix((vals, (rows, cols)), shape=(len(lo), n_var)).tocsr()
    ub = np.full(n_var, np.inf)
    ub[KEEP:KEEP + K] = ub[ON:ON + K] = np.minimum(have, problem.type_cap)
    # More new instances of a kind than it takes to carry the top quantile alone never pay: a
    # bound that spares the branch and bound most of its search (e.g. 21 req/s c6i.xlarge at
    # 5,000 req/s: 239 instead of the type cap).
    ub[NEW:NEW + K] = np.minimum(problem.type_cap, np.ceil(top / mu))
    ub[E:E + K] = early_cap
    integrality = np.zeros(n_var)
    integrality[:3 * K] = 1
    # No presolve: on programs this small it costs more than it saves and sets off HiGHS's
    # restarts (bench_decision: the slowest decisions drop from 38 ms to about 20 ms).
    res = milp(c, constraints=LinearConstraint(A, lo, up), integrality=integrality,
               bounds=Bounds(np.zeros(n_var), ub), options={"mip_rel_gap": MIP_REL_GAP, "presolve": False})
    if res.x is None:
        # Keeping nothing and spilling everything is always feasible, so this is a solver
        # failure (e.g. numerical): keep what is there and say so.
        keep, on, new = have, have, np.zeros(K, int)
        note = f"solver: {res.message}; kept the current fleet"
    else:
        x = np.round(res.x[:3 * K]).astype(int)
        keep, on, new, note = x[KEEP:KEEP + K], x[ON:ON + K], x[NEW:NEW + K], ""
    late_cap = float(np.dot(mu, on + new))
    spill = float(np.mean([expected_spill(q, masses, late_cap) for q in problem.late]))
    counts = tuple((o.key, int(n)) for o, n in zip(opts, keep + new) if n > 0)
    late_counts = tuple((o.key, int(n)) for o, n in zip(opts, on + new) if n > 0)
    return Plan(counts, late_counts, int(new.sum()), int((have - keep).sum()), late_cap, spill,
                float(res.fun) if res.x is not None else math.nan, note)
