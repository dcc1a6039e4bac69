"""Per-user instance limits: how many instances a user may own at once.

`user_t.instance_limit`: None follows DFE_DEFAULT_INSTANCE_LIMIT, 0 means no
limit, n means at most n. Every live instance counts, failed ones included,
until it is deleted. The check locks the user's row first, so parallel launches
by one user are serialized and never exceed the limit on any engine.
"""

from __future__ import annotations

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from dfe.config import get_settings
from dfe.db.session import execute_prebuilt
from dfe.models import Instance, User
from dfe.services.errors import DfeError


class InstanceLimitReached(DfeError):
    status = 409
    code = "instance_limit_reached"


def effective_limit(user_limit: int | None, default_limit: int) -> int | None:
    """The number of instances allowed, or None for no limit."""
    limit = default_limit if user_limit is None else user_limit
    return limit or None


# A no-op UPDATE takes the row lock (SQLite: the write lock) before anything is read.
_LOCK_USER = (
    update(User)
    .where(User.id == bindparam("p_user"))
    .values(instance_limit=User.instance_limit)
    .execution_options(synchronize_session=False)
)
_USER_LIMIT = select(User.instance_limit).where(User.id == bindparam("p_user"))


def check_instance_limit(session: Session, user: User) -> None:
    """Refuse a new instance for `user` at their limit, holding their row's lock until
    the launching transaction ends. Call it before any other lock of the launch."""
    execute_prebuilt(session, _LOCK_USER, {"p_user": user.id})
    user_limit = execute_prebuilt(session, _USER_LIMIT, {"p_user": user.id}).scalar()
    limit = effective_limit(user_limit, get_settings().default_instance_limit)
    if limit is None:
        return
    # A locking read: MySQL/MariaDB's plain SELECT would see the transaction's older snapshot.
    owned = len(
        session.scalars(
            select(Instance.id).where(Instance.user_id == user.id).with_for_update(read=True)
        ).all()
    )
    if owned >= limit:
        raise InstanceLimitReached(
            f"the instance limit of {user.email} is reached ({owned} of {limit}): "
            "delete an instance to launch another"
        )
