"""The controller's state store on SQLite and PostgreSQL: round trips, migrations, the leader
lease under contention, crash safety under SIGKILL, and one-line errors for bad databases.

PostgreSQL tests run against the server at 127.0.0.1:5432 (database `test`, trust auth); each
test gets a fresh database, dropped afterwards. They are skipped only if that server is not
reachable.
"""
from __future__ import annotations

import math
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from controller.forecast import Forecast
from controller.state import LeaseLost, StateError, StateStore, migrate
from controller.state.models import Base
from controller.state.store import alembic_config
from controller.types import Decision, Observation
from provisioners.base import FunctionSpec, InstanceRecord

REPO = Path(__file__).resolve().parents[1]
PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
SESSION_TAG = uuid.uuid4().hex[:8]


# -- backends ---------------------------------------------------------------------------------

@pytest.fixture(scope="session")
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
    """A fresh, empty database of each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state.db'}"
        return
    admin = request.getfixturevalue("pg_admin")
    name = f"spillway_test_{SESSION_TAG}_{uuid.uuid4().hex[:8]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def open_store():
    """StateStore factory whose stores are closed at teardown, even when a test fails."""
    opened = []

    def open_(url, **kwargs):
        store = StateStore(url, **kwargs)
        opened.append(store)
        return store
    yield open_
    for store in opened:
        store.close()


def decision(n: int = 2, **kwargs) -> Decision:
    fields = dict(targets=Decision.make_targets({("g4dn.xlarge", "on-demand"): n, ("g5.xlarge", "spot"): 1}),
                  reason=f"p90 forecast needs {n} g4dn", spill_enabled=True, spill_threshold_ms=math.inf,
                  warm_concurrency=3, function_memory_mb=4096, extra=(("p90_rps", 812.5), ("gap", math.nan)))
    return Decision(**{**fields, **kwargs})


def instance(iid: str, state: str = "pending", **kwargs) -> InstanceRecord:
    return InstanceRecord(iid, kwargs.pop("instance_type", "g4dn.xlarge"), kwargs.pop("market", "on-demand"),
                          state, kwargs.pop("launched_at_s", 100.0), decision_id="d1", **kwargs)


def schema_diff(url: str) -> list:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    finally:
        engine.dispose()


def same_decision(a: Decision, b: Decision) -> bool:
    """Equality that treats NaN extras as equal (NaN != NaN)."""
    return (a.targets, a.reason, a.spill_enabled, a.spill_threshold_ms, a.warm_concurrency,
            a.function_memory_mb) == (b.targets, b.reason, b.spill_enabled, b.spill_threshold_ms,
                                      b.warm_concurrency, b.function_memory_mb) \
        and [k for k, _ in a.extra] == [k for k, _ in b.extra] \
        and np.allclose([v for _, v in a.extra], [v for _, v in b.extra], equal_nan=True)


# -- round trips ------------------------------------------------------------------------------

def test_decisions_round_trip_in_commit_order(url, open_store):
    store = open_store(url)
    assert store.last_decision() is None
    store.record_decision(decision(2), "d1", made_at_s=1000.0, policy="hybrid")
    # the clock stepped back (NTP) before the next decision: commit order still wins
    store.record_decision(decision(5), "d2", made_at_s=990.0, policy="hybrid")
    last = store.last_decision()
    assert (last.id, last.made_at_s, last.policy, last.status, last.applied_at_s) == ("d2", 990.0, "hybrid",
                                                                                      "planned", None)
    assert same_decision(last.decision, decision(5)) and last.decision.spill_threshold_ms == math.inf

    store.mark_decision("d2", "applied", at_s=1003.0)
    assert (store.last_decision().status, store.last_decision().applied_at_s) == ("applied", 1003.0)
    for call, problem in [(lambda: store.record_decision(decision(1), "d1", 1.0, "hybrid"), "already recorded"),
                          (lambda: store.mark_decision("d9", "failed", 1.0), "no decision 'd9'"),
                          (lambda: store.mark_decision("d1", "done", 1.0), "expected 'applied' or 'failed'")]:
        with pytest.raises(StateError, match=problem):
            call()
    assert store.last_decision().id == "d2"
    # a second store object (another process, a restart) sees the same committed state
    assert open_store(url).last_decision().id == "d2"


def test_instances_upsert_and_complete_describe(url, open_store):
    store = open_store(url)
    store.upsert_instances([instance("i-1"), instance("i-2"), instance("i-3", market="spot")], "aws", at_s=100.0)
    store.upsert_instances([instance("i-1", "ready", ready_at_s=150.0)], "aws", at_s=150.0)
    store.upsert_instances([instance("i-1")], "sim", at_s=150.0)       # same id, other provider
    assert [(r.id, r.state) for r in store.instances(provider="aws")] == [("i-1", "ready"), ("i-2", "pending"),
                                                                          ("i-3", "pending")]
    assert store.instances(provider="aws")[0] == instance("i-1", "ready", ready_at_s=150.0)

    # a complete describe that no longer lists i-2: it is gone
    store.upsert_instances([instance("i-1", "ready", ready_at_s=150.0), instance("i-3", "draining", market="spot")],
                           "aws", at_s=200.0, complete=True)
    assert [(r.id, r.state) for r in store.instances(provider="aws")] == [("i-1", "ready"), ("i-3", "draining")]
    gone = [r for r in store.instances(live_only=False, provider="aws") if r.id == "i-2"]
    assert [(r.state, r.terminated_at_s) for r in gone] == [("terminated", 200.0)]
    assert len(store.instances()) == 3                                  # both providers, live only


def test_a_bad_record_leaves_no_partial_state(url, open_store):
    store = open_store(url)
    with pytest.raises(StateError, match="ck_instances_state") as err:
        store.upsert_instances([instance("i-good"), instance("i-bad", state="exploded")], "local", at_s=1.0)
    assert "\n" not in str(err.value)
    assert store.instances(live_only=False) == []
    with pytest.raises(StateError, match="ck_instances_provider"):
        store.upsert_instances([instance("i-good")], "gcp", at_s=1.0)


def test_measurements_and_history(url, open_store):
    store = open_store(url)
    for t in (0.0, 60.0, 120.0):
        store.record_observation(Observation(t, 60.0, 400.0 + t, p99_ms=None if t == 0 else 80.0,
                                             faas_fraction=0.01), slo_attainment=None if t == 0 else 0.995)
        store.record_cost(t, 60.0, iaas_usd=0.0088, faas_usd=0.0001 * t)
    rps = np.array([[400.0, 450.0], [420.0, math.inf]])
    store.record_forecast(Forecast(60.0, 60.0, (0.5, 0.9), rps, "ets: daily season"), made_at_s=61.0)
    store.record_decision(decision(), "d1", made_at_s=61.0, policy="hybrid")
    store.upsert_instances([instance("i-old", "terminated", launched_at_s=0.0, terminated_at_s=30.0),
                            instance("i-new", launched_at_s=90.0)], "local", at_s=90.0)
    store.upsert_function("spillway-resnet", FunctionSpec(4096, 3, 100), at_s=61.0)
    store.upsert_function("spillway-resnet", FunctionSpec(4096, 5, 100), at_s=121.0)

    assert store.observations(since_s=60.0) == [Observation(60.0, 60.0, 460.0, 80.0, 0.01),
                                                Observation(120.0, 60.0, 520.0, 80.0, 0.01)]
    assert store.functions() == {"spillway-resnet": FunctionSpec(4096, 5, 100)}

    frames = store.history(since_s=60.0)
    assert set(frames) == {"decisions", "observations", "forecasts", "costs", "instances"}
    assert list(frames["observations"].measured_at_s) == [60.0, 120.0]
    assert list(frames["observations"].slo_attainment) == [0.995, 0.995]
    assert frames["costs"].faas_usd.sum() == pytest.approx(0.0001 * 180)
    assert list(frames["instances"].id) == ["i-new"]                  # i-old ended before since_s
    forecast = frames["forecasts"].iloc[0]
    assert forecast.quantiles == (0.5, 0.9) and forecast.reason == "ets: daily season"
    np.testing.assert_array_equal(forecast.rps, rps)
    row = frames["decisions"].iloc[0]
    assert (row.id, row.policy, row.status) == ("d1", "hybrid", "planned")
    assert row.targets == decision().targets and row.extra["p90_rps"] == 812.5

    later = store.history(since_s=1e9)                  # columns even with no rows
    assert [name for name, f in later.items() if len(f)] == ["instances"]   # i-new is still alive
    assert "arrival_rps" in later["observations"].columns


# -- migrations -------------------------------------------------------------------------------

def test_migrations_match_models_and_go_down_and_up(url, open_store):
    store = open_store(url)                            # opening upgrades an empty database
    store.record_decision(decision(), "d1", 1.0, "hybrid")
    assert schema_diff(url) == []
    migrate(url)                                       # idempotent: data untouched
    assert open_store(url).last_decision().id == "d1"

    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            assert MigrationContext.configure(conn).get_current_revision() == "0001"
            command.downgrade(alembic_config(conn), "base")
        assert sa.inspect(engine).get_table_names() == ["alembic_version"]
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), "head")
    finally:
        engine.dispose()
    assert schema_diff(url) == []


def test_daemons_starting_together_migrate_once(url, open_store):
    errors = []

    def start():
        try:
            open_store(url)
        except StateError as exc:
            errors.append(exc)
    threads = [threading.Thread(target=start) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and schema_diff(url) == []


# -- leader lease -----------------------------------------------------------------------------

def test_lease_takeover_release_and_fencing(url, open_store):
    a, b = open_store(url), open_store(url)             # two daemons
    first = a.acquire_or_renew("leader", "a", ttl_s=30.0, now_s=1000.0)
    assert (first.holder, first.token, first.expires_at_s) == ("a", 1, 1030.0)
    assert b.acquire_or_renew("leader", "b", ttl_s=30.0, now_s=1029.0) is None
    renewed = a.acquire_or_renew("leader", "a", ttl_s=30.0, now_s=1020.0)
    assert (renewed.token, renewed.acquired_at_s, renewed.expires_at_s) == (1, 1000.0, 1050.0)
    a.record_decision(decision(), "d1", 1020.0, "hybrid", fence=renewed)

    # a's daemon stalls past its expiry; b takes over with a higher token
    taken = b.acquire_or_renew("leader", "b", ttl_s=30.0, now_s=1050.0)
    assert (taken.holder, taken.token) == ("b", 2)
    assert a.acquire_or_renew("leader", "a", ttl_s=30.0, now_s=1051.0) is None
    assert a.current_lease("leader") == taken
    with pytest.raises(LeaseLost):                      # the deposed leader cannot record or act
        a.record_decision(decision(), "d2", 1051.0, "hybrid", fence=renewed)
    with pytest.raises(LeaseLost):
        a.mark_decision("d1", "applied", 1051.0, fence=renewed)
    b.record_decision(decision(), "d2", 1051.0, "hybrid", fence=taken)
    assert a.last_decision().id == "d2"

    assert a.release_lease("leader", "a") is False      # not a's to release
    assert b.release_lease("leader", "b") is True
    assert a.current_lease("leader") is None
    again = a.acquire_or_renew("leader", "a", ttl_s=30.0, now_s=1052.0)   # before b's expiry: released
    assert (again.holder, again.token) == ("a", 3)
    assert a.acquire_or_renew("other", "b", ttl_s=30.0, now_s=1052.0).token == 1   # leases are independent
    with pytest.raises(StateError, match="ttl_s must be > 0"):
        a.acquire_or_renew("leader", "a", ttl_s=0.0, now_s=1052.0)


def test_racing_daemons_never_hold_the_lease_together(url, open_store):
    """Three daemons (threads, each with its own store and connections) contend for one lease
    on the wall clock, pausing at random past the TTL so that takeovers happen."""
    ttl_s, grants, errors = 0.03, [], []
    stores = [open_store(url) for _ in range(3)]

    def daemon(store, holder, seed):
        rng = random.Random(seed)
        try:
            for _ in range(40):
                now_s = time.time()
                lease = store.acquire_or_renew("leader", holder, ttl_s, now_s)
                if lease is not None:
                    grants.append((holder, lease.token, now_s, lease.expires_at_s))
                time.sleep(rng.uniform(0.0, 2 * ttl_s))
        except StateError as exc:
            errors.append(exc)
    threads = [threading.Thread(target=daemon, args=(s, f"daemon-{i}", i)) for i, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    holders_of_token = {}
    for holder, token, _, _ in grants:
        holders_of_token.setdefault(token, set()).add(holder)
    assert all(len(h) == 1 for h in holders_of_token.values())       # a token belongs to one holder
    assert len(holders_of_token) >= 2, "no takeover happened: the race exercised nothing"
    for h1, tok1, start1, end1 in grants:
        for h2, tok2, start2, end2 in grants:
            if h1 != h2:
                assert end1 <= start2 or end2 <= start1, "two holders at once"
                assert (tok1 < tok2) == (start1 < start2)                # later holder, higher token
    print(f"lease race: {len(grants)} grants, {len(holders_of_token)} holder changes")


# -- crash safety -----------------------------------------------------------------------------

CRASHING_DAEMON = """
import sys
from controller.state import StateStore
from controller.types import Decision
from provisioners.base import InstanceRecord

store = StateStore(sys.argv[1])
for i in range(10**9):
    did = f"{sys.argv[2]}-{i}"
    store.record_decision(Decision(targets=((("g4dn.xlarge", "on-demand"), i % 7 + 1),),
                                   reason=f"crash test {did}", extra=(("i", float(i)),)), did, float(i), "crash")
    print(did, flush=True)          # only after record_decision returned
    store.upsert_instances([InstanceRecord(f"{did}-{k}", "g4dn.xlarge", "on-demand", "pending", float(i),
                                           decision_id=did) for k in range(5)], "local", float(i))
"""


KILLS = 5


def test_sigkill_mid_write_loses_no_committed_decision(url):
    rng = random.Random(7)
    returned: set[str] = set()
    for round_ in range(KILLS):
        child = subprocess.Popen([sys.executable, "-c", CRASHING_DAEMON, url, f"r{round_}"], cwd=REPO,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            for _ in range(rng.randint(1, 25)):         # let it write a while, then kill it mid-loop
                line = child.stdout.readline()
                assert line, f"writer died on its own: {child.stderr.read()[-2000:]}"
                returned.add(line.strip())
            # a write cycle (decision, then its instances) takes ~6-9 ms here: a random pause
            # lands the kill inside either transaction, or between them
            time.sleep(rng.uniform(0.0, 0.015))
            os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=10)
            returned.update(line.strip() for line in child.stdout.read().splitlines())
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
            child.stdout.close()
            child.stderr.close()

        with StateStore(url) as store:                  # opens cleanly after the kill
            frames = store.history(since_s=-math.inf)
            decisions = frames["decisions"]
            assert returned <= set(decisions.id)
            for row in decisions.itertuples():          # every visible decision is whole
                i = int(row.id.rsplit("-", 1)[1])
                assert (row.reason, row.targets, row.extra) == (
                    f"crash test {row.id}", ((("g4dn.xlarge", "on-demand"), i % 7 + 1),), {"i": float(i)})
            batches = frames["instances"].groupby("decision_id").size()
            assert (batches == 5).all()                 # each batch all or nothing
            assert store.last_decision().id == decisions.id.iloc[-1]
    print(f"crash test: {KILLS} SIGKILLs, {len(returned)} acknowledged decisions all present")


# -- faults -----------------------------------------------------------------------------------

def test_locked_sqlite_is_a_clear_error_and_no_partial_write(tmp_path, open_store):
    path = tmp_path / "state.db"
    url = f"sqlite:///{path}"
    store = open_store(url, timeout_s=0.2)
    store.record_decision(decision(), "d1", 1.0, "hybrid")
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")                  # another process holds the write lock
    try:
        with pytest.raises(StateError) as err:
            store.record_decision(decision(), "d2", 2.0, "hybrid")
        assert str(err.value) == f"state database {url}: recording decision 'd2': database is locked"
        with pytest.raises(StateError, match="database is locked"):
            StateStore(url, timeout_s=0.2)
        assert store.last_decision().id == "d1"          # readers are not blocked (WAL)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert store.last_decision().id == "d1"
    store.record_decision(decision(), "d2", 2.0, "hybrid")
    assert store.last_decision().id == "d2"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_postgres_down_is_a_clear_error_with_the_password_masked():
    port = closed_port()
    with pytest.raises(StateError) as err:
        StateStore(f"postgresql://spillway:s3cret@127.0.0.1:{port}/state", timeout_s=2)
    message = str(err.value)
    assert message.startswith(f"state database postgresql://spillway:***@127.0.0.1:{port}/state: ")
    assert "Connection refused" in message and "s3cret" not in message and "\n" not in message


@pytest.mark.parametrize("bad_url, problem", [
    ("", "URL is empty"),
    ("not a url", "not a database URL"),
    ("postgresql://spillway:s3cret@db:notaport/state", "not a database URL"),
    ("mysql://spillway:s3cret@db/state", "unsupported database 'mysql'"),
    ("postgresql+psycopg2://spillway:s3cret@db/state", "driver not available"),
    ("sqlite://", "in-memory SQLite"),
    ("sqlite:///{tmp}/no/such/dir/state.db", "unable to open database file"),
])
def test_bad_urls_are_one_line_errors(bad_url, problem, tmp_path):
    with pytest.raises(StateError) as err:
        StateStore(bad_url.format(tmp=tmp_path))
    message = str(err.value)
    assert problem in message and "\n" not in message and "s3cret" not in message
