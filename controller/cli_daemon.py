"""`spillway daemon --config FILE [--dry-run]`: the controller as a long-running service.

provisioner.backend = "local" starts the local stack of the config ([serve], [router],
[functions]) in this process and runs the daemon against it (controller/daemon.py). "aws" is
not wired into the daemon yet; "sim" is the simulator's backend. Both give one line and exit 2,
as does a bad config or an unusable state database.

SIGTERM / SIGINT: the jobs stop, the lease is released, and the daemon exits 0. The fleet is
left as it is -- except that local instances are child processes of this one and end with it.
Logs: one JSON object per line on stderr.
"""
from __future__ import annotations

import logging
import signal
import sys
import threading

import click

from controller.config import ConfigError, load_config

EXIT_USAGE = 2


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(EXIT_USAGE)


def _setup_logging() -> None:
    from controller.daemon_safety import JsonLogFormatter
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter())
    root = logging.getLogger("spillway")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False


@click.command()
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="Config TOML; [provisioner] backend must be local (aws: not yet).")
@click.option("--dry-run", is_flag=True, help="Decide and record, but never launch, terminate or reconfigure.")
def daemon(config_path, dry_run):
    """Run the control loop against a real fleet until SIGTERM or Ctrl-C."""
    from controller.state import StateError, StateStore

    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        _fail(str(exc))
    backend = cfg.provisioner.backend
    if backend == "aws":
        _fail("provisioner.backend = 'aws': the daemon cannot drive AWS yet (only 'local' is available)")
    if backend == "sim":
        _fail("provisioner.backend = 'sim' is the simulator's backend, not a daemon's: use 'local' "
              "(or run `spillway simulate`)")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    _setup_logging()
    try:
        store = StateStore(cfg.state.database_url)
    except StateError as exc:
        _fail(str(exc))
    try:
        _run_local(cfg, store, dry_run, stop)
    except (ConfigError, StateError) as exc:
        _fail(str(exc))
    finally:
        store.close()


def _run_local(cfg, store, dry_run: bool, stop: threading.Event) -> None:
    import time

    from controller.daemon import Daemon, DaemonOptions
    from controller.daemon_observe import HttpRouterControl
    from controller.daemon_safety import log_event
    from provisioners.local import LocalFunctionProvisioner, LocalInstanceProvisioner, StackThread
    from serving.stack import spec_from_config

    spec = spec_from_config(cfg)
    stack = StackThread(spec).start()
    instances = None
    try:
        instances = LocalInstanceProvisioner(stack.stack, stack.loop, time.time,
                                             instance_type=cfg.serve.instance_type)
        functions = LocalFunctionProvisioner(stack.stack, stack.loop) if stack.stack.functions else None
        router = HttpRouterControl(stack.stack.url, spec.router.auth_token)
        daemon = Daemon(cfg, instances, functions, router, store, time.time,
                        options=DaemonOptions(dry_run=dry_run, provider="local")).start()
        log_event("serving", router=stack.stack.infer_url(), metrics_port=daemon.metrics_port)
        try:
            while not stop.wait(1.0):   # a timed wait: signal handlers run between waits
                pass
        finally:
            daemon.stop()
    finally:
        if instances is not None:
            instances.close()
        stack.stop()


COMMANDS = (daemon,)
