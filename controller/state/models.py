"""The controller's durable tables (SQLAlchemy 2 typed declarative models).

One row per thing the daemon must not forget across a restart: its instances, function settings,
decisions (with reasons, committed before they are acted on), forecasts, observed load and
latency, costs, and the leader lease. Times are epoch seconds (float) in columns named `*_s`;
every time column that history queries filter on is indexed.

The schema is created by the Alembic migrations in `controller/state/migrations`, never by
`create_all`; a test compares the migrated schema with these models, so a model change without a
migration fails the suite. Constraint names follow `NAMING_CONVENTION` so that migrations can
refer to them by name on every backend.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, CheckConstraint, Double, MetaData, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

PROVIDERS = ("sim", "local", "aws")
MARKETS = ("on-demand", "spot")
INSTANCE_STATES = ("pending", "ready", "draining", "terminated")
DECISION_STATUSES = ("planned", "applied", "failed")

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "pk": "pk_%(table_name)s",
}


def one_of(column: str, values: tuple[str, ...]) -> str:
    """SQL text of a CHECK that `column` holds one of `values` (also used by the migration)."""
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    # float columns are double precision on every backend: epoch seconds need ~16 digits
    # (1.7e9 s with millisecond resolution), more than a 4-byte REAL holds.
    type_annotation_map = {float: Double(), dict[str, Any]: JSON(), list[Any]: JSON()}


class InstanceRow(Base):
    """The last known state of every instance the daemon launched or adopted."""
    __tablename__ = "instances"
    __table_args__ = (CheckConstraint(one_of("provider", PROVIDERS), name="provider"),
                      CheckConstraint(one_of("market", MARKETS), name="market"),
                      CheckConstraint(one_of("state", INSTANCE_STATES), name="state"))

    # (provider, id): ids are unique within one provider only (a local process id may repeat
    # a simulated one when a database is reused across worlds).
    provider: Mapped[str] = mapped_column(primary_key=True)
    id: Mapped[str] = mapped_column(primary_key=True)
    instance_type: Mapped[str]
    market: Mapped[str]
    state: Mapped[str] = mapped_column(index=True)
    launched_at_s: Mapped[float] = mapped_column(index=True)
    ready_at_s: Mapped[float | None]
    terminated_at_s: Mapped[float | None] = mapped_column(index=True)
    decision_id: Mapped[str] = mapped_column(index=True)
    updated_at_s: Mapped[float]


class FunctionRow(Base):
    """The current settings of each serverless function (upserted when they change)."""
    __tablename__ = "functions"

    name: Mapped[str] = mapped_column(primary_key=True)
    memory_mb: Mapped[int]
    warm_concurrency: Mapped[int]
    max_concurrency: Mapped[int]
    updated_at_s: Mapped[float]


class DecisionRow(Base):
    """One controller decision, committed (status planned) before the daemon acts on it."""
    __tablename__ = "decisions"
    __table_args__ = (CheckConstraint(one_of("status", DECISION_STATUSES), name="status"),)

    id: Mapped[str] = mapped_column(primary_key=True)
    # Commit order. made_at_s cannot order decisions: the wall clock may step backwards (NTP)
    # between a daemon's crash and its restart, and two ticks may share a timestamp.
    seq: Mapped[int] = mapped_column(unique=True)
    made_at_s: Mapped[float] = mapped_column(index=True)
    policy: Mapped[str]
    targets: Mapped[list[Any]]        # [[instance_type, market, count], ...]
    spill_enabled: Mapped[bool]
    spill_threshold_ms: Mapped[float]  # may be +inf (never spill on latency)
    warm_concurrency: Mapped[int]
    function_memory_mb: Mapped[int]
    reason: Mapped[str] = mapped_column(Text)
    extra: Mapped[list[Any]]          # [[name, value], ...]
    status: Mapped[str]
    applied_at_s: Mapped[float | None]  # when the status became applied or failed


class ForecastRow(Base):
    __tablename__ = "forecasts"

    id: Mapped[int] = mapped_column(primary_key=True)
    made_at_s: Mapped[float] = mapped_column(index=True)
    origin_s: Mapped[float]
    step_s: Mapped[float]
    quantiles: Mapped[list[Any]]      # [q, ...]
    rps: Mapped[list[Any]]            # [[rps per quantile] per step]
    reason: Mapped[str] = mapped_column(Text)


class ObservationRow(Base):
    __tablename__ = "observations"

    id: Mapped[int] = mapped_column(primary_key=True)
    measured_at_s: Mapped[float] = mapped_column(index=True)
    window_s: Mapped[float]
    arrival_rps: Mapped[float]
    p99_ms: Mapped[float | None]      # None: no request completed in the window
    faas_fraction: Mapped[float]
    slo_attainment: Mapped[float | None]


class CostRow(Base):
    __tablename__ = "costs"

    id: Mapped[int] = mapped_column(primary_key=True)
    at_s: Mapped[float] = mapped_column(index=True)   # end of the interval
    interval_s: Mapped[float]
    iaas_usd: Mapped[float]
    faas_usd: Mapped[float]


class LeaseRow(Base):
    """A named leader lease. The row is never deleted, so `token` only ever grows: it is the
    fencing token that tells a write from the current leader from one by a deposed leader."""
    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(primary_key=True)
    holder: Mapped[str | None]        # None: released
    token: Mapped[int]
    acquired_at_s: Mapped[float]
    expires_at_s: Mapped[float]
