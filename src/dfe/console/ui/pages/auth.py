"""Logging in and out (the only pages without `requires`)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from dfe.console.ui.web import (
    PREFIX,
    DbDep,
    flash,
    form_of,
    redirect,
    render,
    sentence,
    session_of,
    settings_of,
    start_session,
)
from dfe.dashboard.security import check_csrf, client_address
from dfe.services.errors import TooManyRequests, Unauthorized
from dfe.services.operations import check_service_login

router = APIRouter()


@router.get("/login")
def login_page(request: Request) -> Response:
    if isinstance(session_of(request).get("uid"), int):
        return redirect(request, f"{PREFIX}/")
    return render(request, "login.html", {"email": "", "error": None})


@router.post("/login")
async def login(request: Request, db: DbDep) -> Response:
    await check_csrf(request)
    posted = await form_of(request)
    email = posted.get("email", "").strip()[:192]
    password = posted.get("password", "")[:1024]
    if not email or not password:
        error = "Enter your email and your password."
        return render(request, "login.html", {"email": email, "error": error}, status=422)
    settings = settings_of(request)
    try:
        person = check_service_login(
            db, settings, email, password, client_address(request, settings.proxies)
        )
        db.commit()
    except TooManyRequests as refused:
        return render(
            request, "login.html", {"email": email, "error": sentence(refused.message)}, status=429
        )
    except Unauthorized:
        error = "The email or password is wrong."
        return render(request, "login.html", {"email": email, "error": error}, status=401)
    start_session(request, person)
    return redirect(request, f"{PREFIX}/")


@router.post("/logout")
async def logout(request: Request) -> Response:
    await check_csrf(request)
    session_of(request).clear()
    flash(request, "You are logged out.", "success")
    return redirect(request, f"{PREFIX}/login")
