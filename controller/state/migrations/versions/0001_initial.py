"""Initial schema: instances, functions, decisions, forecasts, observations, costs, leases.

Written out in full rather than derived from the models, so that this revision keeps creating
the same schema when the models move on (later changes get their own revisions).

Revision ID: 0001
Revises:
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: Union[str, Sequence[str], None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

# table -> indexed time (or lookup) columns
INDEXES = {
    "instances": ("state", "launched_at_s", "terminated_at_s", "decision_id"),
    "decisions": ("made_at_s",),
    "forecasts": ("made_at_s",),
    "observations": ("measured_at_s",),
    "costs": ("at_s",),
}


def upgrade() -> None:
    op.create_table(
        "instances",
        sa.Column("provider", sa.String(), nullable=False),
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("instance_type", sa.String(), nullable=False),
        sa.Column("market", sa.String(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("launched_at_s", sa.Double(), nullable=False),
        sa.Column("ready_at_s", sa.Double(), nullable=True),
        sa.Column("terminated_at_s", sa.Double(), nullable=True),
        sa.Column("decision_id", sa.String(), nullable=False),
        sa.Column("updated_at_s", sa.Double(), nullable=False),
        sa.CheckConstraint("provider IN ('sim', 'local', 'aws')", name=op.f("ck_instances_provider")),
        sa.CheckConstraint("market IN ('on-demand', 'spot')", name=op.f("ck_instances_market")),
        sa.CheckConstraint("state IN ('pending', 'ready', 'draining', 'terminated')",
                           name=op.f("ck_instances_state")),
        sa.PrimaryKeyConstraint("provider", "id", name=op.f("pk_instances")),
    )
    op.create_table(
        "functions",
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("memory_mb", sa.Integer(), nullable=False),
        sa.Column("warm_concurrency", sa.Integer(), nullable=False),
        sa.Column("max_concurrency", sa.Integer(), nullable=False),
        sa.Column("updated_at_s", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_functions")),
    )
    op.create_table(
        "decisions",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("made_at_s", sa.Double(), nullable=False),
        sa.Column("policy", sa.String(), nullable=False),
        sa.Column("targets", sa.JSON(), nullable=False),
        sa.Column("spill_enabled", sa.Boolean(), nullable=False),
        sa.Column("spill_threshold_ms", sa.Double(), nullable=False),
        sa.Column("warm_concurrency", sa.Integer(), nullable=False),
        sa.Column("function_memory_mb", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("extra", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("applied_at_s", sa.Double(), nullable=True),
        sa.CheckConstraint("status IN ('planned', 'applied', 'failed')", name=op.f("ck_decisions_status")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_decisions")),
        sa.UniqueConstraint("seq", name=op.f("uq_decisions_seq")),
    )
    op.create_table(
        "forecasts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("made_at_s", sa.Double(), nullable=False),
        sa.Column("origin_s", sa.Double(), nullable=False),
        sa.Column("step_s", sa.Double(), nullable=False),
        sa.Column("quantiles", sa.JSON(), nullable=False),
        sa.Column("rps", sa.JSON(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_forecasts")),
    )
    op.create_table(
        "observations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("measured_at_s", sa.Double(), nullable=False),
        sa.Column("window_s", sa.Double(), nullable=False),
        sa.Column("arrival_rps", sa.Double(), nullable=False),
        sa.Column("p99_ms", sa.Double(), nullable=True),
        sa.Column("faas_fraction", sa.Double(), nullable=False),
        sa.Column("slo_attainment", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_observations")),
    )
    op.create_table(
        "costs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at_s", sa.Double(), nullable=False),
        sa.Column("interval_s", sa.Double(), nullable=False),
        sa.Column("iaas_usd", sa.Double(), nullable=False),
        sa.Column("faas_usd", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_costs")),
    )
    op.create_table(
        "leases",
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("holder", sa.String(), nullable=True),
        sa.Column("token", sa.Integer(), nullable=False),
        sa.Column("acquired_at_s", sa.Double(), nullable=False),
        sa.Column("expires_at_s", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_leases")),
    )
    for table, columns in INDEXES.items():
        for column in columns:
            op.create_index(op.f(f"ix_{table}_{column}"), table, [column], unique=False)


def downgrade() -> None:
    for table, columns in INDEXES.items():
        for column in columns:
            op.drop_index(op.f(f"ix_{table}_{column}"), table_name=table)
    for table in ("leases", "costs", "observations", "forecasts", "decisions", "functions", "instances"):
        op.drop_table(table)
