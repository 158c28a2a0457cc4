"""`spillway` command line: simulate, compare, report, traces, forecast (and serve, profile,
loadgen from controller/cli_serving.py; daemon from controller/cli_daemon.py).

User errors (bad config, trace, catalog, profile, run directory) print one line
`spillway: error: ...` and exit with status 2; they never show a traceback.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import click

from controller.config import ConfigError

DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(text: str, option: str) -> float:
    """'90', '90s', '30m', '6h', '2d', '1w' or combinations like '1h30m' -> seconds."""
    s = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", s):
        return float(s)
    parts = re.findall(r"(\d+(?:\.\d+)?)([smhdw])", s)
    if not parts or "".join(a + b for a, b in parts) != s:
        raise click.BadParameter(f"{text!r} is not a duration (examples: 90s, 30m, 6h, 2d)", param_hint=option)
    return sum(float(n) * DURATION_UNITS[u] for n, u in parts)


def _user_errors() -> tuple[type[Exception], ...]:
    from controller.report import ReportError
    from provisioners.catalog import CatalogError
    from provisioners.distributions import DistributionError
    from controller.state import StateError
    from serving.profiles import ProfileError
    from traces.errors import TraceError
    return (ConfigError, TraceError, CatalogError, ProfileError, DistributionError, ReportError,
            ServingError, StateError)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="spillway")
def cli():
    """Spillway: an SLO-aware autoscaler for ML inference.

    Keeps a baseline fleet of GPU instances and spills bursts to serverless functions,
    choosing the mix that meets a latency SLO at least cost. Start with
    `spillway simulate --trace default --duration 1d`, then open the report it writes.
    """


@cli.command()
@click.option("--trace", "trace_name", required=True, metavar="NAME|FILE",
              help="Trace name (see `spillway traces list`) or a path to a trace file.")
@click.option("--policy", default=None, metavar="NAME",
              help="Scaling policy: hybrid, reactive, reactive-faas, mark, static-peak, faas-only or oracle "
                   "[default: controller.policy from the config, hybrid].")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="Config file (format of config.toml) [default: built-in defaults, the same as config.toml].")
@click.option("--start", default="0", metavar="DUR", show_default=True,
              help="Skip this much of the trace first (e.g. 2d, 6h, 30m).")
@click.option("--duration", default=None, metavar="DUR", help="Simulate this much of the trace [default: all of it].")
@click.option("--mean-rps", type=float, default=None, metavar="X",
              help="Rescale the trace to this mean rate in req/s (method: simulation.rescale in the config).")
@click.option("--seed", type=int, default=None, help="Random seed [default: simulation.seed from the config].")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Run directory to write [default: runs/<trace>-<policy>].")
@click.option("--no-report", is_flag=True, help="Skip report.html (summary.json and the time series are still written).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def simulate(trace_name, policy, config_path, start, duration, mean_rps, seed, out_dir, no_report, quiet):
    """Replay a trace through the controller and a simulated fleet; write a run directory.

    The run directory holds summary.json (cost, SLO attainment, latency percentiles...),
    timeseries.csv (one row per controller interval), latency_hist.csv, the config used
    and report.html.
    """
    from controller.run import prepare_window, run_simulation
    from controller.config import load_config
    from controller.policies import policy_names

    cfg = load_config(config_path)
    policy = policy or cfg.controller.policy
    if policy not in policy_names():
        raise ConfigError(f"unknown policy {policy!r} (known: {', '.join(policy_names())})")
    if mean_rps is not None and not mean_rps > 0:
        raise click.BadParameter(f"{mean_rps:g}: must be > 0 req/s", param_hint="--mean-rps")
    start_s = parse_duration(start, "--start")
    duration_s = parse_duration(duration, "--duration") if duration is not None else None
    trace, history = prepare_window(trace_name, cfg, start_s, duration_s, mean_rps)
    out = Path(out_dir or f"runs/{_slug(trace.name)}-{policy}")
    summary, report = run_simulation(cfg, trace, policy, out, seed=seed, config_path=config_path,
                                     start_s=start_s, report=not no_report, progress=not quiet,
                                     history=history)
    click.echo(f"{policy} on {trace.name}: {summary['requests']:,} requests over "
               f"{summary['duration_s'] / 3600:.2f} h (mean {summary['mean_rps']:.1f} req/s)")
    click.echo(f"  cost     ${summary['cost_usd']:.2f}  (IaaS ${summary['iaas_usd']:.2f}, "
               f"FaaS ${summary['faas_usd']:.2f}; {summary['faas_fraction']:.1%} of requests on functions)")
    ok = summary["slo_attainment"] >= summary["slo_attainment_target"]
    click.echo(f"  SLO      {summary['slo_attainment']:.4%} within {summary['slo_ms']:g} ms "
               f"(target {summary['slo_attainment_target']:.1%}: {'met' if ok else 'MISSED'})")
    click.echo(f"  latency  p50 {_ms(summary['p50_ms'])}  p99 {_ms(summary['p99_ms'])}  "
               f"dropped {summary['dropped']:,}  simulated in {summary['wall_s']:.1f} s")
    click.echo(f"  run      {out}/summary.json")
    if report is not None:
        click.echo(f"  report   {report}")


@cli.command()
@click.argument("run_dir", type=click.Path(), required=False)
@click.option("--db", "db_url", default=None, metavar="URL",
              help="Render from a daemon's state database instead (sqlite:///PATH or postgresql://...).")
@click.option("--since", default="24h", show_default=True, metavar="DUR",
              help="With --db: the history recorded in the last DUR.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="With --db: output directory for report.html and summary.json [default: report-db].")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="With --db: the daemon's config, for the SLO line and fleet capacity.")
def report(run_dir, db_url, since, out_dir, config_path):
    """Regenerate RUN_DIR/report.html from a run directory written by `spillway simulate`, or
    render report.html and summary.json from a daemon's recorded history (--db)."""
    if db_url is None:
        if run_dir is None:
            raise click.UsageError("give RUN_DIR, or --db URL")
        from controller.report import render_report
        click.echo(str(render_report(run_dir)))
        return
    if run_dir is not None:
        raise click.UsageError("give RUN_DIR or --db, not both")
    import time

    from controller.config import load_config
    from controller.report_db import render_db_report
    since_s = time.time() - parse_duration(since, "--since")
    cfg = load_config(config_path) if config_path else None
    click.echo(str(render_db_report(db_url, since_s, out_dir or "report-db", cfg=cfg)))


@cli.command()
@click.option("--traces", "traces_arg", default="all", show_default=True, metavar="all|A,B",
              help="Comma-separated trace names or files, or 'all': the multi-day reference traces "
                   "(twitter, nasa, wikipedia, servegen-m-*), each simulated on its held-out test part.")
@click.option("--policies", "policies_arg", default="all", show_default=True, metavar="all|X,Y",
              help="Comma-separated policy names, or 'all' registered policies.")
@click.option("--mean-rps", default="5000", show_default=True, metavar="X",
              help="Rescale every trace's window to this mean rate in req/s.")
@click.option("--duration", default="2d", show_default=True, metavar="DUR|full",
              help="Window length per trace, capped at what the trace has after the start; "
                   "'full' = everything after it.")
@click.option("--start", default=None, metavar="DUR",
              help="Start every window here [default: the end of each multi-day trace's training "
                   "split (e.g. twitter: day 14), 0 for other traces].")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="Config file (format of config.toml) [default: built-in defaults].")
@click.option("--seed", type=int, default=None, help="Random seed [default: simulation.seed from the config].")
@click.option("--jobs", "-j", default=None, metavar="N",
              help="Parallel worker processes [default: the number of CPUs].")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="runs/compare", show_default=True,
              help="Output directory: comparison.csv, comparison.json, report.html and one run "
                   "directory per trace and policy (<trace>/<policy>/).")
@click.option("--no-run-reports", is_flag=True,
              help="Skip each run's own report.html (the comparison report is still written).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def compare(traces_arg, policies_arg, mean_rps, duration, start, config_path, seed, jobs, out_dir,
            no_run_reports, quiet):
    """Run every policy on every trace in parallel; write one comparison table and report.

    Each row: cost (IaaS + FaaS), cost relative to the oracle's lower bound, SLO attainment,
    p50/p99 latency, function share, launches, instance-hours, dropped requests. Exit status 1
    if any run failed (its row says why; the others still run).
    """
    from controller.compare import (CompareError, TasksFailed, plan_comparison, run_comparison,
                                    write_outputs)

    try:
        rate = float(mean_rps)
    except ValueError:
        raise CompareError(f"--mean-rps {mean_rps!r}: not a number") from None
    try:
        n_jobs = int(jobs) if jobs is not None else None
    except ValueError:
        raise CompareError(f"--jobs {jobs!r}: not a whole number") from None
    if n_jobs is not None and n_jobs < 1:
        raise CompareError(f"--jobs {n_jobs}: must be >= 1")
    try:
        duration_s = None if duration.strip().lower() == "full" else parse_duration(duration, "--duration")
        start_s = parse_duration(start, "--start") if start is not None else None
    except click.BadParameter as exc:
        raise CompareError(f"{exc.param_hint}: {exc.message}") from None
    plan = plan_comparison(traces_arg, policies_arg, mean_rps=rate, duration_s=duration_s,
                           start_s=start_s, out=out_dir, config_path=config_path, seed=seed,
                           run_reports=not no_run_reports)
    for note in plan.notes:
        click.echo(f"note: {note}", err=True)
    outcome = run_comparison(plan, n_jobs, progress=not quiet)
    written = write_outputs(plan, outcome)
    _print_comparison(outcome)
    click.echo(f"written {written['csv']}, {written['json']} and {written['html']} "
               f"({len(outcome.rows)} runs in {outcome.wall_s:.0f} s)")
    if outcome.failures:
        runs = sum(r["status"] != "ok" for r in outcome.rows)
        bounds = [k for k, b in outcome.bounds.items() if b["status"] != "ok"]
        parts = [f"{runs} of {len(outcome.rows)} runs failed (their rows in comparison.csv say why)"] if runs else []
        parts += [f"the oracle bound failed on {', '.join(bounds)} (see comparison.json)"] if bounds else []
        raise TasksFailed("; ".join(parts))


def _print_comparison(outcome) -> None:
    """One line per run; launches and instance-hours only when the terminal is wide enough."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 200)
    wide = console.width >= 100
    table = Table("trace", "policy", "cost", "x bound", "SLO", "p99", "fn share",
                  *(("launches", "inst-h") if wide else ()), box=None, pad_edge=False)
    for col in table.columns[2:]:
        col.justify = "right"
    for col in table.columns:
        col.no_wrap = True
    for r in outcome.rows:
        cells = [Path(r["trace"]).name, r["policy"]]
        if r["status"] != "ok":
            table.add_row(*cells, "[red]failed[/red]")
            continue
        att = r["slo_attainment"]
        slo = "n/a" if att is None else f"{att:.3%}"
        cells += [f"${r['cost_usd']:,.2f}",
                  "-" if r["cost_vs_bound"] is None else f"{r['cost_vs_bound']:.2f}x",
                  slo if r["slo_met"] else f"[red]{slo} miss[/red]",
                  _ms(r["p99_ms"]),
                  "n/a" if r["faas_fraction"] is None else f"{r['faas_fraction']:.1%}"]
        if wide:
            cells += [f"{r['launches']:,}", f"{r['instance_hours']:,.1f}"]
        table.add_row(*cells)
    console.print(table)


@cli.group()
def traces():
    """List and inspect the bundled and shared request traces."""


@traces.command("list")
def traces_list():
    """List known traces: bundled, from ../shared/traces, and synthetic generators."""
    from rich.console import Console
    from rich.table import Table
    from traces.registry import list_traces

    table = Table("name", "kind", "span", "resolution", "available", "description", box=None)
    for info in list_traces():
        table.add_row(info.name, info.kind, info.span, info.resolution,
                      "yes" if info.available else "no", info.description)
    # Piped output gets a wide table rather than descriptions wrapped to 80 columns.
    Console(width=None if sys.stdout.isatty() else 200).print(table)


@traces.command("show")
@click.argument("name")
@click.option("--png", type=click.Path(dir_okay=False), default=None,
              help="Where to write the rate plot [default: <name>-rate.png in the current directory].")
def traces_show(name, png):
    """Summary statistics of trace NAME and a PNG of its rate over time."""
    from traces.registry import load_trace
    from traces.show import plot_rate, summarize

    trace = load_trace(name)
    stats = summarize(trace)
    width = max(len(k) for k in stats)
    for key, value in stats.items():
        if isinstance(value, float):
            value = f"{value:,.4g}"
        elif isinstance(value, (list, tuple)):
            value = "; ".join(map(str, value)) or "-"
        click.echo(f"{key:<{width}}  {value}")
    path = plot_rate(trace, png or f"{_slug(trace.name)}-rate.png")
    click.echo(f"{'plot':<{width}}  {path}")


@cli.group()
def forecast():
    """Load forecasters: rolling-origin backtests and the all-models comparison."""


@forecast.command("backtest")
@click.option("--trace", "trace_name", required=True, metavar="NAME|FILE", help="Trace to backtest on.")
@click.option("--model", default="ensemble", show_default=True, metavar="NAME",
              help="Forecaster (see `spillway forecast models`).")
@click.option("--horizon", default="10m", show_default=True, metavar="DUR", help="How far ahead to predict.")
@click.option("--step", default=None, metavar="DUR",
              help="Forecast step [default: 1m for per-second traces, the trace's resolution if coarser].")
@click.option("--train-days", type=float, default=None,
              help="Train on this many days from the start [default: the trace's own split].")
@click.option("--target", type=click.Choice(["peak", "mean"]), default="peak", show_default=True,
              help="Forecast each step's peak (highest 1-second rate, where the trace has seconds) or its mean rate.")
@click.option("--max-origins", type=int, default=2000, show_default=True,
              help="Forecast origins evaluated in the held-out part (every step still updates the model).")
@click.option("--refit-every", default=None, metavar="DUR",
              help="Refit the model on everything seen so far at this interval, timed apart from "
                   "update and predict (as the daemon runs refits off the decision path) [default: never].")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Where to write backtest.json, per_horizon.csv and bands.png [default: runs/forecast-<trace>-<model>].")
def forecast_backtest(trace_name, model, horizon, step, train_days, target, max_origins, refit_every, out_dir):
    """Fit on the first part of a trace, then forecast the held-out part from rolling origins.

    Reports MAE, MASE against seasonal naive, pinball loss and coverage for p50/p90/p99, and
    seconds per update and per predict; writes a PNG of the forecast bands over the actuals.
    """
    from predictor import registry
    from predictor.backtest import backtest, plot_bands
    from predictor.series import default_step_s, step_series, train_test_split
    from traces.registry import load_trace

    if model not in registry.model_names():
        raise click.BadParameter(f"{model!r} is not one of {', '.join(registry.model_names())}", param_hint="--model")
    trace = load_trace(trace_name)
    step_s = parse_duration(step, "--step") if step else default_step_s(trace_name, trace)
    horizon_s = parse_duration(horizon, "--horizon")
    series = step_series(trace, step_s, target)
    _, _, train_end = train_test_split(series, train_days=train_days, step_s=step_s, trace_name=trace_name)
    if train_end < 2 or train_end >= series.size - 1:
        raise click.BadParameter(f"the split leaves {train_end} training and {series.size - train_end} test steps",
                                 param_hint="--train-days")
    horizon_steps = max(1, int(-(-horizon_s // step_s)))
    out = Path(out_dir or f"runs/forecast-{_slug(trace.name)}-{model}")
    click.echo(f"backtesting {model} on {trace.name} ({target} rate per step): step {step_s:g} s, "
               f"horizon {horizon_steps} steps, "
               f"{train_end} training steps, {series.size - train_end} test steps")
    refit_steps = max(1, round(parse_duration(refit_every, "--refit-every") / step_s)) if refit_every else None
    result = backtest(series, step_s, registry.make_forecaster(model, step_s), train_end, horizon_steps,
                      refit_every_steps=refit_steps, max_origins=max_origins, trace=trace.name)
    result.write(out)
    png = plot_bands(result, out / "bands.png")
    for key, value in result.summary().items():
        if isinstance(value, (int, float, str)):
            click.echo(f"  {key:<24} {value:.4g}" if isinstance(value, float) else f"  {key:<24} {value}")
    click.echo(f"  written                  {out}/backtest.json, {png}")


@forecast.command("compare")
@click.option("--traces", default="all", show_default=True,
              help="Comma-separated trace names, or 'all' multi-day traces.")
@click.option("--models", default="all", show_default=True, help="Comma-separated model names, or 'all'.")
@click.option("--target", type=click.Choice(["peak", "mean"]), default="peak", show_default=True,
              help="Forecast each step's peak (highest 1-second rate) or its mean rate.")
@click.option("--max-origins", type=int, default=2000, show_default=True, help="Origins per backtest.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="runs/forecast-compare",
              show_default=True, help="Where to write compare.csv, compare.md and the band plots.")
def forecast_compare(traces, models, target, max_origins, out_dir):
    """Every model on every multi-day trace (its own step and train/test split): one table."""
    from predictor import registry
    from predictor.backtest import compare
    from predictor.series import MULTI_DAY_TRACES

    trace_list = list(MULTI_DAY_TRACES) if traces == "all" else [t.strip() for t in traces.split(",") if t.strip()]
    model_list = None if models == "all" else [m.strip() for m in models.split(",") if m.strip()]
    for m in model_list or []:
        if m not in registry.model_names():
            raise click.BadParameter(f"{m!r} is not one of {', '.join(registry.model_names())}", param_hint="--models")
    table = compare(trace_list, model_list, max_origins=max_origins, out_dir=out_dir, progress=click.echo,
                    target=target)
    click.echo(table.to_string(index=False, max_colwidth=30))
    click.echo(f"written {out_dir}/compare.csv and {out_dir}/compare.md")


@forecast.command("models")
def forecast_models():
    """List the forecasters."""
    from predictor import registry
    for name in registry.model_names():
        click.echo(name)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(name).stem if "/" in name else name).strip("-") or "trace"


def _ms(value) -> str:
    return "n/a" if value is None else f"{value:.1f} ms"


from controller.cli_daemon import COMMANDS as _DAEMON_COMMANDS  # noqa: E402
from controller.cli_serving import COMMANDS as _SERVING_COMMANDS, ServingError  # noqa: E402

for _command in _SERVING_COMMANDS + _DAEMON_COMMANDS:
    cli.add_command(_command)


def main(argv: list[str] | None = None) -> int:
    try:
        cli.main(args=argv, prog_name="spillway", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("spillway: aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except _user_errors() as exc:
        click.echo(f"spillway: error: {exc}", err=True)
        return 2
    except click.exceptions.Exit as exc:
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
