"""a trigram index for searching instance names on PostgreSQL

Revision ID: 0009
Revises: 0008

The admin UI searches instance names by substring (`lower(name) LIKE '%q%'`),
which no b-tree index serves: with 100,000 instances PostgreSQL scanned the
table twice per page (the count and the page). A GIN trigram index on
`lower(name)` serves both. It needs the `pg_trgm` extension, which is trusted
(PostgreSQL 13 and newer): the database's owner may create it. Where it cannot be
created, the migration goes on without the index and search stays correct, only
slower. SQLite and MariaDB are unchanged. `dfe db check` ignores indexes named
`*_trgm` (they are not in the models, being PostgreSQL-only).
"""

from collections.abc import Sequence

import structlog
from alembic import op
from sqlalchemy.exc import DBAPIError

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_instance_t_name_trgm"


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    savepoint = bind.begin_nested()
    try:
        bind.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    except DBAPIError as error:
        savepoint.rollback()
        structlog.get_logger("dfe.migrate").warning(
            "pg_trgm unavailable: instance name search will scan the table",
            error=str(error.orig).strip(),
        )
        return
    savepoint.commit()
    bind.exec_driver_sql(
        f"CREATE INDEX IF NOT EXISTS {INDEX} ON instance_t USING gin (lower(name) gin_trgm_ops)"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.get_bind().exec_driver_sql(f"DROP INDEX IF EXISTS {INDEX}")
