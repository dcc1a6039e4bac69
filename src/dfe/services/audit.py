"""The audit log: who changed what, with secrets redacted."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dfe.db.session import ACTOR
from dfe.models import AuditEntry
from dfe.schemas import mask_secrets


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
    session.add(
        AuditEntry(
            actor=session.info.get(ACTOR) or "unknown",
            action=action,
            target_type=target_type,
            target_id=target_id,
            target_name=target_name,
            before=_jsonable(mask_secrets(before)) if before is not None else None,
            after=_jsonable(mask_secrets(after)) if after is not None else None,
        )
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


def entries(
    session: Session,
    *,
    actor: str | None = None,
    target: str | None = None,
    action: str | None = None,
    limit: int = 100,
) -> list[AuditEntry]:
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if actor:
        query = query.where(AuditEntry.actor.contains(actor))
    if target:
        query = query.where(AuditEntry.target_name == target)
    if action:
        query = query.where(AuditEntry.action == action)
    return list(session.scalars(query))
