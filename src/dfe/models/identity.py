"""People: dashboard users (who own instances) and console service users (operators)."""

from __future__ import annotations

import secrets
from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from dfe.db.base import Base, Id, UTCDateTime, utcnow
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
    # None: DFE_DEFAULT_INSTANCE_LIMIT applies; 0: no limit; n: at most n instances.
    instance_limit: Mapped[int | None] = mapped_column(Integer)


class ServiceUser(IdMixin, PersonMixin, TimestampMixin, Base):
    __tablename__ = "service_user_t"

    role: Mapped[ServiceRole] = enum_column(
        ServiceRole, default=ServiceRole.ADMINISTRATOR, nullable=False
    )


class PasswordReset(IdMixin, Base):
    """One request for a password reset mail.

    Only the SHA-256 of a reset token is kept. A request for an unknown email is
    recorded too, with no user and no token: it counts toward its address's throttle,
    so the answer and the throttle are the same whether or not the account exists.
    """

    __tablename__ = "auth_reset_t"

    user_id: Mapped[int | None] = mapped_column(
        Id, ForeignKey("user_t.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    address: Mapped[str | None] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, nullable=False, index=True
    )
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
