"""App keys: creation (secret shown once), revocation, rotation without downtime."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from dfe.db.base import Base, utcnow
from dfe.models import AppKey, Cluster, Instance, Mount, OwnerType, Server, ServiceUser, User
from dfe.models.keys import OWNER_COLUMNS
from dfe.schemas import KeyPublic, KeyWithSecret
from dfe.services import audit
from dfe.services.base import get_by_ref, insert_row, new_row
from dfe.services.errors import Conflict, InvalidInput

SECRET_BYTES = 32  # 256 bits from the OS CSPRNG
CLIENT_ID_PREFIX = "dfe_"


def new_client_id() -> str:
    return CLIENT_ID_PREFIX + secrets.token_hex(12)


def new_client_secret() -> str:
    return secrets.token_urlsafe(SECRET_BYTES)


_OWNER_MODELS: dict[OwnerType, tuple[type[Base], str, str]] = {
    OwnerType.USER: (User, "email", "user"),
    OwnerType.SERVICE_USER: (ServiceUser, "email", "service user"),
    OwnerType.INSTANCE: (Instance, "name", "instance"),
    OwnerType.SERVER: (Server, "name", "server"),
    OwnerType.MOUNT: (Mount, "name", "mount"),
    OwnerType.CLUSTER: (Cluster, "name", "cluster"),
}


def resolve_owner(session: Session, owner_type: OwnerType, ref: str | None) -> int | None:
    """The id of the owner named by `ref` (name, email or id); None for system keys."""
    if owner_type not in _OWNER_MODELS:
        if ref:
            raise InvalidInput(f"a {owner_type.value} key belongs to the system and takes no owner")
        return None
    model, key, kind = _OWNER_MODELS[owner_type]
    if not ref:
        raise InvalidInput(f"a {owner_type.value} key needs an owner: name the {kind}")
    owner_id: int = get_by_ref(session, model, ref, kind, key=key).id  # type: ignore[attr-defined]
    return owner_id


# A statement, not the ORM's flush: every launch makes an instance's key, while it holds
# the database's write lock.
_INSERT_KEY = insert(AppKey)


def create_key(
    session: Session,
    owner_type: OwnerType,
    owner_id: int | None = None,
    *,
    label: str = "",
    expires_at: datetime | None = None,
    announce: bool = True,
) -> KeyWithSecret:
    """Create a key for an owner; the returned secret is never shown again.

    `announce`: touch the owning instance so the web tier's change feed names it
    (needless when the instance was inserted in this transaction)."""
    if owner_type in OWNER_COLUMNS and owner_id is None:
        raise InvalidInput(f"a {owner_type.value} key needs an owner")
    if owner_type not in OWNER_COLUMNS and owner_id is not None:
        raise InvalidInput(f"a {owner_type.value} key belongs to the system and takes no owner")
    if expires_at is not None and expires_at <= utcnow():
        raise InvalidInput("expiry must be in the future")
    secret = new_client_secret()
    owner_column = {OWNER_COLUMNS[owner_type][0]: owner_id} if owner_type in OWNER_COLUMNS else {}
    row = new_row(
        AppKey,
        client_id=new_client_id(),
        client_secret=secret,
        owner_type=owner_type,
        label=label,
        expires_at=expires_at,
        **owner_column,
    )
    key_id = insert_row(session, _INSERT_KEY, row)
    public = KeyPublic.model_validate({**row, "id": key_id, "owner_id": owner_id}).model_dump()
    audit.record(session, "key.create", "key", key_id, row["client_id"], after=public)
    if announce and owner_type is OwnerType.INSTANCE:
        _touch_instance(session, owner_id)
    return KeyWithSecret(**public, client_secret=secret)


def _public(key: AppKey) -> dict[str, object]:
    return KeyPublic.model_validate(key).model_dump()


def public(key: AppKey) -> KeyPublic:
    return KeyPublic.model_validate(key)


def get_key(session: Session, client_id: str) -> AppKey:
    return get_by_ref(session, AppKey, client_id, "key", key="client_id")


def list_keys(
    session: Session, owner_type: OwnerType | None = None, owner_id: int | None = None
) -> list[AppKey]:
    query = select(AppKey).order_by(AppKey.id)
    if owner_type is not None:
        query = query.where(AppKey.owner_type == owner_type)
        if owner_id is not None and owner_type in OWNER_COLUMNS:
            query = query.where(getattr(AppKey, OWNER_COLUMNS[owner_type][0]) == owner_id)
    return list(session.scalars(query))


def revoke_key(session: Session, client_id: str) -> None:
    """Destroy a key at once (keys are never archived)."""
    key = get_key(session, client_id)
    audit.record(session, "key.revoke", "key", key.id, client_id, before=_public(key))
    _touch_instance(session, key.instance_id)
    session.delete(key)
    session.flush()


def rotate_key(session: Session, client_id: str, grace: timedelta) -> KeyWithSecret:
    """A new key for the same owner; the old one lives until the new one is first used,
    or until the grace period ends, whichever comes first."""
    old = get_key(session, client_id)
    if old.replaced_by_id is not None:
        raise Conflict(f"key '{client_id}' has already been rotated")
    new = create_key(session, old.owner_type, old.owner_id, label=old.label)
    deadline = utcnow() + grace
    old.replaced_by_id = new.id
    old.expires_at = min(old.expires_at, deadline) if old.expires_at else deadline
    session.flush()  # the old key's successor and expiry (create_key touched its instance)
    audit.record(
        session, "key.rotate", "key", old.id, old.client_id, after={"replaced_by": new.client_id}
    )
    return new


def _touch_instance(session: Session, instance_id: int | None) -> None:
    """An instance's keys are part of its web-tier config: let the change feed name it."""
    if instance_id is not None:
        session.execute(
            update(Instance).where(Instance.id == instance_id).values(updated_at=utcnow()),
            execution_options={"synchronize_session": False},
        )


LAST_USED_RESOLUTION = timedelta(seconds=60)


def use_is_due(last_used_at: datetime | None) -> bool:
    """Whether a key's use should be written down (at most once a minute, to keep
    writes off the hot path)."""
    return last_used_at is None or utcnow() - last_used_at >= LAST_USED_RESOLUTION


def record_use(session: Session, key: AppKey) -> bool:
    """Note a key's use; the first use of a rotated-in key revokes its predecessor.
    True when something was written."""
    now = utcnow()
    if not use_is_due(key.last_used_at):
        return False
    if key.last_used_at is None:
        for predecessor in session.scalars(select(AppKey).where(AppKey.replaced_by_id == key.id)):
            audit.record(
                session,
                "key.revoke",
                "key",
                predecessor.id,
                predecessor.client_id,
                after={"reason": f"successor {key.client_id} was used"},
            )
            session.delete(predecessor)
    key.last_used_at = now
    return True


def purge_expired(session: Session) -> list[str]:
    """Destroy keys past their expiry (rotated-out ones among them); their client ids."""
    purged = []
    for key in session.scalars(select(AppKey).where(AppKey.expires_at <= utcnow())):
        audit.record(session, "key.purge", "key", key.id, key.client_id, before=_public(key))
        purged.append(key.client_id)
        session.delete(key)
    session.flush()
    return purged


def expired(expires_at: datetime | None) -> bool:
    """Whether a key with this expiry may no longer be used."""
    return expires_at is not None and expires_at <= utcnow()
