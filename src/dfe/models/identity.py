"""People: dashboard users (who own instances) and console service users (operators)."""

from __future__ import annotations

import secrets
from datetime import datetime

from sqlalchemy import Boolean, String
from sqlalchemy.orm import Mapped, mapped_column

from dfe.db.base import Base, UTCDateTime
from dfe.enums import ServiceRole
from dfe.models.common import IdMixin, OwnedMixin, TimestampMixin, enum_column


class PersonMixin:
    email: Mapped[str] = mapped_column(String(192), unique=True, nullable=False)
    password_hash: Mapped[str] = mapped_column(String(255), nullable=False)
    first_name: Mapped[str] = mapped_column(String(64), default="", nullable=False)
    last_name: Mapped[str] = mapped_column(String(64), default="", nullable=False)
    nickname: Mapped[str | None] = mapped_column(String(128))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, nullable=False)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_login_ip: Mapped[str | None] = mapped_column(String(64))


class User(IdMixin, PersonMixin, OwnedMixin, TimestampMixin, Base):
    __tablename__ = "user_t"

    is_admin: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    storage_key: Mapped[str] = mapped_column(
        String(64), unique=True, nullable=False, default=lambda: secrets.token_hex(16)
    )


class ServiceUser(IdMixin, PersonMixin, TimestampMixin, Base):
    __tablename__ = "service_user_t"

    role: Mapped[ServiceRole] = enum_column(
        ServiceRole, default=ServiceRole.ADMINISTRATOR, nullable=False
    )
