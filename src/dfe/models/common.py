"""Column helpers shared by every aggregate."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import Enum, ForeignKey, String
from sqlalchemy.orm import Mapped, declared_attr, mapped_column

from dfe.db.base import Id, UTCDateTime, utcnow


def enum_column(enum_type: type[enum.Enum], **kwargs: Any) -> Any:
    """A portable enum: a VARCHAR holding the member's value, no native type."""
    return mapped_column(
        Enum(
            enum_type,
            native_enum=False,
            length=32,
            values_callable=lambda members: [m.value for m in members],
            validate_strings=True,
        ),
        **kwargs,
    )


def restrict_fk(target: str, **kwargs: Any) -> Any:
    """A foreign key that refuses to let its parent go while it exists."""
    return mapped_column(Id, ForeignKey(target, ondelete="RESTRICT"), **kwargs)


# Column info flag: deleting the referenced row deletes (and archives) this row first.
ARCHIVED_WITH_PARENT = "archived_with_parent"


def dependent_fk(target: str, **kwargs: Any) -> Any:
    """A key to the parent this row is archived with (a guest row, an assignment)."""
    return mapped_column(
        Id,
        ForeignKey(target, ondelete="RESTRICT"),
        nullable=False,
        info={ARCHIVED_WITH_PARENT: True},
        **kwargs,
    )


class IdMixin:
    """A 64-bit surrogate key; on SQLite AUTOINCREMENT, so an archived id never comes back."""

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)

    @declared_attr.directive
    def __table_args__(cls) -> dict[str, Any]:
        return {"sqlite_autoincrement": True}


class TimestampMixin:
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, onupdate=utcnow, nullable=False
    )


class OwnedMixin:
    """An optional owner: the system when `owner_type` is 'system', else (type, id)."""

    owner_type: Mapped[str] = mapped_column(String(32), default="system", nullable=False)
    owner_id: Mapped[int | None] = mapped_column(Id, nullable=True)


NAME = String(64)
