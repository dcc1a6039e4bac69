"""Alembic environment: runs on the connection `dfe.db.migrate` hands it."""

from __future__ import annotations

from alembic import context

import dfe.models  # noqa: F401  (registers every table)
from dfe.db.archive_triggers import include_name
from dfe.db.base import Base


def run_migrations() -> None:
    connection = context.config.attributes["connection"]
    is_sqlite = connection.dialect.name == "sqlite"
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=is_sqlite,
        compare_type=True,
        include_name=include_name,
        user_module_prefix="dfe.db.base.",
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
