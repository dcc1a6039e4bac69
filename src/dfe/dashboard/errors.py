"""Every failure as a plain page: never a stack trace, and a way back for the user.

The Console unreachable is a 503 page that reloads itself until the Console is
back; a refused user token ends the session and sends the user to log in; the
Console's 404 (someone else's instance, too) is the Dashboard's 404.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import PlainTextResponse, Response

from dfe.client import (
    ClientError,
    ConsoleError,
    ConsoleUnavailable,
    NotFoundError,
    UnauthorizedError,
)
from dfe.dashboard.security import CsrfRefused
from dfe.dashboard.web import LoginRequired, flash, is_htmx, redirect, render, session_of

log = structlog.get_logger("dfe.dashboard")

RETRY_SECONDS = 5
_TITLES = {
    400: "That request was not understood",
    403: "Not allowed",
    404: "Page not found",
    405: "Not allowed",
    429: "Too many requests",
}


def _page(
    request: Request,
    status: int,
    title: str,
    text: str,
    *,
    retry_url: str | None = None,
) -> Response:
    if is_htmx(request):
        # htmx leaves the page as it is on an error; a poll simply tries again.
        return PlainTextResponse(title, status_code=status)
    context = {"title": title, "text": text, "retry_url": retry_url, "retry_seconds": RETRY_SECONDS}
    return render(request, "message.html", context, status=status)


def _retry_url(request: Request) -> str:
    """Where the unavailable page reloads: this page, or (after a form) the form's page."""
    if request.method in ("GET", "HEAD"):
        query = request.url.query
        return request.url.path + (f"?{query}" if query else "")
    referer = urlsplit(request.headers.get("referer", ""))
    same_site = referer.netloc == request.headers.get("host")
    if same_site and referer.path.startswith("/") and not referer.path.startswith("//"):
        return referer.path
    return "/"


async def _login_required(request: Request, error: Exception) -> Response:
    assert isinstance(error, LoginRequired)
    if error.message:
        flash(request, error.message, "warning")
    return redirect(request, "/login")


async def _csrf_refused(request: Request, _error: Exception) -> Response:
    return _page(
        request,
        403,
        "This form has expired",
        "The form was not sent from this page, or your session changed since it was shown. "
        "Go back, reload the page and try again.",
    )


async def _console_unavailable(request: Request, error: Exception) -> Response:
    assert isinstance(error, ConsoleUnavailable)
    log.warning("console unavailable", reason=error.reason, attempts=error.attempts)
    return _page(
        request,
        503,
        "The Console is not available right now",
        "Your instances are not affected: the Dashboard cannot reach the Console that manages "
        "them. This page tries again by itself every few seconds.",
        retry_url=_retry_url(request),
    )


async def _unauthorized(request: Request, error: Exception) -> Response:
    assert isinstance(error, UnauthorizedError)
    session = session_of(request)
    if session.get("token"):
        log.info("user token refused", code=error.code)
        session.clear()
        flash(request, "Your session has ended: please log in again.", "warning")
        return redirect(request, "/login")
    log.error("dashboard key refused by the console", code=error.code)
    return _page(
        request,
        503,
        "The Dashboard cannot reach your account right now",
        "The Console refused the Dashboard's key. The operator has been told in the logs; "
        "please try again later.",
    )


async def _not_found(request: Request, _error: Exception) -> Response:
    return _page(request, 404, _TITLES[404], "There is nothing here, or it is not yours.")


async def _console_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, ConsoleError)
    if error.status == 429:
        return _page(request, 429, _TITLES[429], error.detail)
    if 400 <= error.status < 500:
        log.warning("console refused a request", status=error.status, code=error.code)
        return _page(request, error.status, _TITLES.get(error.status, "Not possible"), error.detail)
    log.error("console failed", status=error.status, code=error.code)
    return _page(
        request,
        502,
        "Something went wrong",
        "The Console could not complete this request. Please try again in a moment.",
        retry_url=_retry_url(request),
    )


async def _client_error(request: Request, error: Exception) -> Response:
    log.error("unexpected answer from the console", error=str(error))
    return _page(
        request,
        502,
        "Something went wrong",
        "The Console gave an answer the Dashboard did not expect. Please try again later.",
    )


async def _http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, StarletteHTTPException)
    status = error.status_code
    if status == 404:
        return await _not_found(request, error)
    return _page(
        request, status, _TITLES.get(status, "That did not work"), "Go back and try again."
    )


async def _invalid_request(request: Request, _error: Exception) -> Response:
    return _page(request, 400, _TITLES[400], "Go back, check the form and try again.")


async def _unexpected(request: Request, error: Exception) -> Response:
    log.exception("unhandled error", path=request.url.path, error=type(error).__name__)
    return _page(
        request,
        500,
        "Something went wrong",
        "The Dashboard failed to show this page. It has been logged; please try again.",
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(LoginRequired, _login_required)
    app.add_exception_handler(CsrfRefused, _csrf_refused)
    app.add_exception_handler(ConsoleUnavailable, _console_unavailable)
    app.add_exception_handler(UnauthorizedError, _unauthorized)
    app.add_exception_handler(NotFoundError, _not_found)
    app.add_exception_handler(ConsoleError, _console_error)
    app.add_exception_handler(ClientError, _client_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(Exception, _unexpected)
