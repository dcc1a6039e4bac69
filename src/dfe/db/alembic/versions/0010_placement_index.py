"""an expression index that serves placement's least-loaded choice on PostgreSQL

Revision ID: 0010
Revises: 0009

Placement picks, per server type, the enabled server of a cluster with room and
the lowest load (`dfe.provisioning.placement`). Without an index each choice sorted
every server of the type: with 1,000 servers, 1.9 ms of a 2.9 ms decision. This
index holds the servers of each type in load order, so PostgreSQL walks it and stops
at the first server of the cluster with room. Its load expression must stay the one
of `placement.LOAD_SQL` (a test checks that the plan uses the index). SQLite and
MariaDB (no expression indexes in 10.11) are unchanged; `dfe db check` ignores it,
being PostgreSQL-only.
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_server_t_placement"
LOAD = (
    "CASE WHEN max_instances IS NULL THEN 0.0 WHEN max_instances = 0 "
    "THEN 1.0 ELSE instance_count * 1.0 / max_instances END"
)


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.get_bind().exec_driver_sql(
            f"CREATE INDEX IF NOT EXISTS {INDEX} "
            f"ON server_t (server_type, ({LOAD}), instance_count, name, id)"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.get_bind().exec_driver_sql(f"DROP INDEX IF EXISTS {INDEX}")
