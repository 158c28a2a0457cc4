"""One simulation run from the user's point of view: prepare the trace, simulate, write outputs."""
from __future__ import annotations

import contextlib
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
    return prepare_window(name, cfg, start_s, duration_s, mean_rps, with_history=False)[0]


def prepare_window(name: str, cfg: Config, start_s: float = 0.0, duration_s: float | None = None,
                   mean_rps: float | None = None, with_history: bool = True) -> tuple[Trace, Trace | None]:
    """The simulated window, and the trace before it (None at start 0, or when not
    `with_history`) rescaled by the same factor: the history a forecasting policy has seen when
    the window begins.

    E.g. Twitter from day 14 at a 4,000 req/s window mean: if the raw window averages 62.5 req/s
    the factor is 64, and the 14 days of history are multiplied by 64 as well, so that the
    forecaster learns the level it will meet.
    """
    trace = load_trace(name)
    if cfg.simulation.fill_masked and trace.masked:
        trace = fill_masked(trace)
    window = slice_trace(trace, start_s, duration_s) if start_s or duration_s is not None else trace
    history = slice_trace(trace, 0.0, start_s) if start_s > 0 and with_history else None
    if mean_rps is not None:
        requests = window.expected_requests()
        factor = mean_rps * window.duration_s / requests if requests else 1.0
        window = _rescaled(window, mean_rps, cfg)
        if history is not None and history.expected_requests() > 0:
            history = _rescaled(history, factor * history.expected_requests() / history.duration_s, cfg)
    return window, history


def _rescaled(trace: Trace, mean_rps: float, cfg: Config) -> Trace:
    return rescale_to_mean(trace, mean_rps, method=cfg.simulation.rescale, smooth_s=cfg.simulation.smooth_s)


def make_load_forecaster(cfg: Config, scenario, policy: str, history: Trace | None):
    """The forecaster a policy needs (None for policies that decide without one), fitted on the
    history's step means (the same quantity the loop observes online)."""
    from controller.forecast import LoadForecaster
    from controller.policies import PolicyContext, make_policy
    from predictor.registry import make_forecaster
    from predictor.series import step_series

    if make_policy(policy).forecast_need(PolicyContext(cfg, scenario)) is None:
        return None
    step_s = cfg.forecast.step_s
    series = None
    if history is not None and history.duration_s >= step_s:
        series = step_series(history, step_s, target="mean")
    return LoadForecaster(make_forecaster(cfg.forecast.model, step_s), step_s, series, cfg.forecast.refit_every_s)


def run_simulation(cfg: Config, trace: Trace, policy: str, out: Path, *, seed: int | None = None,
                   config_path: str | None = None, start_s: float = 0.0, report: bool = True,
                   progress: bool = True, history: Trace | None = None) -> tuple[dict, Path | None]:
    from simulator.engine import Simulation
    from simulator.output import write_run

    if policy == "faas-only" and not cfg.functions.enabled:
        raise ConfigError("functions.enabled = false: the faas-only policy needs functions")
    scenario = build_scenario(cfg)
    fitting = contextlib.nullcontext()
    if progress and history is not None:
        from rich.console import Console
        fitting = Console(stderr=True).status(f"fitting the {cfg.forecast.model} forecaster on "
                                              f"{history.duration_s / 86400:.1f} days of history")
    with fitting:
        forecaster = make_load_forecaster(cfg, scenario, policy, history)
    sim = Simulation(cfg, scenario, trace, policy, seed=seed, forecaster=forecaster)
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
