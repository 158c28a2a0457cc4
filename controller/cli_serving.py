"""`spillway serve`, `spillway profile` and `spillway loadgen`: the local data plane from the
command line. controller/cli.py adds COMMANDS to the main group."""
from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
import signal
import sys
from datetime import datetime, timezone
from pathlib import Path

import click

from controller.config import ConfigError, load_config


class ServingError(RuntimeError):
    """A local-stack failure worth one line (a server that would not start, say)."""


@click.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="Config TOML ([serve], [router], [functions], [scenario]); e.g. examples/local-stack.toml.")
def serve(config_path):
    """Run the local stack until Ctrl-C: the router, Triton servers and local functions.

    Starts `serve.instances` real Triton servers (batching settings from the instance profile),
    the local function runtime ([functions]) and the router on serve.host:serve.port, all on this
    host. Send KServe v2 requests to http://HOST:PORT/v2/models/resnet8/infer; metrics are on
    /metrics. Ctrl-C (or SIGTERM) stops everything cleanly.
    """
    from serving.stack import LocalStack, spec_from_config

    cfg = load_config(config_path)
    spec = spec_from_config(cfg)

    async def main():
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        click.echo(f"starting {spec.instances} Triton server(s), local functions and the router ...", err=True)
        stack = LocalStack(spec)
        start = asyncio.ensure_future(stack.start())
        await asyncio.wait([start, asyncio.ensure_future(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
        if not start.done():
            start.cancel()
            await asyncio.gather(start, return_exceptions=True)
            await stack.stop()
            return
        start.result()
        try:
            click.echo(f"router     {stack.infer_url()}")
            click.echo(f"metrics    {stack.url}/metrics")
            for t in stack.tritons:
                click.echo(f"triton     http://{t.url} (pid {t.pid})")
            if stack.functions is not None:
                click.echo(f"functions  {stack.functions.invoke_url}")
            click.echo(f"spill rule {'on' if spec.router.spill_enabled else 'off'}, "
                       f"beyond {spec.router.spill_threshold_ms:.0f} ms expected; Ctrl-C stops", err=True)
            await stop.wait()
        finally:
            click.echo("stopping ...", err=True)
            await stack.stop()

    _run(main())


@click.command()
@click.option("--model", default="resnet8", show_default=True, help="Model to profile (built in code).")
@click.option("--url", default=None, metavar="HOST:PORT",
              help="A running Triton server's HTTP endpoint [default: start one here].")
@click.option("--instance-type", default="local-triton", show_default=True,
              help="Backend name the instance figures are written under.")
@click.option("--max-batch", type=click.IntRange(1, 256), default=16, show_default=True,
              help="Triton max_batch_size of the server this command starts.")
@click.option("--max-queue-delay-ms", type=click.FloatRange(0, 1000), default=2.0, show_default=True,
              help="Triton dynamic batching max queue delay of the server this command starts.")
@click.option("--function-memory-mb", type=click.IntRange(128, 10240), default=2048, show_default=True,
              help="Memory size of the local function (billing and the profile's backend name).")
@click.option("--rounds", type=click.IntRange(3, 10_000), default=30, show_default=True,
              help="Rounds per batch size.")
@click.option("--cold-starts", type=click.IntRange(1, 100), default=5, show_default=True,
              help="Fresh function environments to time.")
@click.option("--no-functions", is_flag=True, help="Profile the Triton server only.")
@click.option("--pin-cpus", is_flag=True,
              help="Triton on its own core(s), this command and the function workers on the last one "
                   "(as `serve.pin_cpus` runs the local stack).")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default="runs/profile/resnet8-local.toml",
              show_default=True, help="Profile file to write; use it with [scenario] model = PATH.")
def profile(model, url, instance_type, max_batch, max_queue_delay_ms, function_memory_mb, rounds,
            cold_starts, no_functions, pin_cpus, out_path):
    """Measure latency vs batch size and concurrency on Triton and on the local function runtime,
    and write a profile file the simulator and planner read."""
    from rich.progress import Progress

    from serving import profiler
    from serving.model import MODEL_NAME
    from serving.stack import pinned_apart

    if model != MODEL_NAME:
        raise click.BadParameter(f"{model!r}: the model built in code is {MODEL_NAME!r}", param_hint="--model")
    command = "spillway profile " + " ".join(shlex.quote(a) for a in sys.argv[2:])
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    batches = profiler.default_batches(max_batch)
    sweep = (1, 2, 4, 8, 16)
    steps = len(batches) * rounds + len(sweep) + (0 if no_functions else cold_starts)

    async def main():
        with Progress(transient=True) as bar:
            task = bar.add_task("profiling", total=steps)
            tick = lambda: bar.advance(task)   # noqa: E731
            if url:
                inst = await profiler.measure_instance(url, batches, max_batch, max_queue_delay_ms, rounds,
                                                       sweep, progress=tick)
            else:
                inst = await _with_own_triton(max_batch, max_queue_delay_ms, batches, rounds, sweep, tick, pin_cpus)
            fn = None
            if not no_functions:
                with pinned_apart() if pin_cpus else contextlib.nullcontext():
                    fn = await profiler.measure_function(function_memory_mb, cold_starts, progress=tick)
        return inst, fn

    inst, fn = _run(main())
    text = profiler.profile_toml(instance_type, inst, max_batch, max_queue_delay_ms, (), fn, command, when)
    path = profiler.write_profile(Path(out_path), text)
    click.echo(f"{instance_type}: batch " + ", ".join(f"{b}: {ms:.1f} ms" for b, ms in
                                                      zip(inst.batches, inst.latency_ms))
               + f" (cv {inst.jitter_cv:.2f})")
    for row in inst.sweep:
        click.echo(f"  concurrency {row['concurrency']:>3}: {row['throughput_rps']:>7.1f} req/s, "
                   f"p50 {row['p50_ms']:.1f} ms, p99 {row['p99_ms']:.1f} ms")
    if fn is not None:
        click.echo(f"lambda-{fn.memory_mb}: warm {fn.warm_ms:.1f} ms (cv {fn.jitter_cv:.2f}), cold starts "
                   + ", ".join(f"{s:.2f}" for s in fn.cold_starts_s) + " s")
    click.echo(f"wrote {path}")


async def _with_own_triton(max_batch, max_queue_delay_ms, batches, rounds, sweep, tick, pin_cpus=False):
    import tempfile

    from serving import profiler
    from serving.stack import pinned_apart
    from serving.triton.repository import TritonModelConfig, write_model_repository
    from serving.triton.server import TritonServer, TritonSpec

    with tempfile.TemporaryDirectory(prefix="spillway-profile-") as tmp, \
            (pinned_apart() if pin_cpus else contextlib.nullcontext(())) as cpus:
        repo = write_model_repository(Path(tmp) / "models", TritonModelConfig(
            max_batch_size=max_batch, max_queue_delay_ms=max_queue_delay_ms))
        server = TritonServer(TritonSpec(repo, log_path=Path(tmp) / "triton.log", cpus=cpus))
        await asyncio.to_thread(server.start)
        try:
            return await profiler.measure_instance(server.url, batches, max_batch, max_queue_delay_ms, rounds,
                                                   sweep, progress=tick)
        finally:
            await asyncio.to_thread(server.stop)


@click.command()
@click.option("--url", required=True, help="Router base URL, e.g. http://127.0.0.1:8000.")
@click.option("--trace", "trace_name", required=True, metavar="NAME|FILE", help="Trace to replay.")
@click.option("--start", default="0", show_default=True, metavar="DUR", help="Where in the trace to begin.")
@click.option("--duration", default="5m", show_default=True, metavar="DUR",
              help="How much of the trace to replay (trace time, before --speedup).")
@click.option("--speedup", type=click.FloatRange(min=1.0), default=1.0, show_default=True,
              help="Time compression: replay DURATION of trace in DURATION / SPEEDUP.")
@click.option("--mean-rps", type=click.FloatRange(min=0.001), default=None,
              help="Rescale the replayed slice to this mean rate (after compression).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="Config TOML (seed, rescaling method).")
@click.option("--token", envvar="SPILLWAY_TOKEN", default=None, help="Bearer token [env SPILLWAY_TOKEN].")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="runs/loadgen", show_default=True,
              help="Writes requests.csv (one row per request) and summary.json here.")
def loadgen(url, trace_name, start, duration, speedup, mean_rps, config_path, token, out_dir):
    """Open-loop replay of a trace against the router: every request is sent at its trace time
    (time-compressed), whatever earlier requests are doing; latency and path are recorded."""
    from controller.cli import parse_duration
    from serving.loadgen import run_replay
    from serving.model import MODEL_NAME
    from serving.replay import replay_arrivals, request_body

    cfg = load_config(config_path)
    arrivals, trace = replay_arrivals(trace_name, cfg, parse_duration(start, "--start"),
                                      parse_duration(duration, "--duration"), speedup, mean_rps)
    click.echo(f"replaying {len(arrivals):,} requests of {trace.name} over {trace.duration_s:.0f} s "
               f"({len(arrivals) / trace.duration_s:.1f} req/s mean)", err=True)
    headers = {"Authorization": f"Bearer {token}"} if token else None
    result = run_replay(f"{url.rstrip('/')}/v2/models/{MODEL_NAME}/infer", arrivals, request_body(),
                        headers=headers, progress=True)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result.to_csv(out / "requests.csv")
    summary = result.summary()
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    for k, v in summary.items():
        click.echo(f"{k:>16}  {v}")
    click.echo(f"wrote {out / 'requests.csv'} and {out / 'summary.json'}")


def _run(coro):
    """Run a coroutine on uvloop when available; errors of the stack become one line."""
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:          # pragma: no cover - uvloop is a dependency
        runner = asyncio.run
    try:
        return runner(coro)
    except (OSError, RuntimeError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ServingError(" ".join(str(exc).split()) or type(exc).__name__) from None


COMMANDS = (serve, profile, loadgen)
