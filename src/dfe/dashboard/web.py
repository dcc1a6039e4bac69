"""What every Dashboard view shares: templates, the signed-in user, messages, forms."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import jinja2
from fastapi import Depends, Request
from fastapi.templating import Jinja2Templates
from starlette.responses import Response

from dfe.client import AsyncConsoleClient
from dfe.dashboard.security import CSRF_FIELD, csrf_token
from dfe.webui import flash as flash
from dfe.webui import is_htmx as is_htmx
from dfe.webui import redirect as redirect
from dfe.webui import sentence as sentence
from dfe.webui import session_of as session_of
from dfe.webui import settings_of as settings_of
from dfe.webui import take_flashes

TEMPLATES_DIR = Path(__file__).parent / "templates"


class LoginRequired(Exception):
    """The page needs a signed-in user; `message` says why the user must log in (again)."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message)
        self.message = message


def console_of(request: Request) -> AsyncConsoleClient:
    """The Dashboard's own client (its key, acting for nobody)."""
    console: AsyncConsoleClient = request.app.state.console
    return console


def _page_context(request: Request) -> dict[str, Any]:
    settings = settings_of(request)
    session = session_of(request)
    brand = request.app.state.branding
    return {
        "product_name": settings.dashboard_product_name,
        "logo_url": brand.logo.url if brand.logo else None,
        "stylesheet_url": brand.stylesheet.url if brand.stylesheet else None,
        "open_registration": settings.dashboard_open_registration,
        "signed_in_email": session.get("email") if session.get("token") else None,
        "csrf_token": csrf_token(request),
        "csrf_field": CSRF_FIELD,
        "take_flashes": take_flashes(request),
    }


def _when(value: datetime | None) -> str:
    if value is None:
        return "never"
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _iso(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="seconds")


def make_templates() -> Jinja2Templates:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["when"] = _when
    environment.filters["iso"] = _iso
    return Jinja2Templates(env=environment, context_processors=[_page_context])


def render(
    request: Request,
    name: str,
    context: dict[str, Any] | None = None,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    templates: Jinja2Templates = request.app.state.templates
    return templates.TemplateResponse(
        request, name, context or {}, status_code=status, headers=headers
    )


@dataclass(frozen=True)
class SignedIn:
    """The signed-in user: their email and a client acting for them."""

    email: str
    console: AsyncConsoleClient


def signed_in(request: Request) -> SignedIn:
    session = session_of(request)
    token, email = session.get("token"), session.get("email")
    if not isinstance(token, str) or not isinstance(email, str):
        raise LoginRequired
    expires_at = session.get("expires_at")
    if isinstance(expires_at, int) and expires_at <= datetime.now(UTC).timestamp():
        session.clear()
        raise LoginRequired("Your session has expired: please log in again.")
    return SignedIn(email=email, console=console_of(request).with_user_token(token))


SignedInDep = Annotated[SignedIn, Depends(signed_in)]


async def form_of(request: Request) -> dict[str, str]:
    """The posted form's text fields (files and repeated fields ignored)."""
    form = await request.form()
    return {key: value for key, value in form.items() if isinstance(value, str)}
