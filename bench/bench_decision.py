"""Decision latency of the hybrid planner with 10 instance types x 2 markets (issue 5).

    .venv/bin/python -m bench.bench_decision [--decisions 200]

The bundled catalog has 6 types; this benchmark adds 4 real siblings that share a GPU with a
bundled type and so its latency profile (g4dn.2xlarge $0.752/h, g5.2xlarge $1.212/h,
g6.2xlarge $0.9776/h, g6e.xlarge $1.861/h with the g5 profile: on-demand us-east-1 list prices),
with both markets allowed: 20 options. Each decision is the whole policy call (forecast windows,
options from the snapshot, the integer program, warm concurrency, reason string) on a fleet that
already runs what the previous decision asked for, at forecast levels from 1,000 to 50,000 req/s
with a random walk between decisions. Printed side by side: hybrid vs mark (MArk's greedy, the
peer) on the same snapshots, median / p99 / max milliseconds and their ratio.
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

from controller.config import load_config
from controller.forecast import Forecast
from controller.planner import QUANTILES
from controller.policies import PolicyContext, make_policy
from controller.scenario import InstanceOption, Scenario, build_scenario
from controller.types import Observation, Snapshot
from provisioners.base import READY, InstanceRecord

SIBLINGS = {"g4dn.2xlarge": ("g4dn.xlarge", 0.752), "g5.2xlarge": ("g5.xlarge", 1.212),
            "g6.2xlarge": ("g6.xlarge", 0.9776), "g6e.xlarge": ("g5.xlarge", 1.861)}
SHAPE = np.array([0.7, 0.85, 1.0, 1.1, 1.25, 1.35, 1.5, 1.6, 1.8, 2.0])


def scenario_with(extra_types: bool):
    """The bundled scenario with both markets, plus the 4 siblings when `extra_types`."""
    cfg = load_config()
    cfg = dataclasses.replace(cfg, fleet=dataclasses.replace(cfg.fleet, markets=("on-demand", "spot")))
    base = build_scenario(cfg)
    if not extra_types:
        return cfg, base
    options = list(base.options)
    for name, (sibling, price) in SIBLINGS.items():
        for market in ("on-demand", "spot"):
            src = base.option((sibling, market))
            spot_share = src.instance.spot_usd_per_h / src.instance.on_demand_usd_per_h
            inst = dataclasses.replace(src.instance, name=name, on_demand_usd_per_h=price,
                                       spot_usd_per_h=price * spot_share)
            options.append(InstanceOption((name, market), inst, src.profile, inst.price_usd_per_h(market),
                                          src.capacity_rps))
    scen = Scenario(base.catalog, base.model, tuple(options), base.function, base.slo_ms)
    return cfg, scen


def time_policy(name: str, cfg, scen, levels: np.ndarray) -> np.ndarray:
    ctx = PolicyContext(cfg, scen)
    policy = make_policy(name)
    state = policy.initial_state()
    fleet: tuple = ()
    out = np.empty(levels.size)
    for i, rps in enumerate(levels):
        now = 3600.0 + 10.0 * i
        forecast = Forecast(now, 60.0, QUANTILES, np.tile(rps * SHAPE, (20, 1)), "bench")
        snap = Snapshot(now, Observation(now, 60.0, rps), fleet, 60.0)
        t0 = time.perf_counter()
        decision, state = policy.decide(snap, forecast, ctx, state)
        out[i] = time.perf_counter() - t0
        fleet = tuple(InstanceRecord(f"{k[0]}-{k[1]}-{j}", k[0], k[1], READY, 0.0, 150.0)
                      for k, n in decision.targets for j in range(n))
    return out * 1000.0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--decisions", type=int, default=200)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    levels = np.exp(np.clip(np.cumsum(rng.normal(0, 0.15, args.decisions)) + np.log(5000.0),
                            np.log(1000.0), np.log(50000.0)))
    print(f"{args.decisions} decisions, forecast levels {levels.min():,.0f}-{levels.max():,.0f} req/s")
    for extra in (False, True):
        cfg, scen = scenario_with(extra)
        print(f"{len(scen.options)} options ({len(scen.options) // 2} types x 2 markets)")
        time_policy("hybrid", cfg, scen, levels[:5])      # imports and first calls out of the timing
        results = {name: time_policy(name, cfg, scen, levels) for name in ("hybrid", "mark")}
        for name, ms in results.items():
            print(f"  {name:7s} median {np.median(ms):6.2f} ms   p99 {np.percentile(ms, 99):6.2f} ms   "
                  f"max {ms.max():6.2f} ms")
        ratio = np.median(results["hybrid"]) / np.median(results["mark"])
        share = float(np.mean(results["hybrid"] < 20.0))
        print(f"  hybrid / mark median: {ratio:.0f}x; {share:.1%} of hybrid decisions under 20 ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
