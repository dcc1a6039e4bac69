"""Shared service plumbing: look-ups by name or id, snapshots for the audit log."""

from __future__ import annotations

from functools import cache
from typing import Any, TypeVar

from sqlalchemy import Select, bindparam, inspect, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dfe.db.base import Base
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


def flush_or_conflict(session: Session, message: str) -> None:
    """Flush; a unique or foreign-key violation becomes a Conflict with `message`.

    The transaction is lost with the violation (no SAVEPOINT: `begin_nested` flushes
    what is pending before it sets one, so it never guarded this flush); a Conflict
    ends the request that raised it."""
    try:
        session.flush()
    except IntegrityError:
        raise Conflict(message) from None
