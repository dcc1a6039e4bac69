"""Accounts: register, log in, log out, and the user's profile."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.responses import Response

from dfe.client import (
    ConflictError,
    InvalidInputError,
    TooManyRequestsError,
    UnauthorizedError,
)
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
from dfe.schemas import MIN_PASSWORD_LENGTH, UserCreate
from dfe.services.instance_limits import effective_limit

router = APIRouter()

REGISTER_FIELDS = ("email", "first_name", "last_name")
BAD_LOGIN_CODE = "unauthorized"


def _registration_closed(request: Request) -> Response | None:
    if settings_of(request).dashboard_open_registration:
        return None
    return render(
        request,
        "message.html",
        {
            "title": "Registration is closed",
            "text": "New accounts are created by the operator. Ask them for one.",
            "retry_url": None,
        },
        status=403,
    )


@router.get("/register")
async def register_page(request: Request) -> Response:
    closed = _registration_closed(request)
    if closed is not None:
        return closed
    return render(
        request,
        "register.html",
        {
            "form": dict.fromkeys(REGISTER_FIELDS, ""),
            "errors": {},
            "min_password": MIN_PASSWORD_LENGTH,
        },
    )


def _validation_messages(error: ValidationError) -> dict[str, str]:
    messages: dict[str, str] = {}
    for item in error.errors():
        field = str(item["loc"][0]) if item["loc"] else "form"
        message = str(item["msg"]).removeprefix("Value error, ")
        if field == "email":
            reason = message.removeprefix("value is not a valid email address: ")
            message = "Enter a valid email address" + ("" if reason == message else f": {reason}")
        messages.setdefault(field, sentence(message))
    return messages


@router.post("/register")
async def register(request: Request) -> Response:
    closed = _registration_closed(request)
    if closed is not None:
        return closed
    posted = await form_of(request)
    form = {name: posted.get(name, "").strip() for name in REGISTER_FIELDS}
    password = posted.get("password", "")
    errors: dict[str, str] = {}
    if len(password) < MIN_PASSWORD_LENGTH:
        errors["password"] = f"The password must be at least {MIN_PASSWORD_LENGTH} characters long."
    try:
        data = UserCreate(
            email=form["email"],
            password=password,
            first_name=form["first_name"],
            last_name=form["last_name"],
        )
    except ValidationError as error:
        errors = {**_validation_messages(error), **errors}
        data = None
    if password != posted.get("password_confirm", ""):
        errors.setdefault("password_confirm", "The two passwords differ.")
    status = 422
    if data is not None and not errors:
        try:
            await console_of(request).register_user(data)
        except ConflictError as error:
            errors["email"] = sentence(error.detail)
            status = 409
        except InvalidInputError as error:
            for item in error.errors:
                errors.setdefault(item.field, sentence(item.message))
            errors.setdefault("form", sentence(error.detail))
        except TooManyRequestsError as error:
            errors["form"] = sentence(error.detail)
            status = 429
        else:
            session_of(request)["login_email"] = data.email
            flash(request, "Your account is ready: log in.", "success")
            return redirect(request, "/login")
    return render(
        request,
        "register.html",
        {"form": form, "errors": errors, "min_password": MIN_PASSWORD_LENGTH},
        status=status,
    )


@router.get("/login")
async def login_page(request: Request) -> Response:
    if session_of(request).get("token"):
        return redirect(request, "/")
    email = session_of(request).pop("login_email", "")
    return render(request, "login.html", {"email": email, "error": None})


@router.post("/login")
async def login(request: Request) -> Response:
    posted = await form_of(request)
    email = posted.get("email", "").strip()
    password = posted.get("password", "")
    if not email or not password:
        error = "Enter your email and your password."
        return render(request, "login.html", {"email": email, "error": error}, status=422)
    settings = settings_of(request)
    try:
        answer = await console_of(request).login(
            email, password, address=client_address(request, settings.proxies)
        )
    except TooManyRequestsError as refused:
        error = sentence(refused.detail)
        return render(request, "login.html", {"email": email, "error": error}, status=429)
    except UnauthorizedError as refused:
        if refused.code != BAD_LOGIN_CODE:
            raise
        error = "The email or password is wrong."
        return render(request, "login.html", {"email": email, "error": error}, status=401)
    except InvalidInputError:
        error = "Enter a valid email and your password."
        return render(request, "login.html", {"email": email, "error": error}, status=422)
    session = session_of(request)
    session.clear()
    session["token"] = answer.token
    session["email"] = answer.user.email
    session["expires_at"] = answer.expires_at
    return redirect(request, "/")


@router.post("/logout")
async def logout(request: Request) -> Response:
    session = session_of(request)
    session.clear()
    flash(request, "You are logged out.", "success")
    return redirect(request, "/login")


@router.get("/account")
async def account(request: Request, user: SignedInDep) -> Response:
    profile = await user.console.account()
    limit = effective_limit(profile.instance_limit, settings_of(request).default_instance_limit)
    context: dict[str, Any] = {
        "profile": profile,
        "instance_limit": "none" if limit is None else f"{limit} instance{'s' * (limit != 1)}",
    }
    return render(request, "account.html", context)
