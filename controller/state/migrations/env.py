"""Alembic environment for the controller's state database.

Alembic is configured in code (`controller.state.store.alembic_config`), not by an alembic.ini,
so migrations run from the installed package. The caller passes an open connection inside its
own transaction: the whole upgrade commits or rolls back as one (PostgreSQL and SQLite both
have transactional DDL), so a crash mid-migration leaves the previous schema intact.
"""
from alembic import context

from controller.state.models import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, compare_type=True,
                  # SQLite cannot ALTER most things in place; batch mode copies the table
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
