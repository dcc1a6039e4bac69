"""Password resets by mail and password changes.

A reset token is 256 random bits, mailed once and kept only as its SHA-256 in
auth_reset_t; it works once, until it expires. A request for any email gets the
same answer (no account enumeration): the mail goes only to an existing, active
account, at most `password_reset_max_per_account` per window, and every request
counts toward its address's throttle. Setting a password, by a reset or a change,
makes every other reset link and every session of the user invalid (user tokens
carry a fingerprint of the password hash) and clears the account's login failures.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import CursorResult, delete, func, select, update
from sqlalchemy.orm import Session

from dfe.auth import passwords, tokens
from dfe.config import Settings
from dfe.db.base import utcnow
from dfe.mail import MailError, send_mail
from dfe.models import LoginFailure, PasswordReset, User
from dfe.services import audit
from dfe.services.errors import InvalidInput, TooManyRequests
from dfe.services.identity import get_user
from dfe.services.logins import Login

log = structlog.get_logger("dfe.accounts")

RESET_ACCEPTED = "If an account has this email, a link to set a new password is on its way to it."
INVALID_LINK = "this password reset link is invalid, used or expired: ask for a new one"
WRONG_PASSWORD = "the current password is wrong"  # noqa: S105 (a message)
RESET_PATH = "/reset-password/"


@dataclass(frozen=True)
class ResetMail:
    """A reset mail to send once the request's transaction is committed."""

    email: str
    token: str = ""

    def __repr__(self) -> str:
        return f"ResetMail({self.email!r})"


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_reset_token() -> str:
    return secrets.token_urlsafe(32)


def _count(session: Session, since: datetime, *criteria: Any) -> int:
    query = select(func.count()).select_from(PasswordReset)
    return session.scalar(query.where(PasswordReset.created_at > since, *criteria)) or 0


def request_reset(
    session: Session, settings: Settings, email: str, address: str | None
) -> ResetMail | None:
    """Record a reset request; the mail to send, or None (no such account, or throttled).

    Only too many requests from one address are refused (429): that answer is the
    same for known and unknown emails.
    """
    now = utcnow()
    window = timedelta(seconds=settings.password_reset_window_seconds)
    ttl = timedelta(seconds=settings.password_reset_ttl_seconds)
    session.execute(delete(PasswordReset).where(PasswordReset.created_at < now - max(window, ttl)))
    if address and (
        _count(session, now - window, PasswordReset.address == address)
        >= settings.password_reset_max_per_address
    ):
        raise TooManyRequests(
            "too many password reset requests from this address; try again later",
            settings.password_reset_window_seconds,
        )
    user = session.scalar(select(User).where(User.email == email.strip().lower()))
    if (
        user is None
        or not user.is_active
        or _count(session, now - window, PasswordReset.user_id == user.id)
        >= settings.password_reset_max_per_account
    ):
        session.add(PasswordReset(address=address, created_at=now))
        return None
    token = new_reset_token()
    session.add(
        PasswordReset(
            user_id=user.id,
            token_hash=token_digest(token),
            address=address,
            created_at=now,
            expires_at=now + ttl,
        )
    )
    audit.record(session, "user.password_reset_request", "user", user.id, user.email)
    return ResetMail(user.email, token)


def reset_link(settings: Settings, token: str) -> str:
    return settings.effective_dashboard_url + RESET_PATH + token


def reset_mail_text(settings: Settings, token: str) -> str:
    minutes = max(1, settings.password_reset_ttl_seconds // 60)
    product = settings.dashboard_product_name
    return (
        f"Someone, probably you, asked to set a new password for your {product} account.\n\n"
        f"Open this link to choose a new password (it works once, for {minutes} minutes):\n\n"
        f"{reset_link(settings, token)}\n\n"
        "If you did not ask for this, ignore this mail: your password stays as it is.\n"
    )


def send_reset_mail(settings: Settings, mail: ResetMail) -> None:
    """Send a reset mail; a failure is logged (by the mailer), never raised."""
    with contextlib.suppress(MailError):
        send_mail(
            settings,
            mail.email,
            f"Set a new {settings.dashboard_product_name} password",
            reset_mail_text(settings, mail.token),
        )


def confirm_reset(session: Session, token: str, password: str) -> User:
    """Set a new password with a reset token; InvalidInput if the token is no good."""
    now = utcnow()
    reset = session.scalar(
        select(PasswordReset).where(PasswordReset.token_hash == token_digest(token))
    )
    if (
        reset is None
        or reset.user_id is None
        or reset.used_at is not None
        or reset.expires_at is None
        or reset.expires_at <= now
    ):
        raise InvalidInput(INVALID_LINK)
    # Claimed atomically: of two requests with one token, only one gets here.
    claimed: CursorResult[Any] = session.execute(  # type: ignore[assignment]
        update(PasswordReset)
        .where(PasswordReset.id == reset.id, PasswordReset.used_at.is_(None))
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    user = session.get(User, reset.user_id)
    if claimed.rowcount != 1 or user is None or not user.is_active:
        raise InvalidInput(INVALID_LINK)
    _set_password(session, user, password, now)
    audit.record(session, "user.password_reset", "user", user.id, user.email)
    return user


def change_password(
    session: Session,
    settings: Settings,
    user_id: int,
    current: str,
    new: str,
    address: str | None,
    client_id: str,
) -> Login:
    """Change a user's own password (the current one is checked, and throttled like a
    login); a fresh user token for the caller's session, since every other one ends."""
    user = get_user(session, user_id)
    window = timedelta(seconds=settings.login_failure_window_seconds)
    failures = session.scalar(
        select(func.count())
        .select_from(LoginFailure)
        .where(LoginFailure.email == user.email, LoginFailure.at > utcnow() - window)
    )
    if (failures or 0) >= settings.login_max_failures_per_account:
        raise TooManyRequests(
            "too many wrong passwords for this account; try again later",
            settings.login_failure_window_seconds,
        )
    matches, _ = passwords.verify_password(current, user.password_hash)
    if not matches:
        session.add(LoginFailure(email=user.email, address=address))
        session.commit()
        raise InvalidInput(WRONG_PASSWORD)
    _set_password(session, user, new, utcnow())
    audit.record(session, "user.password_change", "user", user.id, user.email)
    token, expires_at = tokens.issue(
        user.id, client_id, user.password_hash, settings.user_token_ttl_seconds
    )
    return Login(user=user, token=token, expires_at=expires_at)


def _set_password(session: Session, user: User, password: str, now: datetime) -> None:
    user.password_hash = passwords.hash_password(password)
    session.execute(
        update(PasswordReset)
        .where(PasswordReset.user_id == user.id, PasswordReset.used_at.is_(None))
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    session.execute(delete(LoginFailure).where(LoginFailure.email == user.email))
    session.flush()
