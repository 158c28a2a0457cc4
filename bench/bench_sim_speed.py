"""Simulator speed and memory (issue 3), measured on this machine, one core.

    .venv/bin/python -m bench.bench_sim_speed [--quick]

Prints, each run in its own process so that peak memory (ru_maxrss) is that run's alone:
  1. the reference scenario: the bundled Wikipedia trace, 12 h rescaled to 4,000 req/s, under
     reactive (3-4 g6.xlarge instances) and faas-only, controller ticks every 10 s included;
  2. the whole 22-day Twitter trace rescaled to a 500 req/s mean (about 950 M requests), reactive;
  3. peak memory of a 1-day and the 22-day Twitter run, and their ratio (flat memory: ~1x).
Each line gives simulated requests, wall seconds (arrival generation, controller and kernel;
numba compilation excluded by a warm-up run in the same process) and simulated requests per second.
`--quick` runs 1 day of Twitter instead of 22 (about a minute in all).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

CASES = {
    "reference-reactive": ("default", 0.0, 12 * 3600.0, 4000.0, "reactive"),
    "reference-faas-only": ("default", 0.0, 12 * 3600.0, 4000.0, "faas-only"),
    "twitter-1d": ("twitter", 0.0, 86400.0, 500.0, "reactive"),
    "twitter-22d": ("twitter", 0.0, None, 500.0, "reactive"),
}


def run_case(name: str) -> dict:
    """Runs in a child process: warm up numba, then time one simulation."""
    from controller.config import load_config
    from controller.run import prepare_trace
    from controller.scenario import build_scenario
    from simulator.engine import Simulation

    trace_name, start, duration, rate, policy = CASES[name]
    cfg = load_config()
    scenario = build_scenario(cfg)
    Simulation(cfg, scenario, prepare_trace("default", cfg, 0.0, 600.0, 100.0), policy).run()   # compile
    trace = prepare_trace(trace_name, cfg, start, duration, rate)
    t0 = time.perf_counter()
    summary = Simulation(cfg, scenario, trace, policy).run().summary
    wall = time.perf_counter() - t0
    return {"case": name, "requests": summary["requests"], "wall_s": wall,
            "rps": summary["requests"] / wall, "launches": summary["launches"],
            "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}


def child(name: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "bench.bench_sim_speed", "--child", name],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 day of Twitter instead of 22")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run_case(args.child)))
        return 0
    names = ["reference-reactive", "reference-faas-only", "twitter-1d"] + ([] if args.quick else ["twitter-22d"])
    results = {}
    print(f"{'case':<22}{'requests':>15}{'wall s':>10}{'M req/s':>10}{'launches':>10}{'peak MB':>10}")
    for name in names:
        r = child(name)
        results[name] = r
        print(f"{name:<22}{r['requests']:>15,}{r['wall_s']:>10.1f}{r['rps'] / 1e6:>10.2f}{r['launches']:>10}"
              f"{r['max_rss_mb']:>10.0f}", flush=True)
    ref = results["reference-reactive"]["rps"]
    print(f"\nreference scenario: {ref / 1e6:.2f} M simulated requests/s (target >= 5): "
          f"{'PASS' if ref >= 5e6 else 'FAIL'}")
    if "twitter-22d" in results:
        big, small = results["twitter-22d"], results["twitter-1d"]
        print(f"22-day Twitter at 500 req/s: {big['requests']:,} requests in {big['wall_s'] / 60:.1f} min")
        print(f"peak memory 22 days / 1 day: {big['max_rss_mb']:.0f} MB / {small['max_rss_mb']:.0f} MB "
              f"= {big['max_rss_mb'] / small['max_rss_mb']:.2f}x for {big['requests'] / small['requests']:.0f}x "
              f"the requests")
    return 0


if __name__ == "__main__":
    sys.exit(main())
