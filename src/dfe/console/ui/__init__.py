"""The Console's admin web UI: server-rendered pages under /ui for service users.

A sub-application mounted in the Console (its own sessions, CSRF, security headers
and error pages; the JSON API is untouched), calling the same services as the API.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from dfe.config import Settings
from dfe.console.ui import errors
from dfe.console.ui.pages import routers
from dfe.console.ui.web import PREFIX, make_templates
from dfe.crypto import active_keyring
from dfe.dashboard.security import SecurityHeaders, SessionCookies
from dfe.db.session import Database
from dfe.jobs.queue import Dispatcher

STATIC_DIR = Path(__file__).resolve().parent.parent.parent / "static"
SESSION_COOKIE = "dfe_console_session"

__all__ = ["PREFIX", "create_ui"]


def create_ui(settings: Settings, database: Database, dispatcher: Dispatcher) -> FastAPI:
    """The admin UI, to mount at PREFIX. Its session cookie is signed with a key derived
    from the encryption keys, so every Console process of a system accepts it."""
    app = FastAPI(title="DFE Console UI", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings = settings
    app.state.database = database
    app.state.dispatcher = dispatcher
    app.state.templates = make_templates()
    errors.install(app)
    for router in routers:
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_middleware(
        SessionCookies,
        secret=active_keyring().derive_key("dfe-console-ui-session").hex(),
        max_age=settings.user_token_ttl_seconds,
        proxies=settings.proxies,
        cookie=SESSION_COOKIE,
    )
    app.add_middleware(SecurityHeaders)
    return app
