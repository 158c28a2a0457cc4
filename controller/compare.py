"""`spillway compare`: every policy on every reference trace, in parallel, as one table.

Planning: each trace is simulated over a window of its held-out test part (from the end of the
trace's default train split in ``predictor.series.DEFAULT_SPLITS``, for ``--duration``, capped
at what the trace has after that point), rescaled to a common mean rate; the trace before the
window is the history that fitted forecasters start from. Other traces run from t = 0 with no
history. Running: one task per (trace, policy) plus one oracle-bound task per trace, in a
process pool; a failed task becomes a row marked ``failed`` with its error, the others go on.
Collecting: one row per (trace, policy) with cost, cost / oracle bound, SLO attainment and
fleet figures, written to ``comparison.csv`` and ``comparison.json`` (rendered by
``controller.compare_report``).

Public API::

    plan_comparison(...) -> Plan
    run_comparison(plan, jobs, progress=True) -> Outcome
    write_outputs(plan, outcome) -> dict of written paths
"""
from __future__ import annotations

import csv
import json
import math
import multiprocessing
import numbers
import os
import signal
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path

import click
import numpy as np

from controller.cli import _slug
from controller.config import ConfigError

DAY_S = 86400.0
DEFAULT_MEAN_RPS = 5000.0
DEFAULT_DURATION_S = 2 * DAY_S

# Row columns, in the order of comparison.csv.
COLUMNS = (
    "trace", "policy", "status", "start_s", "duration_s", "mean_rps", "requests",
    "cost_usd", "iaas_usd", "faas_usd", "oracle_bound_usd", "cost_vs_bound",
    "slo_attainment", "slo_attainment_target", "slo_met", "p50_ms", "p99_ms", "faas_fraction",
    "launches", "instance_hours", "dropped", "wall_s", "run_dir", "error",
)
_FROM_SUMMARY = ("requests", "cost_usd", "iaas_usd", "faas_usd", "slo_attainment",
                 "slo_attainment_target", "p50_ms", "p99_ms", "faas_fraction", "launches",
                 "instance_hours", "dropped", "wall_s")


class CompareError(ConfigError):
    """A bad argument of `spillway compare` (printed as one `spillway: error:` line, exit 2)."""


class TasksFailed(click.ClickException):
    """Some runs (or oracle bounds) failed; the outputs were still written. Exit status 1."""
    exit_code = 1

    def show(self, file=None) -> None:
        click.echo(f"spillway: {self.message}", err=True)


# ------------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class Window:
    """The part of one trace that every policy is simulated on."""
    trace: str                 # the name (or path) as given
    slug: str                  # directory name under OUT
    start_s: float
    duration_s: float
    trace_duration_s: float
    how: str                   # why this window, for the report


@dataclass(frozen=True)
class Task:
    """One unit of work for a worker process: a simulation, or a trace's oracle bound."""
    kind: str                  # "run" | "bound"
    window: Window
    policy: str | None
    mean_rps: float
    config_path: str | None
    seed: int | None
    run_dir: str | None
    report: bool

    @property
    def label(self) -> str:
        return f"{self.window.slug}/{self.policy}" if self.kind == "run" else f"{self.window.slug}/oracle bound"


@dataclass
class Plan:
    windows: list[Window]
    policies: list[str]
    mean_rps: float
    out: Path
    config_path: str | None
    seed: int | None
    run_reports: bool
    notes: list[str] = field(default_factory=list)

    def tasks(self) -> list[Task]:
        bounds = [Task("bound", w, None, self.mean_rps, self.config_path, self.seed, None, False)
                  for w in self.windows]
        # Workers get absolute paths: a forkserver's children keep the server's working directory.
        runs = [Task("run", w, p, self.mean_rps, self.config_path, self.seed,
                     str((self.out / w.slug / p).resolve()), self.run_reports)
                for w in self.windows for p in self.policies]
        # Bounds first (an LP can take a while), then runs; faas-only simulations are the slowest.
        return bounds + sorted(runs, key=lambda t: t.policy != "faas-only")


def comparable_policies() -> list[str]:
    """Every registered policy except the benchmark-only ones (names starting with 'bench-')."""
    from controller.policies import policy_names
    return [p for p in policy_names() if not p.startswith("bench-")]


def split_start_s(name: str) -> tuple[float, str] | None:
    """The end of a multi-day trace's default train split, in seconds, and how it is defined."""
    from predictor.series import MULTI_DAY_TRACES, split_for
    key = name.strip().lower()
    sp = split_for(key)
    if key not in MULTI_DAY_TRACES or sp is None:
        return None
    if sp.train_until_s is not None:
        return float(sp.train_until_s), f"t < {sp.train_until_s:,.0f} s trains"
    return sp.train_days * DAY_S, f"the first {sp.train_days:g} days train"


def _split_list(arg: str) -> list[str]:
    out: list[str] = []
    for item in (s.strip() for s in arg.split(",")):
        if item and item not in out:
            out.append(item)
    return out


def resolve_traces(arg: str) -> tuple[list[str], list[str]]:
    """`all` (the multi-day reference traces that are present) or a comma list -> (names, notes)."""
    from predictor.series import MULTI_DAY_TRACES
    from traces.registry import known_names, list_traces
    notes: list[str] = []
    if arg.strip().lower() == "all":
        present = {t.name for t in list_traces() if t.available}
        names = [n for n in MULTI_DAY_TRACES if n in present]
        missing = [n for n in MULTI_DAY_TRACES if n not in present]
        if missing:
            notes.append(f"skipped trace(s) not present on this machine: {', '.join(missing)} "
                         "(see `spillway traces list`)")
        if not names:
            raise CompareError(f"--traces all: none of the reference traces ({', '.join(MULTI_DAY_TRACES)}) "
                               "is present; set SPILLWAY_SHARED_DIR or name traces explicitly")
        return names, notes
    names = _split_list(arg)
    if not names:
        raise CompareError("--traces: no trace named (give 'all' or a comma-separated list)")
    known = known_names()
    for n in names:
        if n not in known and n.lower() not in known and not Path(n).exists():
            raise CompareError(f"--traces: unknown trace {n!r} (known: {', '.join(known)}; "
                               "or give a path to a trace file)")
    return [n.lower() if n.lower() in known else str(Path(n).resolve()) for n in names], notes


def resolve_policies(arg: str) -> list[str]:
    known = comparable_policies()
    if arg.strip().lower() == "all":
        return known
    names = _split_list(arg)
    if not names:
        raise CompareError("--policies: no policy named (give 'all' or a comma-separated list)")
    from controller.policies import policy_names
    for n in names:
        if n not in policy_names():
            raise CompareError(f"--policies: unknown policy {n!r} (known: {', '.join(known)})")
    return names


def resolve_window(name: str, trace_duration_s: float, start_s: float | None,
                   duration_s: float | None) -> Window:
    """``start_s`` None = the end of the default train split (0 for other traces);
    ``duration_s`` None = everything after the start, else capped at it."""
    split = split_start_s(name)
    if start_s is not None:
        start, how = float(start_s), "start set by --start"
    elif split is not None:
        start, how = split[0], f"held-out test part ({split[1]})"
    else:
        start, how = 0.0, "no train/test split for this trace"
    if start >= trace_duration_s:
        raise CompareError(f"--start: trace {name!r} has {trace_duration_s:,.0f} s, "
                           f"so a window cannot start at {start:,.0f} s")
    available = trace_duration_s - start
    if duration_s is None:
        duration, how = available, how + ", all of it"
    elif duration_s > available + 1e-9:
        duration, how = available, how + f", capped at the {available / 3600:,.1f} h the trace has"
    else:
        duration = float(duration_s)
    return Window(name, _slug(name), start, duration, float(trace_duration_s), how)


def plan_comparison(traces_arg: str, policies_arg: str, *, mean_rps: float = DEFAULT_MEAN_RPS,
                    duration_s: float | None = DEFAULT_DURATION_S, start_s: float | None = None,
                    out: str | Path = "runs/compare", config_path: str | None = None,
                    seed: int | None = None, run_reports: bool = True) -> Plan:
    """Validate the arguments and fix every window (loads each trace once, in this process)."""
    from controller.config import load_config
    from traces.registry import load_trace

    if not (math.isfinite(mean_rps) and mean_rps > 0):
        raise CompareError(f"--mean-rps {mean_rps:g}: must be > 0 req/s")
    if duration_s is not None and not duration_s > 0:
        raise CompareError(f"--duration {duration_s:g} s: must be > 0")
    if start_s is not None and not start_s >= 0:
        raise CompareError(f"--start {start_s:g} s: must be >= 0")
    load_config(config_path)              # a bad config fails here, once, not in every worker
    config_path = str(Path(config_path).resolve()) if config_path else None
    names, notes = resolve_traces(traces_arg)
    policies = resolve_policies(policies_arg)
    windows = []
    for name in names:
        w = resolve_window(name, load_trace(name).duration_s, start_s, duration_s)
        if any(o.slug == w.slug for o in windows):
            w = Window(w.trace, f"{w.slug}-{len(windows)}", w.start_s, w.duration_s,
                       w.trace_duration_s, w.how)
        windows.append(w)
    return Plan(windows, policies, float(mean_rps), Path(out), config_path, seed, run_reports, notes)


# -------------------------------------------------------------------------------- workers


def _worker_init() -> None:
    # Ctrl-C is handled once, by the parent, which then stops the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _one_line(exc: BaseException) -> str:
    from controller.cli import _user_errors
    msg = " ".join(str(exc).split())
    return msg if isinstance(exc, _user_errors()) and msg else f"{type(exc).__name__}: {msg}"


def _prepare(task: Task):
    from controller.config import load_config
    from controller.run import prepare_window
    cfg = load_config(task.config_path)
    w = task.window
    trace, history = prepare_window(w.trace, cfg, w.start_s, w.duration_s, task.mean_rps,
                                    with_history=task.kind != "bound")   # the bound needs no history
    return cfg, trace, history


def execute(task: Task) -> dict:
    """Run one task (in a worker process); never raises: failures come back as a dict."""
    t0 = time.perf_counter()
    try:
        cfg, trace, history = _prepare(task)
        if task.kind == "bound":
            from controller.oracle import oracle_bound
            from controller.scenario import build_scenario
            b = oracle_bound(trace, build_scenario(cfg), cfg)
            return {"status": "ok", "usd": float(b.usd), "feasible": bool(b.feasible),
                    "notes": b.notes, "wall_s": time.perf_counter() - t0}
        from controller.run import run_simulation
        summary, _ = run_simulation(cfg, trace, task.policy, Path(task.run_dir), seed=task.seed,
                                    config_path=task.config_path, start_s=task.window.start_s,
                                    report=task.report, progress=False, history=history)
        return {"status": "ok", "summary": summary}
    except Exception as exc:   # noqa: BLE001 - reported in the row; the other runs go on
        return {"status": "failed", "error": _one_line(exc), "wall_s": time.perf_counter() - t0}


def _context():
    methods = multiprocessing.get_all_start_methods()
    # Not fork: the parent runs a progress thread, and numba/OpenMP state does not survive fork.
    if "forkserver" in methods:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["controller.compare", "controller.run", "simulator.engine"])
        return ctx
    return multiprocessing.get_context("spawn")


# -------------------------------------------------------------------------------- running


@dataclass
class Outcome:
    rows: list[dict]
    bounds: dict[str, dict]          # slug -> {"status", "usd", "feasible", "notes", "error", "wall_s"}
    wall_s: float

    @property
    def failures(self) -> int:
        return (sum(r["status"] != "ok" for r in self.rows)
                + sum(b["status"] == "failed" for b in self.bounds.values()))


class _Reporter:
    """A rich progress bar on a terminal; one plain line per finished task elsewhere."""

    def __init__(self, total: int, enabled: bool):
        from rich.console import Console
        self.console = Console(stderr=True)
        self.enabled = enabled
        self.bar = None
        self.done = 0
        self.total = total
        if enabled and self.console.is_terminal:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn)
            self.bar = Progress(TextColumn("compare"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), TextColumn("{task.description}"),
                                console=self.console, transient=True)
            self.task = self.bar.add_task("starting", total=total)

    def __enter__(self):
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()

    def running(self, labels: list[str]) -> None:
        if self.bar is not None:
            text = ", ".join(labels[:3]) + (f" +{len(labels) - 3}" if len(labels) > 3 else "")
            self.bar.update(self.task, description=f"running {text}" if text else "")

    def finished(self, label: str, text: str) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(self.task, advance=1)
            self.bar.console.print(f"[dim]{label}:[/dim] {text}", highlight=False)
        elif self.enabled:
            print(f"[{self.done}/{self.total}] {label}: {text}", file=sys.stderr, flush=True)


def _describe(result: dict, kind: str) -> str:
    if result["status"] != "ok":
        return f"FAILED ({result['error']})"
    if kind == "bound":
        return f"bound ${result['usd']:,.2f} in {result['wall_s']:.1f} s"
    s = result["summary"]
    ok = _slo_met(s)
    return (f"${s['cost_usd']:,.2f}, SLO {_fmt_frac(s['slo_attainment'])} "
            f"({'met' if ok else 'MISSED'}), simulated in {s['wall_s']:.1f} s")


def _fmt_frac(x) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{100 * x:.3f}%"


def _slo_met(s: dict) -> bool:
    att = s.get("slo_attainment")
    return att is not None and math.isfinite(att) and att >= s["slo_attainment_target"]


def run_comparison(plan: Plan, jobs: int | None = None, progress: bool = True) -> Outcome:
    """Run every task of the plan in a process pool and collect the rows."""
    tasks = plan.tasks()
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(tasks)))
    results: dict[int, dict] = {}
    t0 = time.perf_counter()
    ex = ProcessPoolExecutor(max_workers=jobs, mp_context=_context(), initializer=_worker_init)
    try:
        with _Reporter(len(tasks), progress) as rep:
            futures = {ex.submit(execute, t): i for i, t in enumerate(tasks)}
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                for f in done:
                    i = futures[f]
                    try:
                        results[i] = f.result()
                    except BrokenProcessPool:
                        results[i] = {"status": "failed", "error": "the worker process died "
                                      "(killed, or out of memory?)", "wall_s": math.nan}
                    except Exception as exc:   # noqa: BLE001 - e.g. a pickling error
                        results[i] = {"status": "failed", "error": _one_line(exc), "wall_s": math.nan}
                    rep.finished(tasks[i].label, _describe(results[i], tasks[i].kind))
                rep.running([tasks[futures[f]].label for f in pending if f.running()])
    except BaseException:
        # Ctrl-C (or anything unexpected): stop the workers we started, then re-raise.
        # (shutdown() forgets the worker processes, so take them first.)
        workers = list((getattr(ex, "_processes", None) or {}).values())
        for p in workers:
            if p.is_alive():
                p.terminate()
        ex.shutdown(wait=False, cancel_futures=True)
        raise
    ex.shutdown(wait=True)
    return _collect(plan, tasks, results, time.perf_counter() - t0)


def _collect(plan: Plan, tasks: list[Task], results: dict[int, dict], wall_s: float) -> Outcome:
    bounds: dict[str, dict] = {}
    for i, t in enumerate(tasks):
        if t.kind == "bound":
            r = results[i]
            bounds[t.window.slug] = {"status": r["status"], "usd": _clean(r.get("usd")),
                                     "feasible": r.get("feasible"), "notes": r.get("notes", ""),
                                     "error": r.get("error"), "wall_s": _clean(r.get("wall_s"))}
    rows = []
    order = {(w.slug, p): k for k, (w, p) in enumerate((w, p) for w in plan.windows for p in plan.policies)}
    for i, t in sorted(((i, t) for i, t in enumerate(tasks) if t.kind == "run"),
                       key=lambda it: order[(it[1].window.slug, it[1].policy)]):
        r = results[i]
        w = t.window
        row = dict.fromkeys(COLUMNS)
        row.update(trace=w.trace, policy=t.policy, status=r["status"], start_s=w.start_s,
                   duration_s=w.duration_s, mean_rps=t.mean_rps,
                   run_dir=str(plan.out / w.slug / t.policy),
                   error=r.get("error"))
        if r["status"] == "ok":
            s = r["summary"]
            for k in _FROM_SUMMARY:
                row[k] = _clean(s.get(k))
            row["slo_met"] = _slo_met(s)
        bound = bounds[w.slug]["usd"]
        row["oracle_bound_usd"] = bound
        if bound is not None and bound > 0 and row["cost_usd"] is not None:
            row["cost_vs_bound"] = row["cost_usd"] / bound
        rows.append(row)
    return Outcome(rows, bounds, wall_s)


# -------------------------------------------------------------------------------- outputs


def _clean(v):
    """Plain JSON/CSV values: numpy scalars -> int/float/bool, NaN/inf -> None."""
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, numbers.Integral):
        return int(v)
    if isinstance(v, numbers.Real):
        v = float(v)
        return v if math.isfinite(v) else None
    return v


def write_outputs(plan: Plan, outcome: Outcome, html: bool = True) -> dict[str, Path]:
    """comparison.csv, comparison.json and report.html in plan.out."""
    out = plan.out
    out.mkdir(parents=True, exist_ok=True)
    rows = [{k: _clean(r[k]) for k in COLUMNS} for r in outcome.rows]
    csv_path = out / "comparison.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: "" if v is None else (repr(v) if isinstance(v, float) else v)
                             for k, v in r.items()})
    from importlib.metadata import version
    doc = {
        "mean_rps": plan.mean_rps,
        "policies": plan.policies,
        "config_file": plan.config_path or "(defaults)",
        "seed": plan.seed,
        "spillway_version": version("spillway"),
        "notes": plan.notes,
        "wall_s": outcome.wall_s,
        "windows": [asdict(w) for w in plan.windows],
        "bounds": {k: {kk: _clean(vv) for kk, vv in b.items()} for k, b in outcome.bounds.items()},
        "rows": rows,
    }
    json_path = out / "comparison.json"
    json_path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    written = {"csv": csv_path, "json": json_path}
    if html:
        from controller.compare_report import render_comparison
        written["html"] = render_comparison(out)
    return written
