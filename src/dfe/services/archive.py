"""Browsing the archive and restoring archived clusters, servers and instances.

A restore moves the most recent archived row of a name back into its live
table, together with the rows archived with it in the same batch (an
instance's guest rows and server assignments, a cluster's or server's
memberships), using the same `INSERT ... SELECT` an operator could type.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row, Table, delete, exists, func, insert, select
from sqlalchemy.orm import Session

from dfe.db.archive_triggers import archived_children
from dfe.models import ARCHIVED_TABLES, Cluster, Instance, OwnerType, Server
from dfe.schemas import ArchivedPublic, mask_secrets
from dfe.services import audit
from dfe.services.base import is_id
from dfe.services.errors import Conflict, InvalidInput, NotFound
from dfe.services.keys import create_key

KINDS: dict[str, Table] = {
    "cluster": Cluster.__table__,  # type: ignore[dict-item]
    "server": Server.__table__,  # type: ignore[dict-item]
    "instance": Instance.__table__,  # type: ignore[dict-item]
}
_KIND_OF_TABLE = {table.name: kind for kind, table in KINDS.items()}


def _tables(kind: str) -> tuple[Table, Table]:
    if kind not in KINDS:
        raise InvalidInput(f"unknown kind '{kind}': use one of {', '.join(KINDS)}")
    live = KINDS[kind]
    return live, ARCHIVED_TABLES[live]


def list_archived(
    session: Session, kind: str, *, name: str | None = None, limit: int = 100, offset: int = 0
) -> tuple[list[ArchivedPublic], int]:
    """Archived rows of a kind, newest first, and how many there are in all."""
    _, archive = _tables(kind)
    query = select(archive)
    if name:
        query = query.where(archive.c.name.contains(name.lower()))
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.execute(query.order_by(archive.c.archive_id.desc()).limit(limit).offset(offset))
    return [_public(kind, row) for row in rows], total


def show_archived(session: Session, kind: str, ref: str) -> ArchivedPublic:
    return _public(kind, _latest(session, kind, ref))


def _latest(session: Session, kind: str, ref: str) -> Row[Any]:
    """The most recent archived row of a name, else (given digits) of an id."""
    _, archive = _tables(kind)
    matches = [archive.c.name == ref.strip().lower()]
    if is_id(ref):
        matches.append(archive.c.id == int(ref))
    for match in matches:
        row = session.execute(
            select(archive).where(match).order_by(archive.c.archive_id.desc()).limit(1)
        ).first()
        if row is not None:
            return row
    raise NotFound(f"no archived {kind} '{ref}'")


def _public(kind: str, row: Row[Any]) -> ArchivedPublic:
    values = dict(row._mapping)
    return ArchivedPublic(
        kind=kind,
        archive_id=values["archive_id"],
        id=values["id"],
        name=values["name"],
        archived_at=values["archived_at"],
        archived_by=values["archived_by"],
        archive_batch=values["archive_batch"],
        row=mask_secrets({k: v for k, v in values.items() if not k.startswith("archive")}),
    )


def restore(session: Session, kind: str, ref: str) -> ArchivedPublic:
    """Bring back the most recent archived batch of a cluster, server or instance."""
    live, archive = _tables(kind)
    row = _latest(session, kind, ref)
    taken = session.scalar(select(live.c.id).where(live.c.name == row.name))
    if taken is not None:
        raise Conflict(
            f"cannot restore {kind} '{row.name}': the name is taken by a live {kind} "
            f"(id {taken}); rename or delete that one first"
        )
    if session.scalar(select(exists().where(live.c.id == row.id))):
        raise Conflict(f"cannot restore {kind} '{row.name}': id {row.id} is live already")
    _require_parents(session, kind, row.name, live, row._mapping)
    _move_back(session, live, archive, archive.c.archive_id == row.archive_id)
    for child, column in archived_children(live):
        child_archive = ARCHIVED_TABLES[child]
        in_batch = (child_archive.c.archive_batch == row.archive_batch) & (
            child_archive.c[column] == row.id
        )
        for child_row in session.execute(select(child_archive).where(in_batch)).all():
            values = child_row._mapping
            if _other_parent_archived_with(session, child, values, column, row.archive_batch):
                continue  # it comes back with that other parent, archived in the same batch
            _require_parents(session, kind, row.name, child, values, skip=column)
            _move_back(
                session, child, child_archive, child_archive.c.archive_id == values["archive_id"]
            )
    if kind == "instance":
        create_key(session, OwnerType.INSTANCE, row.id, label=f"instance {row.name}")
    audit.record(
        session,
        f"{kind}.restore",
        kind,
        row.id,
        row.name,
        after={"archive_batch": row.archive_batch},
    )
    return _public(kind, row)


def _move_back(session: Session, live: Table, archive: Table, where: Any) -> None:
    names = [column.name for column in live.columns]
    session.execute(
        insert(live).from_select(names, select(*(archive.c[n] for n in names)).where(where))
    )
    session.execute(delete(archive).where(where))


def _other_parent_archived_with(
    session: Session, table: Table, values: Any, skip: str, batch: str
) -> bool:
    """Whether a row's other parent is gone but archived in `batch` (a cluster and
    its server deleted together leave one membership between two archived rows)."""
    for fk in table.foreign_keys:
        parent = fk.column.table
        if fk.parent.name == skip or parent not in ARCHIVED_TABLES:
            continue
        value = values[fk.parent.name]
        if session.scalar(select(exists().where(fk.column == value))):
            continue
        parent_archive = ARCHIVED_TABLES[parent]
        if session.scalar(
            select(
                exists().where(
                    parent_archive.c.id == value, parent_archive.c.archive_batch == batch
                )
            )
        ):
            return True
    return False


def _require_parents(
    session: Session,
    kind: str,
    name: str,
    table: Table,
    values: Any,
    skip: str | None = None,
) -> None:
    """Refuse the restore, naming the parent, when a row this one refers to is gone."""
    for fk in table.foreign_keys:
        column, parent = fk.parent.name, fk.column.table
        value = values[column]
        if column == skip or value is None:
            continue
        if session.scalar(select(exists().where(fk.column == value))):
            continue
        what = parent.name.removesuffix("_t").replace("_", " ")
        hint = f"{what} id {value} was deleted"
        parent_kind = _KIND_OF_TABLE.get(parent.name)
        if parent_kind is not None:
            archived = session.scalar(
                select(ARCHIVED_TABLES[parent].c.name)
                .where(ARCHIVED_TABLES[parent].c.id == value)
                .order_by(ARCHIVED_TABLES[parent].c.archive_id.desc())
                .limit(1)
            )
            if archived is not None:
                hint = (
                    f"{what} '{archived}' is archived; restore it first "
                    f"(dfe restore {parent_kind} {archived})"
                )
        raise Conflict(f"cannot restore {kind} '{name}': {hint}")


def restore_sql(kind: str) -> str:
    """The plain SQL that restores an archived row and what was archived with it.

    Placeholders: :archive_id, :id and :archive_batch of the archived row.
    """
    live, archive = _tables(kind)
    statements = [_insert_select(live, archive, "archive_id = :archive_id")]
    statements += [
        _insert_select(
            child, ARCHIVED_TABLES[child], f"archive_batch = :archive_batch AND {column} = :id"
        )
        for child, column in archived_children(live)
    ]
    return "\n".join(statements)


def _insert_select(live: Table, archive: Table, where: str) -> str:
    names = ", ".join(column.name for column in live.columns)
    return (
        f"INSERT INTO {live.name} ({names})\n  SELECT {names} FROM {archive.name} WHERE {where};\n"
        f"DELETE FROM {archive.name} WHERE {where};"
    )
