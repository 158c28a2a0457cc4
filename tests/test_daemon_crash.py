"""Crash safety of the daemon: SIGKILL at random points, restart, and check the fleet and the
decision log, on SQLite and PostgreSQL (issue 7's acceptance).

A daemon runs in a child process against `FileProvisioner` (instances in a JSON file that
outlives the process, tagged with fleet and decision id) and a `ScriptedRouter` whose load steps
through 20..240 req/s every second, so the reactive policy's target keeps moving between 1 and
3 instances and the daemon launches and terminates all the time. The child runs the daemon's own
jobs (observe, decide, reconcile) every 0.1 s and prints each decision id as soon as
record_decision has returned. The test kills it with SIGKILL at seeded random times -- some
during start-up, most while it decides, 40% just after a scale-out is recorded (between
recording the decision, launching for it and marking it applied) -- 20 times per backend, restarts it each time (a new
holder id, as a restarted process has), and checks after every kill:

- every decision the child reported committed is in the database (none lost);
- every instance was launched for a recorded decision, and no decision launched more of a kind
  than it targeted (no duplicate launch, even when killed between launch and mark_decision);
- the fleet never holds more than max_instances_per_type live instances (an earlier process's
  instances are adopted by tag, not launched again); another fleet's instance is never touched;
- at most one decision is "planned" (the one a kill interrupted), and a restarted daemon
  settles it before deciding anew.
A last run ends with SIGTERM: nothing is left planned and the fleet matches the last decision.
"""
from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from controller.state import StateStore
from fake_provisioner import FileProvisioner
from provisioners.base import READY, TERMINATED, InstanceRecord

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
KILLS = 20
TYPE = "local-triton"
MAX_PER_TYPE = 3
LAUNCH_DELAY_S = 0.2     # the launch API call: a kill in it leaves the decision planned
CONFIG = f"""
[controller]
policy = "reactive"
interval_s = 0.1
metrics_window_s = 0.4
stale_after_s = 2.0
[policies.reactive]
scale_out_cooldown_s = 0.0
scale_in_cooldown_s = 0.0
[fleet]
instance_types = ["{TYPE}"]
min_instances = 1
max_instances_per_type = {MAX_PER_TYPE}
[functions]
enabled = false
[scenario]
model = "resnet8-local"
catalog = "local"
"""

# The child: the real Daemon and its jobs, called in a loop (APScheduler adds only timing).
CHILD = """
import signal, sys, time
sys.path.insert(0, {tests!r})
from fake_provisioner import FileProvisioner, ScriptedRouter
from controller.config import load_config
from controller.daemon import Daemon, DaemonOptions
from controller.state import StateStore

class ReportingStore(StateStore):
    def record_decision(self, decision, decision_id, *args, **kwargs):
        super().record_decision(decision, decision_id, *args, **kwargs)
        print("committed", decision_id, decision.reason, flush=True)

stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
store = ReportingStore({url!r})
daemon = Daemon(load_config({config!r}),
                FileProvisioner({fleet_file!r}, time.time, fleet="crash", launch_delay_s={launch_delay_s}),
                None, ScriptedRouter((20.0, 100.0, 240.0, 160.0, 30.0, 200.0), 1.0), store, time.time,
                options=DaemonOptions(metrics_port=0))
print("ready", daemon.holder_id, flush=True)
while not stop:
    daemon.observe_once()
    daemon.decide_once()
    daemon.reconcile_once()
    time.sleep(0.1)
daemon.stop()
store.close()
print("stopped", flush=True)
"""


@pytest.fixture(scope="module")
def pg_admin():
    psycopg = pytest.importorskip("psycopg")
    try:
        conn = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at 127.0.0.1:5432: {str(exc).splitlines()[0]}")
    yield conn
    conn.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state.db'}"
        return
    admin = request.getfixturevalue("pg_admin")
    name = f"spillway_crash_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Child:
    """One daemon process; its stdout lines are collected by a thread."""

    def __init__(self, code: str, log_path: Path):
        self._log = open(log_path, "a")
        self.proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                                     stderr=self._log, text=True)
        self.lines: list[str] = []
        self.ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.strip())
            if line.startswith("ready"):
                self.ready.set()

    def committed(self) -> list[str]:
        return [line.split()[1] for line in self.lines if line.startswith("committed ")]

    def end(self, sig: int) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._reader.join(5)
            self._log.close()
        return code


def check_invariants(store: StateStore, fleet: FileProvisioner, committed: set[str], foreign: FileProvisioner):
    decisions = store.history(0)["decisions"]
    recorded = set(decisions["id"])
    lost = committed - recorded
    assert not lost, f"committed decisions missing from the database: {sorted(lost)}"
    targets = dict(zip(decisions["id"], decisions["targets"]))
    records = fleet.describe()
    launched = Counter((r.decision_id, (r.instance_type, r.market)) for r in records)
    for (decision_id, key), n in launched.items():
        assert decision_id in targets, f"instances launched for an unrecorded decision {decision_id!r}"
        assert n <= dict(targets[decision_id]).get(key, 0), \
            f"decision {decision_id} launched {n} x {key}, targeting {dict(targets[decision_id])}"
    live = [r for r in records if r.state != TERMINATED]
    assert len(live) <= MAX_PER_TYPE, f"{len(live)} live instances: duplicates launched"
    assert [r.state for r in foreign.describe()] == [READY], "another fleet's instance was touched"
    planned = list(decisions.loc[decisions["status"] == "planned", "id"])
    assert len(planned) <= 1 and (not planned or planned[0] == decisions["id"].iloc[-1]), planned
    return planned


def test_sigkill_at_random_points_then_restart_loses_and_duplicates_nothing(url, tmp_path):
    config = tmp_path / "daemon.toml"
    config.write_text(CONFIG)
    fleet_file = tmp_path / "fleet.json"
    code = CHILD.format(tests=str(TESTS), url=url, config=str(config), fleet_file=str(fleet_file),
                       launch_delay_s=LAUNCH_DELAY_S)
    fleet = FileProvisioner(fleet_file, time.time, fleet="crash")
    foreign = FileProvisioner(fleet_file, time.time, fleet="someone-else")
    foreign.add([InstanceRecord("other-0", TYPE, "on-demand", READY, 0.0, 0.0, None, "not-ours")])
    rng = random.Random(7)
    committed: set[str] = set()
    store = None
    interrupted = settled = launched_unmarked = 0
    unsettled = None
    started = time.monotonic()
    try:
        for run in range(KILLS):
            child = Child(code, tmp_path / "child.log")
            where = rng.random()
            if where < 0.2:                 # during start-up: imports, migrations, the lease
                time.sleep(rng.uniform(0.0, 1.5))
            else:                           # while deciding, launching and terminating
                assert child.ready.wait(60), (tmp_path / "child.log").read_text()[-2000:]
                time.sleep(rng.uniform(0.1, 2.0))
                if where > 0.6:             # just after a scale-out is recorded: mid-launch
                    seen = len(child.lines)
                    deadline = time.monotonic() + 8
                    while time.monotonic() < deadline and \
                            not any("scale out" in line for line in child.lines[seen:]):
                        time.sleep(0.002)
                    time.sleep(rng.uniform(0.0, 1.5 * LAUNCH_DELAY_S))
            assert child.end(signal.SIGKILL) == -signal.SIGKILL
            mine = child.committed()
            committed |= set(mine)
            store = store or StateStore(url)
            planned = check_invariants(store, fleet, committed, foreign)
            if unsettled is not None and mine:
                # this run took over after a kill that left `unsettled` planned: it settled it
                status = store.history(0)["decisions"].set_index("id")["status"]
                assert status[unsettled] in ("applied", "failed")
                settled, unsettled = settled + 1, None
            if planned and planned[0] != unsettled:
                interrupted, unsettled = interrupted + 1, planned[0]
                launched_unmarked += any(r.decision_id == unsettled for r in fleet.describe())
        child = Child(code, tmp_path / "child.log")
        assert child.ready.wait(60)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(child.committed()) < 10:
            time.sleep(0.1)
        assert child.end(signal.SIGTERM) == 0, (tmp_path / "child.log").read_text()[-2000:]
        committed |= set(child.committed())
        store = store or StateStore(url)
        assert check_invariants(store, fleet, committed, foreign) == []
        last = store.last_decision()
        live = Counter((r.instance_type, r.market) for r in fleet.describe() if r.state != TERMINATED)
        assert dict(live) == dict(last.decision.targets)
        decisions = store.history(0)["decisions"]
        print(f"\n{url.split(':')[0]}: {KILLS} SIGKILLs in {time.monotonic() - started:.0f} s; "
              f"{len(decisions)} decisions ({len(committed)} reported committed), "
              f"{interrupted} kills left a decision planned ({launched_unmarked} of them after its launch), "
              f"{settled} settled by the next daemon; "
              f"{sum(r.state != TERMINATED for r in fleet.describe())} live of "
              f"{len(fleet.describe())} instances launched; statuses {dict(Counter(decisions['status']))}")
    finally:
        if store is not None:
            store.close()
