"""Where instances live: clusters, their servers, and storage mounts."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Boolean, Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from dfe.db.base import Base, EncryptedJSON, JsonDoc
from dfe.enums import MountType, ServerType
from dfe.models.common import (
    NAME,
    IdMixin,
    OwnedMixin,
    TimestampMixin,
    dependent_fk,
    enum_column,
    restrict_fk,
)


class Mount(IdMixin, TimestampMixin, Base):
    __tablename__ = "mount_t"

    name: Mapped[str] = mapped_column(NAME, unique=True, nullable=False)
    mount_type: Mapped[MountType] = enum_column(MountType, default=MountType.LOCAL, nullable=False)
    root_path: Mapped[str] = mapped_column(String(1024), nullable=False)
    config: Mapped[dict[str, Any]] = mapped_column(JsonDoc, default=dict, nullable=False)


class Server(IdMixin, TimestampMixin, Base):
    __tablename__ = "server_t"

    name: Mapped[str] = mapped_column(NAME, unique=True, nullable=False)
    server_type: Mapped[ServerType] = enum_column(ServerType, nullable=False, index=True)
    host: Mapped[str] = mapped_column(String(253), nullable=False)
    mount_id: Mapped[int | None] = restrict_fk("mount_t.id", index=True)
    # A db server's driver, port and admin credentials: encrypted as a whole.
    config: Mapped[dict[str, Any]] = mapped_column(EncryptedJSON, default=dict, nullable=False)
    max_instances: Mapped[int | None] = mapped_column(Integer)
    # Live instances placed here; kept by triggers on instance_t (see dfe.db.archive_triggers).
    instance_count: Mapped[int] = mapped_column(
        Integer, default=0, server_default=text("0"), nullable=False
    )
    is_enabled: Mapped[bool] = mapped_column(Boolean, default=True, nullable=False)

    mount: Mapped[Mount | None] = relationship(lazy="joined")


class Cluster(IdMixin, OwnedMixin, TimestampMixin, Base):
    __tablename__ = "cluster_t"

    name: Mapped[str] = mapped_column(NAME, unique=True, nullable=False)
    subdomain: Mapped[str] = mapped_column(String(253), nullable=False)
    max_instances: Mapped[int | None] = mapped_column(Integer)
    instance_count: Mapped[int] = mapped_column(
        Integer, default=0, server_default=text("0"), nullable=False
    )


class ClusterServer(TimestampMixin, Base):
    """A server's membership of a cluster."""

    __tablename__ = "cluster_server_asgn_t"

    cluster_id: Mapped[int] = dependent_fk("cluster_t.id", primary_key=True)
    server_id: Mapped[int] = dependent_fk("server_t.id", primary_key=True, index=True)
