"""Archive tables, generated from the live tables they shadow.

Each `<x>_arch_t` has every column of `<x>_t` (same names and types, all
nullable, no keys), so `INSERT INTO x_t (cols) SELECT cols FROM x_arch_t ...`
restores a row, plus its own `archive_id` and when, by whom and in which batch
the row was archived. Triggers (`dfe.db.archive_triggers`) fill them on DELETE.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Column, Index, String, Table

from dfe.db.base import Base, Id, UTCDateTime
from dfe.models.identity import User  # noqa: F401  (parents must be defined first)
from dfe.models.infrastructure import Cluster, ClusterServer, Server
from dfe.models.instances import Instance, InstanceGuest, InstanceServer

ARCHIVE_COLUMNS = ("archive_id", "archived_at", "archived_by", "archive_batch")


def _archive_of(live: Table) -> Table:
    name = live.name.removesuffix("_t") + "_arch_t"
    columns: list[Column[Any]] = [Column("archive_id", Id, primary_key=True, autoincrement=True)]
    columns += [Column(c.name, c.type, nullable=True) for c in live.columns]
    columns += [
        Column("archived_at", UTCDateTime, nullable=False),
        Column("archived_by", String(255)),
        Column("archive_batch", String(64), nullable=False),
    ]
    table = Table(name, Base.metadata, *columns, sqlite_autoincrement=True)
    Index(f"ix_{name}_archive_batch", table.c.archive_batch)
    Index(f"ix_{name}_archived_at", table.c.archived_at)  # newest first; the change feed
    for key in ("id", "name", "cluster_id", "server_id", "instance_id"):
        if key in table.c:
            Index(f"ix_{name}_{key}", table.c[key])
    return table


# Live table -> its archive, parents before children.
_LIVE_TABLES = tuple(
    cast(Table, model.__table__)
    for model in (Cluster, Server, Instance, InstanceGuest, ClusterServer, InstanceServer)
)
ARCHIVED_TABLES: dict[Table, Table] = {live: _archive_of(live) for live in _LIVE_TABLES}


def archive_table(live: Table) -> Table:
    return ARCHIVED_TABLES[live]
