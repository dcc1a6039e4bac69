"""The Dashboard ASGI application: `create_app(settings)`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI
from fastapi.staticfiles import StaticFiles

from dfe import __version__
from dfe.client import AsyncConsoleClient
from dfe.client._base import read_key_file
from dfe.config import Settings, get_settings
from dfe.dashboard import accounts, branding, errors, instances, passwords, snapshots, usage
from dfe.dashboard.security import SecurityHeaders, SessionCookies, check_csrf, session_secret
from dfe.dashboard.web import make_templates
from dfe.metrics.prometheus import MetricsMiddleware, RequestMetrics

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
KEY_FILE = "dashboard.key"
CONSOLE_TIMEOUT = 10.0


class DashboardKeyMissing(RuntimeError):
    """The data directory has no Dashboard key: `dfe setup` has not run there."""


def dashboard_key_path(settings: Settings) -> Path:
    return settings.data_dir / KEY_FILE


def create_app(
    settings: Settings | None = None, *, console: AsyncConsoleClient | None = None
) -> FastAPI:
    """The Dashboard, talking to the Console with the key in <data dir>/dashboard.key
    (or with `console`, a ready client, in tests)."""
    settings = settings or get_settings()
    key_path = dashboard_key_path(settings)
    if not key_path.is_file():
        raise DashboardKeyMissing(f"no Dashboard key at {key_path}: run `dfe setup` first")
    client_id, client_secret, key_console_url = read_key_file(key_path)
    brand = branding.branding_of(settings)
    if console is None:
        console = AsyncConsoleClient(
            settings.console_url or key_console_url or settings.effective_console_url,
            client_id,
            client_secret,
            timeout=CONSOLE_TIMEOUT,
        )
    client = console

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await client.aclose()

    app = FastAPI(
        title=f"{settings.dashboard_product_name} Dashboard",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
        dependencies=[Depends(check_csrf)],
    )
    app.state.settings = settings
    app.state.console = client
    app.state.branding = brand
    app.state.templates = make_templates()
    errors.install(app)
    app.include_router(accounts.router)
    app.include_router(instances.router)
    app.include_router(passwords.router)
    app.include_router(branding.router)
    app.include_router(usage.router)
    passwords.redact_access_log()
    app.include_router(snapshots.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_middleware(
        SessionCookies,
        secret=session_secret(settings, client_secret),
        max_age=settings.user_token_ttl_seconds,
        proxies=settings.proxies,
    )
    app.add_middleware(
        SecurityHeaders,
        image_origins=brand.origins(brand.logo),
        style_origins=brand.origins(brand.stylesheet),
    )
    app.add_middleware(
        MetricsMiddleware, metrics=RequestMetrics("dashboard"), token=settings.metrics_token_value
    )
    return app
