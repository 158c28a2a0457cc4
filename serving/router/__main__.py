"""Run the router as its own process:

    python -m serving.router --port 0 --profile resnet50 --backend g4dn.xlarge \
        --instance http://127.0.0.1:8000 --instance b=http://127.0.0.1:8001 \
        --function-url http://127.0.0.1:9001/2015-03-31/functions/resnet8/invocations

It prints its URL on one line once it listens, then serves until SIGINT/SIGTERM. The bearer
token, if any, is read from $SPILLWAY_ROUTER_TOKEN (a flag would show in `ps`).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

from serving.profiles import ProfileError, load_profile
from serving.router.app import Router
from serving.router.fleet import InstanceSpec
from serving.router.settings import RouterError, RouterSettings

TOKEN_ENV = "SPILLWAY_ROUTER_TOKEN"

try:
    from uvloop import run as run_loop
except ImportError:            # uvloop is optional: the stock loop is slower, not wrong
    from asyncio import run as run_loop


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m serving.router", description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0: a free port (default)")
    p.add_argument("--profile", required=True, help="bundled profile name or path to a profile .toml")
    p.add_argument("--backend", help="instance backend of the profile (default: the first instance backend)")
    p.add_argument("--instance", action="append", default=[], metavar="[ID=]URL",
                   help="a Triton instance base URL; repeat for more (ids default to i0, i1, ...)")
    p.add_argument("--function-url", help="Lambda Invoke URL of the function backend")
    p.add_argument("--model", default=RouterSettings.model)
    p.add_argument("--no-spill", action="store_true", help="functions only as failover")
    p.add_argument("--spill-threshold-ms", type=float, default=RouterSettings.spill_threshold_ms)
    p.add_argument("--max-outstanding-batches", type=int, default=RouterSettings.max_outstanding_batches)
    p.add_argument("--max-queue-per-instance", type=int, default=RouterSettings.max_queue_per_instance)
    p.add_argument("--instance-timeout-s", type=float, default=RouterSettings.instance_timeout_s)
    return p


def _instances(values: list[str]) -> list[InstanceSpec]:
    specs = []
    for k, value in enumerate(values):
        iid, sep, url = value.partition("=")
        if not sep or iid.startswith("http"):
            iid, url = f"i{k}", value
        specs.append(InstanceSpec.parse({"id": iid, "url": url}, f"--instance {value}"))
    return specs


async def _serve(router: Router, host: str, port: int) -> None:
    await router.start(host, port)
    print(router.url, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await router.stop()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        profile = load_profile(args.profile)
        backend = args.backend or next((n for n, b in profile.backends.items() if b.kind == "instance"), None)
        if backend is None:
            raise RouterError(f"{profile.path}: no instance backend in the profile")
        settings = RouterSettings(model=args.model, max_outstanding_batches=args.max_outstanding_batches,
                                  max_queue_per_instance=args.max_queue_per_instance,
                                  spill_enabled=not args.no_spill, spill_threshold_ms=args.spill_threshold_ms,
                                  auth_token=os.environ.get(TOKEN_ENV) or None,
                                  instance_timeout_s=args.instance_timeout_s, function_url=args.function_url)
        router = Router(settings, profile.instance(backend), model_profile=profile,
                        instances=_instances(args.instance))
    except (RouterError, ProfileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        run_loop(_serve(router, args.host, args.port))
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
