"""the placement index on SQLite and MariaDB/MySQL too

Revision ID: 0011
Revises: 0010

Migration 0010 gave PostgreSQL an expression index that keeps each type's
servers in load order, so a placement decision walks it and stops at the first
server of the cluster with room. SQLite and MariaDB still sorted every server
of the type: with 1,000 servers and 100,000 instances, 2.1 ms and 7 ms per
decision. Now they have the index too:

- SQLite indexes the same expression (it serves an ORDER BY whose expression is
  the index's, as PostgreSQL does): 0.43 ms, on the same slow machine.
- MariaDB (no expression indexes in 10.11) and MySQL index a virtual generated
  column, `server_t.placement_load`, which computes the same expression; the
  MySQL form of the placement query orders by that column. It is not in the
  models: nothing writes it, and `dfe db check` ignores it, as it ignores the index.
  Its DECIMAL keeps every digit of the expression's value (MariaDB computes it
  with 5 decimals). 1.9 ms, on the same machine.

The same release changed the instance counter triggers to lock the cluster's row
before the servers', placement's own order (a launch and a deletion in one cluster
could deadlock). Every `dfe db upgrade` reinstalls the triggers, this one included,
so reaching this revision also puts the new triggers in place.
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0011'
down_revision: str | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_server_t_placement"
COLUMN = "placement_load"
LOAD = (
    "CASE WHEN max_instances IS NULL THEN 0.0 WHEN max_instances = 0 "
    "THEN 1.0 ELSE instance_count * 1.0 / max_instances END"
)


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        bind.exec_driver_sql(
            f"CREATE INDEX IF NOT EXISTS {INDEX} "
            f"ON server_t (server_type, ({LOAD}), instance_count, name, id)"
        )
    elif bind.dialect.name == "mysql":
        bind.exec_driver_sql(
            f"ALTER TABLE server_t ADD COLUMN {COLUMN} DECIMAL(30, 10) "
            f"GENERATED ALWAYS AS ({LOAD}) VIRTUAL, "
            f"ADD INDEX {INDEX} (server_type, {COLUMN}, instance_count, name, id)"
        )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        bind.exec_driver_sql(f"DROP INDEX IF EXISTS {INDEX}")
    elif bind.dialect.name == "mysql":
        bind.exec_driver_sql(f"ALTER TABLE server_t DROP INDEX {INDEX}, DROP COLUMN {COLUMN}")
