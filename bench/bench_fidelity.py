"""Fidelity: the same trace slice through the real local stack and through the simulator.

    .venv/bin/python -m bench.bench_fidelity [--profile PATH] [--trace twitter] [--start 14d]
                                             [--duration 10m] [--speedup 5] [--mean-rps X]

1. Profile (unless --profile is given): `spillway profile`'s measurement on this machine, a real
   Triton server and the local function runtime, written to a temporary profile file.
2. Real: examples/local-stack.toml's stack (one Triton server, local functions, the router)
   receives the time-compressed slice from the open-loop load generator.
3. Simulated: the simulator runs the same arrivals (same Trace, same seed) with the same config
   and the measured profile, policy `fixed` (the same fleet as the real stack).
Both summaries are printed side by side with the targets: p50 and p99 within 15%, function
share within 3 percentage points, cost within 5% (the same accounting: the local catalog's
prices; real function cost from the runtime's own per-ms billing).

The default slice is 10 minutes of Twitter compressed 5x (2 minutes of replay) at a mean rate
of about 80% of one instance's measured capacity, so the trace's bursts overflow to functions.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np

from controller.cli import parse_duration
from controller.config import load_config
from controller.scenario import build_scenario
from serving import profiler
from serving.replay import replay_from_own_process, replay_trace, request_body
from serving.stack import LocalStack, pinned_apart, spec_from_config
from simulator.engine import Simulation
from traces.arrivals import expand_to_arrivals

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "examples" / "local-stack.toml"


async def measure_profile(path: Path) -> Path:
    from controller.cli_serving import _with_own_triton
    max_batch, delay_ms = 16, 2.0
    inst = await _with_own_triton(max_batch, delay_ms, profiler.default_batches(max_batch), 30,
                                  (1, 2, 4, 8, 16), None, pin_cpus=True)
    with pinned_apart():          # the function workers on the stack's core, as in the replay
        fn = await profiler.measure_function(2048, cold_samples=3)
    text = profiler.profile_toml("local-triton", inst, max_batch, delay_ms, (), fn,
                                 "python -m bench.bench_fidelity", time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    return profiler.write_profile(path, text)


def config_with(profile_path: Path):
    """examples/local-stack.toml with the measured profile and two provisioned environments (no
    cold starts in the window: a cold start on this busy 2-core host takes 2-7 s, three times
    the quiet figure the profile holds, because it competes with Triton for the cores)."""
    cfg = load_config(CONFIG)
    return dataclasses.replace(cfg, scenario=dataclasses.replace(cfg.scenario, model=str(profile_path)),
                               functions=dataclasses.replace(cfg.functions, warm_concurrency=2, max_concurrency=2),
                               serve=dataclasses.replace(cfg.serve, pin_cpus=True))


async def run_real(cfg, arrivals: np.ndarray, duration_s: float) -> dict:
    spec = spec_from_config(cfg)
    async with LocalStack(spec) as stack:
        result = await replay_from_own_process(stack.infer_url(), arrivals, request_body())
        stats = stack.functions.stats()
    scenario = build_scenario(cfg)
    fn = scenario.catalog.functions
    inst = scenario.catalog.instance_types[cfg.serve.instance_type]
    # The same accounting as the simulator (simulator/engine.py): instances billed for the
    # window (warm start: they run from t = 0; one 60 s minimum); functions per billed ms x
    # memory (on-demand ms and init at the duration price, ms on provisioned environments at
    # the provisioned duration price), the request fee, and provisioned concurrency for the window.
    iaas = spec.instances * inst.on_demand_usd_per_h * max(duration_s, inst.billing_minimum_s) / 3600.0
    gb = cfg.functions.memory_mb / 1024.0
    on_demand_ms = stats.billed_ms - stats.provisioned_billed_ms + (stats.init_ms if fn.bills_init_phase else 0)
    faas = (gb * (on_demand_ms * fn.usd_per_gb_s + stats.provisioned_billed_ms * fn.provisioned_duration_usd_per_gb_s)
            / 1000.0 + stats.invocations * fn.usd_per_request
            + cfg.functions.warm_concurrency * gb * duration_s * fn.provisioned_usd_per_gb_s)
    s = result.summary()
    ok = result.status == 200
    lat = result.latency_ms[ok]
    return {"requests": int(len(arrivals)), "errors": int((~ok).sum()),
            "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
            "faas_fraction": float(np.mean(result.path[ok] > 0)), "cold_starts": int(stats.cold_starts),
            "iaas_usd": iaas, "faas_usd": faas, "cost_usd": iaas + faas, "loadgen": s}


def run_sim(cfg, trace) -> dict:
    sim = Simulation(cfg, build_scenario(cfg), trace, "fixed", seed=cfg.simulation.seed)
    s = sim.run().summary
    return {k: s[k] for k in ("requests", "dropped", "p50_ms", "p99_ms", "faas_fraction", "iaas_usd",
                              "faas_usd", "cost_usd")} | {"cold_starts": s.get("cold_starts")}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", type=Path, default=None, help="use this measured profile instead of measuring")
    ap.add_argument("--trace", default="twitter")
    ap.add_argument("--start", default="14d")
    ap.add_argument("--duration", default="10m")
    ap.add_argument("--speedup", type=float, default=5.0)
    ap.add_argument("--mean-rps", type=float, default=None,
                    help="mean rate of the replay [default: 80%% of one instance's capacity at the SLO]")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        profile_path = args.profile or asyncio.run(measure_profile(Path(tmp) / "profile.toml"))
        cfg = config_with(profile_path)
        scenario = build_scenario(cfg)
        capacity = scenario.option((cfg.serve.instance_type, "on-demand")).capacity_rps
        mean_rps = args.mean_rps or 0.8 * capacity
        trace = replay_trace(args.trace, cfg, parse_duration(args.start, "--start"),
                             parse_duration(args.duration, "--duration"), args.speedup, mean_rps)
        arrivals = expand_to_arrivals(trace, cfg.simulation.seed)
        print(f"profile {profile_path}; capacity at the SLO {capacity:.0f} req/s per instance")
        print(f"replay: {args.trace} from {args.start}, {args.duration} at {args.speedup:g}x -> "
              f"{trace.duration_s:.0f} s, {len(arrivals):,} requests, mean {mean_rps:.0f} req/s, "
              f"1 s peak {np.bincount(arrivals.astype(int)).max()} req/s")
        real = asyncio.run(run_real(cfg, arrivals, trace.duration_s))
        sim = run_sim(cfg, trace)
    print(f"\n{'':16}{'real stack':>14}{'simulator':>14}   difference (target)")
    for key, target in (("requests", None), ("p50_ms", 0.15), ("p99_ms", 0.15), ("faas_fraction", 0.03),
                        ("cold_starts", None), ("iaas_usd", None), ("faas_usd", None), ("cost_usd", 0.05)):
        r, s = real[key], sim[key]
        if key == "faas_fraction":
            diff = f"{(s - r) * 100:+.2f} pp (within 3 pp: {'MET' if abs(s - r) <= target else 'MISSED'})"
        elif target is not None:
            rel = (s - r) / r if r else float("inf")
            diff = f"{rel * 100:+.1f}% (within {target * 100:.0f}%: {'MET' if abs(rel) <= target else 'MISSED'})"
        else:
            diff = ""
        fmt = "{:>14.6f}" if key.endswith("usd") else "{:>14.4f}" if key == "faas_fraction" else "{:>14,.1f}"
        print(f"{key:16}{fmt.format(r)}{fmt.format(s) if s is not None else 'n/a':>14}   {diff}")
    print(f"real errors: {real['errors']}; simulated dropped: {sim['dropped']}; "
          f"machine: 2 cores shared by Triton, functions, router and load generator")


if __name__ == "__main__":
    main()
