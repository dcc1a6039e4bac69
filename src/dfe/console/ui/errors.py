"""Every failure as a readable page: never a stack trace, never a 500 for bad input."""

from __future__ import annotations

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import PlainTextResponse, Response

from dfe.console.ui.web import PREFIX, LoginRequired, RoleRefused, flash, is_htmx, redirect, render
from dfe.dashboard.security import CsrfRefused
from dfe.services.errors import DfeError

log = structlog.get_logger("dfe.console.ui")

_TITLES = {
    400: "That request was not understood",
    403: "Not allowed",
    404: "Page not found",
    405: "Not allowed",
    409: "Not possible now",
    422: "That is not valid",
    429: "Too many requests",
}


def page(request: Request, status: int, title: str, text: str) -> Response:
    if is_htmx(request):
        return PlainTextResponse(title, status_code=status)
    return render(
        request, "message.html", {"title": title, "text": text, "back": None}, status=status
    )


async def _login_required(request: Request, error: Exception) -> Response:
    assert isinstance(error, LoginRequired)
    if error.message:
        flash(request, error.message, "warning")
    return redirect(request, f"{PREFIX}/login")


async def _role_refused(request: Request, error: Exception) -> Response:
    assert isinstance(error, RoleRefused)
    log.warning("role refused", path=request.url.path, action=error.action.value)
    return page(
        request,
        403,
        _TITLES[403],
        f"Your role may not do this ({error.action.value}): operators can look at everything "
        "and change nothing. Ask an administrator.",
    )


async def _csrf_refused(request: Request, _error: Exception) -> Response:
    return page(
        request,
        403,
        "This form has expired",
        "The form was not sent from this page, or your session changed since it was shown. "
        "Go back, reload the page and try again.",
    )


async def _dfe_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, DfeError)
    text = error.message[:1].upper() + error.message[1:]
    return page(request, error.status, _TITLES.get(error.status, "Not possible"), text + ".")


async def _http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, StarletteHTTPException)
    status = error.status_code
    text = "There is nothing here." if status == 404 else "Go back and try again."
    return page(request, status, _TITLES.get(status, "That did not work"), text)


async def _invalid_request(request: Request, _error: Exception) -> Response:
    return page(request, 400, _TITLES[400], "Go back, check the address or form and try again.")


async def _unexpected(request: Request, error: Exception) -> Response:
    log.exception("unhandled error", path=request.url.path, error=type(error).__name__)
    return page(
        request,
        500,
        "Something went wrong",
        "The Console failed to show this page. It has been logged; please try again.",
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(LoginRequired, _login_required)
    app.add_exception_handler(RoleRefused, _role_refused)
    app.add_exception_handler(CsrfRefused, _csrf_refused)
    app.add_exception_handler(DfeError, _dfe_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(Exception, _unexpected)
