"""StateStore: the daemon's durable state behind a small API (SQLite by default, or PostgreSQL).

Every call is one short transaction: it commits before returning, or rolls back and raises a
one-line StateError naming the database (password masked) and the problem. So a decision whose
`record_decision` returned is on disk before the daemon acts on it, and a crash (even SIGKILL)
leaves either the whole write or none of it.

SQLite runs in WAL mode with synchronous=FULL (a commit is fsynced before it returns; readers
such as `spillway report` never block the daemon's writes) and a busy timeout of `timeout_s`:
a database locked by another process for longer gives "database is locked" instead of a hang.
On PostgreSQL the same `timeout_s` bounds connecting and waiting for row locks.

Opening a store runs the Alembic migrations to head (idempotent; a no-op when up to date).
"""
from __future__ import annotations

import math
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

import numpy as np
from alembic import command
from alembic.config import Config
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, create_engine, event, func, insert, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError

from controller.state import lease as leases
from controller.state.lease import Lease
from controller.state.models import (CostRow, DecisionRow, ForecastRow, FunctionRow, InstanceRow,
                                     ObservationRow)
from controller.types import Decision, Observation
from provisioners.base import TERMINATED, FunctionSpec, InstanceRecord

if TYPE_CHECKING:
    import pandas as pd

    from controller.forecast import Forecast

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_READ_ONLY = "spillway_read_only"       # execution option: a read transaction (plain BEGIN)
_MIGRATION_LOCK_KEY = 0x5350494C4C      # "SPILL": pg advisory lock serialising migrations


class StateError(RuntimeError):
    """A state-database problem, in one line: which database (password masked), what failed."""


class LeaseLost(StateError):
    """A fenced write by a daemon whose lease has passed to another holder."""


@dataclass(frozen=True)
class RecordedDecision:
    id: str
    decision: Decision
    made_at_s: float
    policy: str
    status: str                  # planned | applied | failed
    applied_at_s: float | None   # when the status became applied or failed


def mask_url(url: str) -> str:
    """`url` with its password replaced by ***, also when the URL does not parse."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):   # ValueError: a non-numeric port
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def alembic_config(connection: Connection) -> Config:
    """Alembic configured in code: the migrations ship inside the package, no alembic.ini."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def migrate(url: str, *, timeout_s: float = 5.0) -> None:
    """Bring the database at `url` to the latest schema (what opening a StateStore does)."""
    StateStore(url, timeout_s=timeout_s).close()


class StateStore:
    def __init__(self, url: str, *, timeout_s: float = 5.0):
        self.url = mask_url(url)
        self._engine = _make_engine(url, self.url, timeout_s)
        postgres = self._engine.dialect.name == "postgresql"
        self._insert = postgresql.insert if postgres else sqlite.insert
        # history() reads several tables: REPEATABLE READ gives them one snapshot on PostgreSQL
        # (SQLite's read transaction already does).
        self._reader = self._engine.execution_options(
            **{_READ_ONLY: True}, **({"isolation_level": "REPEATABLE READ"} if postgres else {}))
        try:
            self.migrate()
        except StateError:
            self.close()
            raise

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def migrate(self) -> None:
        """Upgrade the schema to head in one transaction (idempotent)."""
        with self._transaction("opening and migrating") as conn:
            if conn.dialect.name == "postgresql":
                # two daemons starting together on an empty database would both CREATE TABLE
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})
            command.upgrade(alembic_config(conn), "head")

    # -- decisions ---------------------------------------------------------------------------

    def record_decision(self, decision: Decision, decision_id: str, made_at_s: float, policy: str,
                        *, fence: Lease | None = None) -> None:
        """Commit `decision` (status planned). Durable when this returns: act on it only then.
        With `fence`, raises LeaseLost unless that lease is still the current grant."""
        with self._transaction(f"recording decision {decision_id!r}") as conn:
            self._check_fence(conn, fence)
            if conn.scalar(select(DecisionRow.id).where(DecisionRow.id == decision_id)) is not None:
                raise StateError(f"state database {self.url}: decision {decision_id!r} is already recorded")
            next_seq = select(func.coalesce(func.max(DecisionRow.seq), 0) + 1).scalar_subquery()
            conn.execute(insert(DecisionRow).values(
                id=decision_id, seq=next_seq, made_at_s=made_at_s, policy=policy, status="planned",
                **_decision_columns(decision)))

    def mark_decision(self, decision_id: str, status: str, at_s: float, *,
                      fence: Lease | None = None) -> None:
        """Settle a recorded decision: status "applied" or "failed", at `at_s`."""
        if status not in ("applied", "failed"):
            raise StateError(f"state database {self.url}: decision status {status!r}: "
                             "expected 'applied' or 'failed'")
        with self._transaction(f"marking decision {decision_id!r} {status}") as conn:
            self._check_fence(conn, fence)
            done = conn.execute(update(DecisionRow).where(DecisionRow.id == decision_id)
                                .values(status=status, applied_at_s=at_s))
            if done.rowcount != 1:
                raise StateError(f"state database {self.url}: no decision {decision_id!r} recorded")

    def last_decision(self) -> RecordedDecision | None:
        """The most recently committed decision (whatever its status), or None."""
        with self._transaction("reading the last decision", read_only=True) as conn:
            row = conn.execute(select(DecisionRow).order_by(DecisionRow.seq.desc()).limit(1)).first()
        return None if row is None else RecordedDecision(
            row.id, _decision_from_row(row), row.made_at_s, row.policy, row.status, row.applied_at_s)

    # -- instances and functions -------------------------------------------------------------

    def upsert_instances(self, records: Iterable[InstanceRecord], provider: str, at_s: float, *,
                         complete: bool = False) -> None:
        """Insert or update `records` of `provider` (sim | local | aws) as seen at `at_s`.

        complete=True says `records` is the provider's whole fleet (a describe()): instances of
        that provider the store holds as live but `records` lacks are marked terminated at at_s.
        """
        rows = [dict(provider=provider, id=r.id, instance_type=r.instance_type, market=r.market,
                     state=r.state, launched_at_s=r.launched_at_s, ready_at_s=r.ready_at_s,
                     terminated_at_s=r.terminated_at_s, decision_id=r.decision_id, updated_at_s=at_s)
                for r in records]
        with self._transaction(f"recording {len(rows)} {provider} instances") as conn:
            if rows:
                stmt = self._insert(InstanceRow).values(rows)
                keys = {"provider", "id"}
                conn.execute(stmt.on_conflict_do_update(
                    index_elements=[InstanceRow.provider, InstanceRow.id],
                    set_={name: stmt.excluded[name] for name in rows[0] if name not in keys}))
            if complete:
                conn.execute(update(InstanceRow)
                             .where(InstanceRow.provider == provider, InstanceRow.state != TERMINATED,
                                    InstanceRow.id.not_in([row["id"] for row in rows]))
                             .values(state=TERMINATED, terminated_at_s=at_s, updated_at_s=at_s))

    def instances(self, live_only: bool = True, provider: str | None = None) -> list[InstanceRecord]:
        """Recorded instances, oldest launch first; live = not terminated (draining counts)."""
        query = select(InstanceRow).order_by(InstanceRow.launched_at_s, InstanceRow.id)
        if live_only:
            query = query.where(InstanceRow.state != TERMINATED)
        if provider is not None:
            query = query.where(InstanceRow.provider == provider)
        with self._transaction("reading instances", read_only=True) as conn:
            rows = conn.execute(query).all()
        return [InstanceRecord(r.id, r.instance_type, r.market, r.state, r.launched_at_s, r.ready_at_s,
                               r.terminated_at_s, r.decision_id) for r in rows]

    def upsert_function(self, name: str, spec: FunctionSpec, at_s: float) -> None:
        values = dict(memory_mb=spec.memory_mb, warm_concurrency=spec.warm_concurrency,
                      max_concurrency=spec.max_concurrency, updated_at_s=at_s)
        with self._transaction(f"recording function {name!r}") as conn:
            conn.execute(self._insert(FunctionRow).values(name=name, **values)
                         .on_conflict_do_update(index_elements=[FunctionRow.name], set_=values))

    def functions(self) -> dict[str, FunctionSpec]:
        with self._transaction("reading functions", read_only=True) as conn:
            rows = conn.execute(select(FunctionRow).order_by(FunctionRow.name)).all()
        return {r.name: FunctionSpec(r.memory_mb, r.warm_concurrency, r.max_concurrency) for r in rows}

    # -- measurements ------------------------------------------------------------------------

    def record_observation(self, observation: Observation, slo_attainment: float | None = None) -> None:
        o = observation
        with self._transaction("recording an observation") as conn:
            conn.execute(insert(ObservationRow).values(
                measured_at_s=o.measured_at_s, window_s=o.window_s, arrival_rps=o.arrival_rps,
                p99_ms=o.p99_ms, faas_fraction=o.faas_fraction, slo_attainment=slo_attainment))

    def observations(self, since_s: float) -> list[Observation]:
        """Observations measured at or after `since_s`, oldest first (to re-feed a forecaster)."""
        with self._transaction("reading observations", read_only=True) as conn:
            rows = conn.execute(select(ObservationRow).where(ObservationRow.measured_at_s >= since_s)
                                .order_by(ObservationRow.measured_at_s, ObservationRow.id)).all()
        return [Observation(r.measured_at_s, r.window_s, r.arrival_rps, r.p99_ms, r.faas_fraction)
                for r in rows]

    def record_forecast(self, forecast: Forecast, made_at_s: float) -> None:
        with self._transaction("recording a forecast") as conn:
            conn.execute(insert(ForecastRow).values(
                made_at_s=made_at_s, origin_s=forecast.origin_s, step_s=forecast.step_s,
                quantiles=list(forecast.quantiles),
                rps=[[_to_json(v) for v in step] for step in np.asarray(forecast.rps, dtype=float).tolist()],
                reason=forecast.reason))

    def record_cost(self, at_s: float, interval_s: float, iaas_usd: float, faas_usd: float) -> None:
        """Spend over the interval (at_s - interval_s, at_s]."""
        with self._transaction("recording a cost") as conn:
            conn.execute(insert(CostRow).values(at_s=at_s, interval_s=interval_s, iaas_usd=iaas_usd,
                                                faas_usd=faas_usd))

    def history(self, since_s: float) -> dict[str, pd.DataFrame]:
        """Everything recorded since `since_s`, one DataFrame per table (columns as the models'),
        read from one snapshot: decisions (targets/extra decoded as in Decision; extra as dict),
        observations, forecasts (quantiles tuple, rps ndarray [steps, quantiles]), costs, and the
        instances alive at some point since `since_s`."""
        # pandas is imported here, not at module level: the daemon's write path does not need it
        import pandas as pd

        queries = {
            "decisions": select(DecisionRow).where(DecisionRow.made_at_s >= since_s).order_by(DecisionRow.seq),
            "observations": select(ObservationRow).where(ObservationRow.measured_at_s >= since_s)
            .order_by(ObservationRow.measured_at_s, ObservationRow.id),
            "forecasts": select(ForecastRow).where(ForecastRow.made_at_s >= since_s)
            .order_by(ForecastRow.made_at_s, ForecastRow.id),
            "costs": select(CostRow).where(CostRow.at_s >= since_s).order_by(CostRow.at_s, CostRow.id),
            "instances": select(InstanceRow).where((InstanceRow.terminated_at_s.is_(None))
                                                   | (InstanceRow.terminated_at_s >= since_s))
            .order_by(InstanceRow.launched_at_s, InstanceRow.id),
        }
        decode = {
            "decisions": {"targets": _decision_targets, "extra": lambda e: dict(_decision_extra(e))},
            "forecasts": {"quantiles": tuple, "rps": lambda rps: np.array(rps, dtype=float)},
        }
        frames = {}
        with self._transaction("reading history", read_only=True) as conn:
            for name, query in queries.items():
                result = conn.execute(query)
                columns = list(result.keys())
                rows = [[decode.get(name, {}).get(col, _same)(value) for col, value in zip(columns, row)]
                        for row in result]
                frames[name] = pd.DataFrame(rows, columns=columns)
        return frames

    # -- leader lease ------------------------------------------------------------------------

    def acquire_or_renew(self, name: str, holder: str, ttl_s: float, now_s: float) -> Lease | None:
        """Take or renew lease `name` for `holder` until now_s + ttl_s; None if another holder's
        lease has not expired. Atomic against any number of contenders (see lease.py)."""
        if not ttl_s > 0:
            raise StateError(f"state database {self.url}: lease {name!r}: ttl_s must be > 0, got {ttl_s}")
        with self._transaction(f"taking lease {name!r}") as conn:
            return leases.acquire_or_renew(conn, self._insert, name, holder, ttl_s, now_s)

    def release_lease(self, name: str, holder: str) -> bool:
        """Give up `name` if `holder` holds it (True); the next taker gets a higher token."""
        with self._transaction(f"releasing lease {name!r}") as conn:
            return leases.release(conn, name, holder)

    def current_lease(self, name: str) -> Lease | None:
        """The recorded holder of `name` (possibly expired), or None if released or never taken."""
        with self._transaction(f"reading lease {name!r}", read_only=True) as conn:
            return leases.current(conn, name)

    # -- plumbing ----------------------------------------------------------------------------

    def _check_fence(self, conn: Connection, fence: Lease | None) -> None:
        if fence is not None and not leases.still_held(conn, fence):
            raise LeaseLost(f"state database {self.url}: lease {fence.name!r} token {fence.token} "
                            f"of {fence.holder!r} has passed to another holder")

    @contextmanager
    def _transaction(self, doing: str, *, read_only: bool = False) -> Iterator[Connection]:
        try:
            with (self._reader if read_only else self._engine).begin() as conn:
                yield conn
        except StateError:
            raise
        except (SQLAlchemyError, CommandError) as exc:
            raise StateError(f"state database {self.url}: {doing}: {_problem(exc)}") from exc


def _make_engine(url: str, shown: str, timeout_s: float) -> Engine:
    if not url.strip():
        raise StateError("state database URL is empty (expected sqlite:///PATH or postgresql://USER@HOST/DB)")
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise StateError(f"state database {shown}: not a database URL "
                         "(expected sqlite:///PATH or postgresql://USER@HOST/DB)") from None
    backend = parsed.get_backend_name()
    try:
        if backend == "sqlite":
            if parsed.database in (None, "", ":memory:"):
                raise StateError(f"state database {shown}: an in-memory SQLite database would lose "
                                 "the state on exit; give a file (sqlite:///PATH)")
            engine = create_engine(parsed, connect_args={"timeout": timeout_s})
            event.listen(engine, "connect", _sqlite_connect)
            event.listen(engine, "begin", _sqlite_begin)
            return engine
        if backend == "postgresql":
            # pre-ping: a daemon outlives database restarts; its pooled connections may be dead
            return create_engine(parsed, pool_pre_ping=True, connect_args={
                "connect_timeout": max(2, math.ceil(timeout_s)),   # libpq's minimum is 2 s
                "options": f"-c lock_timeout={round(timeout_s * 1000)}"})
    except (ArgumentError, ImportError) as exc:   # unknown or uninstalled driver
        raise StateError(f"state database {shown}: driver not available: {_problem(exc)}") from None
    raise StateError(f"state database {shown}: unsupported database {backend!r} "
                     "(expected sqlite:///PATH or postgresql://USER@HOST/DB)")


def _sqlite_connect(dbapi_connection, _record) -> None:
    # SQLAlchemy emits BEGIN itself (_sqlite_begin); the driver's own implicit BEGIN, issued
    # only before DML, would leave reads and DDL outside the transaction.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    # IMMEDIATE takes the write lock before the first read: a deferred transaction that reads
    # and then writes fails at once with "database is locked" (no busy wait) if another writer
    # committed in between, and the lease's check-then-write must not interleave at all.
    conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(_READ_ONLY) else "BEGIN IMMEDIATE")


def _problem(exc: BaseException) -> str:
    """The first line of the driver's message (SQLAlchemy's wrapper adds SQL and links)."""
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    lines = str(cause).strip().splitlines()
    return lines[0] if lines else type(cause).__name__


# JSON has no inf/nan, and PostgreSQL rejects the non-standard tokens Python writes for them:
# store non-finite numbers as the strings "inf", "-inf", "nan" (float() reads them back).
def _to_json(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)


def _same(value: Any) -> Any:
    return value


def _decision_columns(d: Decision) -> dict[str, Any]:
    return dict(targets=[[itype, market, n] for (itype, market), n in d.targets],
                spill_enabled=d.spill_enabled, spill_threshold_ms=float(d.spill_threshold_ms),
                warm_concurrency=d.warm_concurrency, function_memory_mb=d.function_memory_mb,
                reason=d.reason, extra=[[name, _to_json(float(v))] for name, v in d.extra])


def _decision_targets(targets: list) -> tuple:
    return tuple(((itype, market), int(n)) for itype, market, n in targets)


def _decision_extra(extra: list) -> tuple:
    return tuple((name, float(v)) for name, v in extra)


def _decision_from_row(row) -> Decision:
    return Decision(targets=_decision_targets(row.targets), reason=row.reason,
                    spill_enabled=row.spill_enabled, spill_threshold_ms=row.spill_threshold_ms,
                    warm_concurrency=row.warm_concurrency, function_memory_mb=row.function_memory_mb,
                    extra=_decision_extra(row.extra))
