"""Sessions, CSRF and who is on the other end: the Dashboard's browser-facing defences.

The session is a signed cookie (Starlette's SessionMiddleware, itsdangerous):
HttpOnly, SameSite=Lax, and Secure when the request came over https. Every
unsafe request must carry the session's CSRF token (a synchronizer token) in
the `csrf_token` form field or the `X-CSRF-Token` header (htmx sends it from
`hx-headers` on <body>); anything else is refused with 403.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from fastapi import Request
from starlette.middleware.sessions import SessionMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from dfe.config import Settings

SESSION_COOKIE = "dfe_dashboard_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_SESSION_SECRET_CONTEXT = b"dfe-dashboard-session-cookie"
MIN_SESSION_SECRET_LENGTH = 32


class CsrfRefused(Exception):
    """An unsafe request without the session's CSRF token."""


def session_secret(settings: Settings, client_secret: str) -> str:
    """DFE_DASHBOARD_SESSION_SECRET, or a secret derived from the Dashboard key's.

    Several Dashboard processes with the same key therefore accept each other's
    cookies, and rotating the key ends every session.
    """
    if settings.dashboard_session_secret is not None:
        configured = settings.dashboard_session_secret.get_secret_value()
        if len(configured) < MIN_SESSION_SECRET_LENGTH:
            raise ValueError(
                f"DFE_DASHBOARD_SESSION_SECRET must be at least {MIN_SESSION_SECRET_LENGTH} "
                "characters long"
            )
        return configured
    return hmac.new(client_secret.encode(), _SESSION_SECRET_CONTEXT, hashlib.sha256).hexdigest()


def _peer(scope: Scope) -> str | None:
    client = scope.get("client")
    return str(client[0]) if client else None


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def is_https(scope: Scope, proxies: frozenset[str]) -> bool:
    """Whether the browser reached us over https (a trusted proxy may say so)."""
    if scope.get("scheme") in ("https", "wss"):
        return True
    if _peer(scope) in proxies:
        forwarded = _header(scope, b"x-forwarded-proto") or ""
        return forwarded.split(",")[0].strip().lower() == "https"
    return False


def client_address(request: Request, proxies: frozenset[str]) -> str | None:
    """The end user's IP address: the peer, or what trusted proxies forwarded."""
    address = _peer(request.scope)
    if address not in proxies:
        return address
    hops = [hop.strip() for hop in request.headers.get("x-forwarded-for", "").split(",")]
    for hop in reversed([hop for hop in hops if hop]):
        if hop not in proxies:
            return hop
    return address


class SessionCookies:
    """SessionMiddleware whose cookie is marked Secure when the request came over https."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        secret: str,
        max_age: int,
        proxies: frozenset[str],
        cookie: str = SESSION_COOKIE,
    ):
        options: dict[str, Any] = {
            "secret_key": secret,
            "session_cookie": cookie,
            "max_age": max_age,
            "same_site": "lax",
        }
        self._plain = SessionMiddleware(app, https_only=False, **options)
        self._secure = SessionMiddleware(app, https_only=True, **options)
        self._proxies = proxies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        middleware = self._secure if is_https(scope, self._proxies) else self._plain
        await middleware(scope, receive, send)


def csrf_token(request: Request) -> str:
    """The session's CSRF token, made on first use ("" outside a session)."""
    session: dict[str, Any] | None = request.scope.get("session")
    if session is None:
        return ""
    token = session.get("csrf")
    if not isinstance(token, str) or not token:
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return token


async def check_csrf(request: Request) -> None:
    """App-wide dependency: an unsafe request must carry the session's CSRF token."""
    if request.method in SAFE_METHODS:
        return
    expected = request.session.get("csrf")
    sent: Any = request.headers.get(CSRF_HEADER)
    if sent is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        sent = (await request.form()).get(CSRF_FIELD)
    if (
        not isinstance(expected, str)
        or not expected
        or not isinstance(sent, str)
        or not hmac.compare_digest(sent.encode(), expected.encode())
    ):
        raise CsrfRefused


class SecurityHeaders:
    """Headers every answer carries: a strict content security policy, no framing,
    no sniffing, and no caching of pages (they show a user's data)."""

    POLICY = (
        "default-src 'self'; script-src 'self'; style-src 'self'{styles}; "
        "img-src 'self' data:{images}; connect-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
    )

    def __init__(
        self,
        app: ASGIApp,
        *,
        image_origins: tuple[str, ...] = (),
        style_origins: tuple[str, ...] = (),
    ) -> None:
        """`image_origins` and `style_origins`: other origins the branding loads from."""
        self.app = app
        self.policy = self.POLICY.format(
            styles="".join(f" {origin}" for origin in style_origins),
            images="".join(f" {origin}" for origin in image_origins),
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = str(scope.get("path", "")).startswith("/static/")

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"content-security-policy", self.policy.encode()),
                    (b"x-frame-options", b"DENY"),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"same-origin"),
                ]
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
