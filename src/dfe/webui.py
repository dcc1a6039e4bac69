"""What the two server-rendered UIs share (the Dashboard and the Console's admin UI):
the app's settings, the session and its one-time messages, htmx-aware redirects, and
messages as sentences."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Request
from starlette.responses import Response

from dfe.config import Settings


def settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def session_of(request: Request) -> dict[str, Any]:
    """The session, or an empty dict where there is none (errors met outside it)."""
    session: dict[str, Any] | None = request.scope.get("session")
    return session if session is not None else {}


def flash(request: Request, text: str, level: str = "info") -> None:
    """A message for the next page this browser sees."""
    session = session_of(request)
    session["flash"] = [*session.get("flash", []), [level, text]]


def take_flashes(request: Request) -> Callable[[], list[tuple[str, str]]]:
    """For templates: the messages waiting, taken when the page shows them."""

    def take() -> list[tuple[str, str]]:
        messages = session_of(request).pop("flash", None) or []
        return [(str(level), str(text)) for level, text in messages]

    return take


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def redirect(request: Request, url: str) -> Response:
    """See other: a 303 for a page, an HX-Redirect for an htmx request."""
    if is_htmx(request):
        return Response(status_code=200, headers={"HX-Redirect": url})
    return Response(status_code=303, headers={"Location": url})


def sentence(text: str) -> str:
    """A message as a sentence: capitalized, ending with a full stop."""
    text = text.strip()
    text = text[:1].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."
