"""The audit log: who changed what, with secrets redacted."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, insert, select
from sqlalchemy.orm import Session

from dfe.db.base import utcnow
from dfe.db.session import ACTOR
from dfe.models import AuditEntry
from dfe.schemas import mask_secrets

# A statement, run at once without flushing the session: an entry needs nothing that
# is pending (its target's id is known), and a launch writes two while it holds the
# database's write lock (through the ORM's flush they took four times as long).
_INSERT = insert(AuditEntry)


def record(
    session: Session,
    action: str,
    target_type: str,
    target_id: int | None,
    target_name: str | None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    """Add an audit entry to the session's transaction (committed with the change)."""
    session.connection().execute(
        _INSERT,
        {
            "at": utcnow(),
            "actor": session.info.get(ACTOR) or "unknown",
            "action": action,
            "target_type": target_type,
            "target_id": target_id,
            "target_name": target_name,
            "before": _jsonable(mask_secrets(before)) if before is not None else None,
            "after": _jsonable(mask_secrets(after)) if after is not None else None,
        },
    )


def _jsonable(document: dict[str, Any]) -> dict[str, Any]:
    return {key: _plain(value) for key, value in document.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return _jsonable(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def entry_query(
    *,
    actor: str | None = None,
    target: str | None = None,
    action: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Select[Any]:
    """Audit entries by actor (containing), target name, action and time (a time
    without a zone is taken as UTC, the zone of every stored time)."""
    query = select(AuditEntry)
    if actor:
        query = query.where(AuditEntry.actor.contains(actor))
    if target:
        query = query.where(AuditEntry.target_name == target)
    if action:
        query = query.where(AuditEntry.action == action)
    if since:
        query = query.where(AuditEntry.at >= _as_utc(since))
    if until:
        query = query.where(AuditEntry.at < _as_utc(until))
    return query


def _as_utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def entries(
    session: Session,
    *,
    actor: str | None = None,
    target: str | None = None,
    action: str | None = None,
    limit: int = 100,
) -> list[AuditEntry]:
    """The newest entries that match, newest first."""
    query = entry_query(actor=actor, target=target, action=action)
    return list(session.scalars(query.order_by(AuditEntry.id.desc()).limit(limit)))
