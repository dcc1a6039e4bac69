"""App keys: the credentials components sign their requests with.

A key's owner is one of six entities or the system itself. Each owner kind has
its own foreign-key column with ON DELETE CASCADE, so a key dies with its owner
in the same transaction on every engine and by every path, plain SQL included;
no trigger is involved, and there is deliberately no archive of keys.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from dfe.db.base import Base, EncryptedString, Id, UTCDateTime, utcnow
from dfe.enums import OwnerType
from dfe.models.common import IdMixin, enum_column

# Owner kind -> (column on app_key_t, table it references). Console and dashboard
# keys belong to the system and reference no row.
OWNER_COLUMNS: dict[OwnerType, tuple[str, str]] = {
    OwnerType.USER: ("user_id", "user_t"),
    OwnerType.SERVICE_USER: ("service_user_id", "service_user_t"),
    OwnerType.INSTANCE: ("instance_id", "instance_t"),
    OwnerType.SERVER: ("server_id", "server_t"),
    OwnerType.MOUNT: ("mount_id", "mount_t"),
    OwnerType.CLUSTER: ("cluster_id", "cluster_t"),
}


def _owner_fk(table: str) -> Mapped[int | None]:
    return mapped_column(Id, ForeignKey(f"{table}.id", ondelete="CASCADE"), index=True)


_AT_MOST_ONE_OWNER = " + ".join(
    f"(CASE WHEN {column} IS NULL THEN 0 ELSE 1 END)" for column, _ in OWNER_COLUMNS.values()
)


class AppKey(IdMixin, Base):
    __tablename__ = "app_key_t"
    __table_args__ = (  # type: ignore[assignment]
        CheckConstraint(f"{_AT_MOST_ONE_OWNER} <= 1", name="one_owner"),
        {"sqlite_autoincrement": True},
    )

    client_id: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    client_secret: Mapped[str] = mapped_column(EncryptedString, nullable=False)
    owner_type: Mapped[OwnerType] = enum_column(OwnerType, nullable=False, index=True)
    user_id: Mapped[int | None] = _owner_fk("user_t")
    service_user_id: Mapped[int | None] = _owner_fk("service_user_t")
    instance_id: Mapped[int | None] = _owner_fk("instance_t")
    server_id: Mapped[int | None] = _owner_fk("server_t")
    mount_id: Mapped[int | None] = _owner_fk("mount_t")
    cluster_id: Mapped[int | None] = _owner_fk("cluster_t")
    label: Mapped[str] = mapped_column(String(128), default="", nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Set on a rotated-out key: it is revoked once its successor is first used.
    replaced_by_id: Mapped[int | None] = mapped_column(
        Id, ForeignKey("app_key_t.id", ondelete="SET NULL")
    )

    @property
    def owner_id(self) -> int | None:
        if self.owner_type in OWNER_COLUMNS:
            value: int | None = getattr(self, OWNER_COLUMNS[self.owner_type][0])
            return value
        return None
