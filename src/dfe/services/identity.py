"""Dashboard users and console service users; each gets an app key when created."""

from __future__ import annotations

from typing import TypeVar

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dfe.auth.passwords import hash_password
from dfe.models import Instance, OwnerType, ServiceUser, User
from dfe.schemas import ServiceUserCreate, ServiceUserUpdate, UserCreate, UserUpdate
from dfe.services import audit
from dfe.services.base import flush_or_conflict, get_by_ref, snapshot
from dfe.services.errors import Conflict
from dfe.services.keys import create_key

PersonT = TypeVar("PersonT", User, ServiceUser)


def get_user(session: Session, ref: str | int) -> User:
    return get_by_ref(session, User, ref, "user", key="email")


def get_service_user(session: Session, ref: str | int) -> ServiceUser:
    return get_by_ref(session, ServiceUser, ref, "service user", key="email")


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.email)))


def list_service_users(session: Session) -> list[ServiceUser]:
    return list(session.scalars(select(ServiceUser).order_by(ServiceUser.email)))


def create_user(session: Session, data: UserCreate) -> User:
    return _create(session, User, data, OwnerType.USER)


def create_service_user(session: Session, data: ServiceUserCreate) -> ServiceUser:
    return _create(session, ServiceUser, data, OwnerType.SERVICE_USER)


def _create(
    session: Session,
    model: type[PersonT],
    data: UserCreate | ServiceUserCreate,
    key_owner: OwnerType,
) -> PersonT:
    kind = key_owner.value.replace("_", " ")
    if session.scalar(select(model.id).where(model.email == data.email)) is not None:
        raise Conflict(f"a {kind} with email '{data.email}' already exists")
    person = model(
        **data.model_dump(exclude={"password"}),
        password_hash=hash_password(data.password.get_secret_value()),
    )
    session.add(person)
    flush_or_conflict(session, f"a {kind} with email '{data.email}' already exists")
    create_key(session, key_owner, person.id, label=f"{kind} {person.email}")
    audit.record(
        session,
        f"{key_owner.value}.create",
        key_owner.value,
        person.id,
        person.email,
        after=snapshot(person),
    )
    return person


def update_user(session: Session, ref: str | int, data: UserUpdate) -> User:
    return _update(session, get_user(session, ref), data, "user")


def update_service_user(session: Session, ref: str | int, data: ServiceUserUpdate) -> ServiceUser:
    return _update(session, get_service_user(session, ref), data, "service_user")


def _update(
    session: Session, person: PersonT, data: UserUpdate | ServiceUserUpdate, kind: str
) -> PersonT:
    before = snapshot(person)
    changes = data.model_dump(exclude_unset=True, exclude={"password"})
    for field, value in changes.items():
        if value is not None or field in ("nickname", "instance_limit"):
            setattr(person, field, value)
    if data.password is not None:
        person.password_hash = hash_password(data.password.get_secret_value())
    flush_or_conflict(session, f"email '{data.email}' is taken")
    audit.record(session, f"{kind}.update", kind, person.id, person.email, before, snapshot(person))
    return person


def delete_user(session: Session, ref: str | int) -> None:
    """Delete a user and (by cascade) their keys; refused while they own instances."""
    user = get_user(session, ref)
    count = session.scalar(
        select(func.count()).select_from(Instance).where(Instance.user_id == user.id)
    )
    if count:
        raise Conflict(f"user '{user.email}' still owns {count} instance(s)")
    audit.record(session, "user.delete", "user", user.id, user.email, before=snapshot(user))
    session.delete(user)
    session.flush()


def delete_service_user(session: Session, ref: str | int) -> None:
    person = get_service_user(session, ref)
    audit.record(
        session,
        "service_user.delete",
        "service_user",
        person.id,
        person.email,
        before=snapshot(person),
    )
    session.delete(person)
    session.flush()
