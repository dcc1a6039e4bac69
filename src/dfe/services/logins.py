"""Password checks for the Dashboard's logins, throttled per account and per address."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from dfe.auth import tokens
from dfe.auth.passwords import verify_password
from dfe.config import Settings
from dfe.db.base import utcnow
from dfe.models import LoginFailure, User
from dfe.services.errors import TooManyRequests, Unauthorized

BAD_CREDENTIALS = "the email or password is wrong"


@dataclass
class Login:
    user: User
    token: str
    expires_at: int


def _recent_failures(session: Session, window: timedelta, **match: str) -> int:
    column, value = next(iter(match.items()))
    return (
        session.scalar(
            select(func.count())
            .select_from(LoginFailure)
            .where(getattr(LoginFailure, column) == value, LoginFailure.at > utcnow() - window)
        )
        or 0
    )


def check_login(
    session: Session,
    settings: Settings,
    email: str,
    password: str,
    address: str | None,
    client_id: str,
) -> Login:
    """Verify a user's password and issue a user token bound to the calling key.

    Too many recent failures for the account or the address refuse the attempt
    before the password is even checked. Unknown emails cost the same as known ones.
    """
    email = email.strip().lower()
    window = timedelta(seconds=settings.login_failure_window_seconds)
    retry_after = settings.login_failure_window_seconds
    if _recent_failures(session, window, email=email) >= settings.login_max_failures_per_account:
        raise TooManyRequests(
            "too many failed logins for this account; try again later", retry_after
        )
    if address and (
        _recent_failures(session, window, address=address)
        >= settings.login_max_failures_per_address
    ):
        raise TooManyRequests(
            "too many failed logins from this address; try again later", retry_after
        )
    user = session.scalar(select(User).where(User.email == email))
    matches, new_hash = verify_password(password, user.password_hash if user else None)
    if user is None or not matches or not user.is_active:
        session.add(LoginFailure(email=email, address=address))
        session.commit()
        raise Unauthorized(BAD_CREDENTIALS)
    if new_hash:
        user.password_hash = new_hash
    session.execute(delete(LoginFailure).where(LoginFailure.email == email))
    user.last_login_at = utcnow()
    user.last_login_ip = address
    token, expires_at = tokens.issue(
        user.id, client_id, user.password_hash, settings.user_token_ttl_seconds
    )
    return Login(user=user, token=token, expires_at=expires_at)
