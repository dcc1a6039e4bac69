"""Instances: the hosted tenants, where they run, and their three states."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from dfe.db.base import Base, EncryptedString, JsonDoc, UTCDateTime, utcnow
from dfe.enums import GuestLocation, OperationalState, ProvisionState, ReadyState
from dfe.models.common import (
    IdMixin,
    OwnedMixin,
    TimestampMixin,
    dependent_fk,
    enum_column,
    restrict_fk,
)
from dfe.models.identity import User
from dfe.models.infrastructure import Cluster, Server


class Instance(IdMixin, OwnedMixin, TimestampMixin, Base):
    __tablename__ = "instance_t"
    __table_args__ = (  # type: ignore[assignment]
        Index("ix_instance_t_created_at", "created_at"),  # lists sorted by age stay fast
        Index("ix_instance_t_updated_at", "updated_at"),  # the web tier's change feed
        {"sqlite_autoincrement": True},
    )

    name: Mapped[str] = mapped_column(String(63), unique=True, nullable=False)
    user_id: Mapped[int] = restrict_fk("user_t.id", nullable=False, index=True)
    cluster_id: Mapped[int] = restrict_fk("cluster_t.id", nullable=False, index=True)
    db_server_id: Mapped[int] = restrict_fk("server_t.id", nullable=False, index=True)
    web_server_id: Mapped[int] = restrict_fk("server_t.id", nullable=False, index=True)
    app_server_id: Mapped[int] = restrict_fk("server_t.id", nullable=False, index=True)
    db_host: Mapped[str | None] = mapped_column(String(253))
    db_port: Mapped[int | None] = mapped_column(Integer)
    db_name: Mapped[str | None] = mapped_column(String(64))
    db_user: Mapped[str | None] = mapped_column(String(64))
    db_password: Mapped[str | None] = mapped_column(EncryptedString)
    # The key clients of the instance runtime present (web tier); shown to the owner.
    api_key: Mapped[str | None] = mapped_column(EncryptedString)
    storage_key: Mapped[str] = mapped_column(String(64), nullable=False)
    provision_state: Mapped[ProvisionState] = enum_column(
        ProvisionState, default=ProvisionState.CREATED, nullable=False, index=True
    )
    ready_state: Mapped[ReadyState] = enum_column(
        ReadyState, default=ReadyState.ADMIN_REQUIRED, nullable=False
    )
    operational_state: Mapped[OperationalState] = enum_column(
        OperationalState, default=OperationalState.NOT_ACTIVATED, nullable=False
    )
    state_changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    data: Mapped[dict[str, Any]] = mapped_column(JsonDoc, default=dict, nullable=False)

    user: Mapped[User] = relationship(lazy="joined")
    cluster: Mapped[Cluster] = relationship(lazy="joined")
    db_server: Mapped[Server] = relationship(foreign_keys=[db_server_id])
    web_server: Mapped[Server] = relationship(foreign_keys=[web_server_id])
    app_server: Mapped[Server] = relationship(foreign_keys=[app_server_id])
    guests: Mapped[list[InstanceGuest]] = relationship(
        back_populates="instance", passive_deletes="all"
    )


class InstanceGuest(IdMixin, TimestampMixin, Base):
    """Where an instance is hosted and the host name it answers to."""

    __tablename__ = "instance_guest_t"

    instance_id: Mapped[int] = dependent_fk("instance_t.id", index=True)
    location: Mapped[GuestLocation] = enum_column(
        GuestLocation, default=GuestLocation.DFE_CLUSTER, nullable=False
    )
    public_host: Mapped[str | None] = mapped_column(String(253))
    private_host: Mapped[str | None] = mapped_column(String(253))
    state: Mapped[str | None] = mapped_column(String(64))

    instance: Mapped[Instance] = relationship(back_populates="guests")


class InstanceServer(TimestampMixin, Base):
    """A server an instance runs on (kept for metrics and load balancing)."""

    __tablename__ = "instance_server_asgn_t"

    instance_id: Mapped[int] = dependent_fk("instance_t.id", primary_key=True)
    server_id: Mapped[int] = dependent_fk("server_t.id", primary_key=True, index=True)
