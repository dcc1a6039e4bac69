"""Snapshots: exported (or uploaded) instance archives kept on a mount until they expire."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from dfe.db.base import Base, Id, JsonDoc, UTCDateTime
from dfe.models.common import IdMixin, TimestampMixin


class Snapshot(IdMixin, TimestampMixin, Base):
    """One archive file. `instance_id` is not a foreign key: a snapshot outlives its
    instance; `storage_path` is relative to the mount's root (the owner's private area).
    """

    __tablename__ = "snapshot_t"

    user_id: Mapped[int | None] = mapped_column(
        Id, ForeignKey("user_t.id", ondelete="SET NULL"), index=True
    )
    instance_id: Mapped[int | None] = mapped_column(Id, index=True)
    instance_name: Mapped[str] = mapped_column(String(63), nullable=False, index=True)
    origin: Mapped[str] = mapped_column(String(16), nullable=False)  # "export" | "upload"
    mount_id: Mapped[int] = mapped_column(Id, nullable=False)
    storage_path: Mapped[str] = mapped_column(String(512), nullable=False)
    size: Mapped[int] = mapped_column(BigInteger, default=0, nullable=False)
    sha256: Mapped[str | None] = mapped_column(String(64))
    format_version: Mapped[int | None] = mapped_column(Integer)
    source_engine: Mapped[str | None] = mapped_column(String(16))
    job_id: Mapped[int | None] = mapped_column(Id)
    summary: Mapped[dict[str, Any]] = mapped_column(JsonDoc, default=dict, nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, index=True)
