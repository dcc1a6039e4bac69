"""Passwords: forgotten (a reset link by mail), reset with the link, and changed.

The mailed link `/reset-password/<token>` puts the token into the session and
redirects at once to `/reset-password`, so the token leaves the address bar, the
history and any Referer before the form is shown (and the access log's line for
it is redacted: see `RedactResetTokens`).
"""

from __future__ import annotations

import logging
import re

from fastapi import APIRouter, Request
from starlette.responses import Response

from dfe.client import InvalidInputError, TooManyRequestsError
from dfe.dashboard.security import client_address
from dfe.dashboard.web import (
    SignedInDep,
    console_of,
    flash,
    form_of,
    redirect,
    render,
    sentence,
    session_of,
    settings_of,
)
from dfe.schemas import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH

router = APIRouter()

RESET_TOKEN = "reset_token"  # noqa: S105 (the session key it is kept under)
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,256}$")
BAD_LINK = "This link is invalid, used or expired. Ask for a new one."


def _password_error(refused: InvalidInputError) -> str | None:
    """The Console's complaint about the new password, if that is what it refused."""
    for item in refused.errors:
        if item.field == "password":
            return sentence(item.message)
    return None


def _password_problems(posted: dict[str, str], errors: dict[str, str]) -> str:
    password = posted.get("password", "")
    if len(password) < MIN_PASSWORD_LENGTH:
        errors["password"] = f"The password must be at least {MIN_PASSWORD_LENGTH} characters long."
    elif len(password) > MAX_PASSWORD_LENGTH:
        errors["password"] = f"The password must be at most {MAX_PASSWORD_LENGTH} characters long."
    if password != posted.get("password_confirm", ""):
        errors.setdefault("password_confirm", "The two passwords differ.")
    return password


# Forgot


def _forgot_page(
    request: Request,
    email: str = "",
    errors: dict[str, str] | None = None,
    sent: str | None = None,
    status: int = 200,
) -> Response:
    context = {
        "email": email,
        "errors": errors or {},
        "sent": sent,
        "ttl_minutes": max(1, settings_of(request).password_reset_ttl_seconds // 60),
    }
    return render(request, "forgot_password.html", context, status=status)


@router.get("/forgot-password")
async def forgot_password_page(request: Request) -> Response:
    return _forgot_page(request)


@router.post("/forgot-password")
async def forgot_password(request: Request) -> Response:
    email = (await form_of(request)).get("email", "").strip()
    if "@" not in email or len(email) > 192:
        return _forgot_page(
            request, email, {"email": "Enter the email address of your account."}, status=422
        )
    settings = settings_of(request)
    try:
        answer = await console_of(request).request_password_reset(
            email, address=client_address(request, settings.proxies)
        )
    except TooManyRequestsError as refused:
        return _forgot_page(request, email, {"form": sentence(refused.detail)}, status=429)
    except InvalidInputError:
        return _forgot_page(
            request, email, {"email": "Enter the email address of your account."}, status=422
        )
    return _forgot_page(request, email, sent=answer.detail)


# Reset


@router.get("/reset-password/{token}")
async def reset_link(request: Request, token: str) -> Response:
    """The mailed link: keep the token in the session, and show the form without it."""
    session = session_of(request)
    if _TOKEN.fullmatch(token):
        session[RESET_TOKEN] = token
    else:
        session.pop(RESET_TOKEN, None)
    return redirect(request, "/reset-password")


def _reset_page(
    request: Request, errors: dict[str, str] | None = None, status: int = 200
) -> Response:
    link_ok = isinstance(session_of(request).get(RESET_TOKEN), str)
    errors = dict(errors or {})
    if not link_ok:
        errors.setdefault("form", BAD_LINK)
        status = status if status != 200 else 400
    context = {"errors": errors, "link_ok": link_ok, "min_password": MIN_PASSWORD_LENGTH}
    return render(request, "reset_password.html", context, status=status)


@router.get("/reset-password")
async def reset_password_page(request: Request) -> Response:
    return _reset_page(request)


@router.post("/reset-password")
async def reset_password(request: Request) -> Response:
    session = session_of(request)
    token = session.get(RESET_TOKEN)
    if not isinstance(token, str):
        return _reset_page(request)
    errors: dict[str, str] = {}
    password = _password_problems(await form_of(request), errors)
    if errors:
        return _reset_page(request, errors, status=422)
    try:
        user = await console_of(request).confirm_password_reset(token, password)
    except InvalidInputError as refused:
        problem = _password_error(refused)
        if problem:
            return _reset_page(request, {"password": problem}, status=422)
        session.pop(RESET_TOKEN, None)
        return _reset_page(request, {"form": BAD_LINK}, status=422)
    session.clear()
    session["login_email"] = user.email
    flash(request, "Your new password is set: log in with it.", "success")
    return redirect(request, "/login")


# Change


def _change_page(request: Request, errors: dict[str, str], status: int = 200) -> Response:
    context = {"errors": errors, "min_password": MIN_PASSWORD_LENGTH}
    return render(request, "change_password.html", context, status=status)


@router.get("/account/password")
async def change_password_page(request: Request, _user: SignedInDep) -> Response:
    return _change_page(request, {})


@router.post("/account/password")
async def change_password(request: Request, user: SignedInDep) -> Response:
    posted = await form_of(request)
    errors: dict[str, str] = {}
    current = posted.get("current_password", "")
    if not current:
        errors["current_password"] = "Enter your current password."  # noqa: S105
    password = _password_problems(posted, errors)
    if errors:
        return _change_page(request, errors, status=422)
    settings = settings_of(request)
    try:
        answer = await user.console.change_password(
            current, password, address=client_address(request, settings.proxies)
        )
    except TooManyRequestsError as refused:
        return _change_page(request, {"form": sentence(refused.detail)}, status=429)
    except InvalidInputError as refused:
        problem = _password_error(refused)
        if problem:
            errors["password"] = problem
        else:
            errors["current_password"] = sentence(refused.detail)
        return _change_page(request, errors, status=422)
    session = session_of(request)
    session["token"] = answer.token
    session["expires_at"] = answer.expires_at
    flash(request, "Your password is changed; your other sessions are logged out.", "success")
    return redirect(request, "/account")


class RedactResetTokens(logging.Filter):
    """Keeps reset tokens out of the access log (uvicorn logs each request's path)."""

    _PATH = re.compile(r"/reset-password/[^\s\"?]+")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(
            isinstance(arg, str) and "/reset-password/" in arg for arg in record.args
        ):
            record.args = tuple(
                self._PATH.sub("/reset-password/[token]", arg) if isinstance(arg, str) else arg
                for arg in record.args
            )
        return True


def redact_access_log() -> None:
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactResetTokens) for f in access.filters):
        access.addFilter(RedactResetTokens())
