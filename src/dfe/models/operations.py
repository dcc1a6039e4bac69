"""Operational records: the audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from dfe.db.base import Base, Id, JsonDoc, UTCDateTime, utcnow
from dfe.models.common import IdMixin


class AuditEntry(IdMixin, Base):
    """Who changed what: one row per change, with secrets redacted from before/after."""

    __tablename__ = "audit_t"

    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False, index=True)
    actor: Mapped[str] = mapped_column(String(255), nullable=False, index=True)
    action: Mapped[str] = mapped_column(String(64), nullable=False)
    target_type: Mapped[str] = mapped_column(String(32), nullable=False)
    target_id: Mapped[int | None] = mapped_column(Id)
    target_name: Mapped[str | None] = mapped_column(String(255), index=True)
    before: Mapped[dict[str, Any] | None] = mapped_column(JsonDoc)
    after: Mapped[dict[str, Any] | None] = mapped_column(JsonDoc)
