"""Shared service plumbing: look-ups by name or id, snapshots for the audit log."""

from __future__ import annotations

from functools import cache
from typing import Any, TypeVar, cast

from sqlalchemy import Insert, Select, Table, bindparam, inspect, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, make_transient_to_detached

from dfe.db.base import Base
from dfe.db.session import execute_prebuilt
from dfe.services.errors import Conflict, NotFound

ModelT = TypeVar("ModelT", bound=Base)


def get_by_ref(
    session: Session, model: type[ModelT], ref: str | int, kind: str, key: str = "name"
) -> ModelT:
    """The row whose `key` (name, email) is `ref`, else whose id is; NotFound otherwise."""
    if isinstance(ref, str):
        by_key: Select[ModelT] = _by_key(model, key)
        found = session.scalars(by_key, {"p_ref": ref.strip().lower()}).first()
        if found is not None:
            return found
    if isinstance(ref, int) or is_id(ref):
        found = session.get(model, int(ref))
        if found is not None:
            return found
    raise NotFound(f"{kind} '{ref}' does not exist")


@cache
def _by_key(model: type[ModelT], key: str) -> Select[ModelT]:
    """The look-up by `key`, built once per model and key (building and keying a
    statement costs as much as running it)."""
    return select(model).where(getattr(model, key) == bindparam("p_ref"))


MAX_ID = 2**63 - 1


def is_id(text: str) -> bool:
    """Whether `text` can be a row id (digits that fit a 64-bit key)."""
    return text.isdigit() and int(text) <= MAX_ID


def snapshot(row: Base) -> dict[str, Any]:
    """Column values of a row, for the audit log (secrets are masked by the audit service)."""
    return {attr.key: getattr(row, attr.key) for attr in inspect(row).mapper.column_attrs}


def new_row(model: type[Base], **values: Any) -> dict[str, Any]:
    """Every column of a `model` row to INSERT (but its generated key): `values`, else
    the column's default, else None; what the ORM would have written."""
    table = cast(Table, model.__table__)
    unknown = values.keys() - table.columns.keys()
    if unknown:
        raise ValueError(f"{table.name} has no column {', '.join(sorted(unknown))}")
    row = {}
    for column in table.columns:
        if column.key in values:
            row[column.key] = values[column.key]
        elif column.primary_key and column.autoincrement is not False:
            continue
        elif column.default is not None and column.default.is_scalar:
            row[column.key] = column.default.arg  # type: ignore[attr-defined]
        elif column.default is not None and column.default.is_callable:
            row[column.key] = column.default.arg(None)  # type: ignore[attr-defined]
        else:
            row[column.key] = None
    return row


def insert_row(session: Session, statement: Insert, row: dict[str, Any]) -> int:
    """Run a prebuilt INSERT of one row (`new_row`); the new row's id."""
    key = execute_prebuilt(session, statement, row).inserted_primary_key
    assert key is not None  # an INSERT of one row
    return int(key[0])


def add_inserted(session: Session, row: ModelT) -> ModelT:
    """Put an object whose row a statement has just INSERTed into the session as if it
    had been loaded: nothing to flush, its relationships load as usual."""
    make_transient_to_detached(row)
    session.add(row)
    return row


def flush_or_conflict(session: Session, message: str) -> None:
    """Flush; a unique or foreign-key violation becomes a Conflict with `message`.

    The transaction is lost with the violation (no SAVEPOINT: `begin_nested` flushes
    what is pending before it sets one, so it never guarded this flush); a Conflict
    ends the request that raised it."""
    try:
        session.flush()
    except IntegrityError:
        raise Conflict(message) from None
