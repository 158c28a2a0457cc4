"""One simulation run from the user's point of view: prepare the trace, simulate, write outputs."""
from __future__ import annotations

from pathlib import Path

from controller.config import Config, ConfigError
from controller.scenario import build_scenario
from traces.model import Trace
from traces.registry import load_trace
from traces.transforms import fill_masked, rescale_to_mean, slice_trace

LONG_RUN_REQUESTS = 2_000_000   # show a progress bar above this many expected requests


def prepare_trace(name: str, cfg: Config, start_s: float = 0.0, duration_s: float | None = None,
                  mean_rps: float | None = None) -> Trace:
    """Load, fill known gaps, slice, and rescale, in that order (the target mean is the slice's)."""
    trace = load_trace(name)
    if cfg.simulation.fill_masked and trace.masked:
        trace = fill_masked(trace)
    if start_s or duration_s is not None:
        trace = slice_trace(trace, start_s, duration_s)
    if mean_rps is not None:
        trace = rescale_to_mean(trace, mean_rps, method=cfg.simulation.rescale, smooth_s=cfg.simulation.smooth_s)
    return trace


def run_simulation(cfg: Config, trace: Trace, policy: str, out: Path, *, seed: int | None = None,
                   config_path: str | None = None, start_s: float = 0.0, report: bool = True,
                   progress: bool = True) -> tuple[dict, Path | None]:
    from simulator.engine import Simulation
    from simulator.output import write_run

    if policy == "faas-only" and not cfg.functions.enabled:
        raise ConfigError("functions.enabled = false: the faas-only policy needs functions")
    scenario = build_scenario(cfg)
    sim = Simulation(cfg, scenario, trace, policy, seed=seed)
    if progress and trace.expected_requests() > LONG_RUN_REQUESTS:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        with Progress(TextColumn(f"simulating {policy} on {trace.name}"), BarColumn(),
                      TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(), TimeRemainingColumn(),
                      transient=True) as bar:
            task = bar.add_task("sim", total=1.0)
            result = sim.run(progress=lambda f: bar.update(task, completed=f))
    else:
        result = sim.run()
    from importlib.metadata import version
    extra = {"start_s": start_s, "config_file": config_path or "(defaults)",
             "spillway_version": version("spillway")}
    write_run(result, cfg, out, extra)
    report_path = None
    if report:
        from controller.report import render_report
        report_path = render_report(out)
    return {**result.summary, **extra}, report_path
