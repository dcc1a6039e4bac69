"""The Console ASGI application: the signed JSON API under /api/v1."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse
from sqlalchemy import text

from dfe import __version__
from dfe.auth.nonces import nonce_store
from dfe.config import Settings, get_settings
from dfe.console.api import accounts, admin, estate, instances, metrics, people, problems, snapshots
from dfe.console.api.snapshots import UPLOAD_SUFFIX
from dfe.console.middleware import BodyLimitMiddleware, RequestContextMiddleware
from dfe.console.ui import PREFIX as UI_PREFIX
from dfe.console.ui import create_ui
from dfe.db.migrate import current_revision, head_revision
from dfe.db.session import Database, open_database
from dfe.jobs.queue import dispatcher_for
from dfe.logs import configure_logging
from dfe.metrics.gauges import console_gauges
from dfe.metrics.prometheus import MetricsMiddleware, RequestMetrics

API_PREFIX = "/api/v1"

DESCRIPTION = """The DFE Console API. Every route but health and readiness takes an
RFC 9421 HTTP Message Signature (hmac-sha256, keyed with an app key's secret);
see docs/authentication.md. Errors are RFC 9457 problem details."""


health = APIRouter(tags=["health"])


@health.get("/health")
def healthy() -> dict[str, str]:
    """The process is up (unsigned)."""
    return {"status": "ok", "version": __version__}


@health.get("/ready", responses={503: {"description": "Not ready"}})
def ready(request: Request) -> JSONResponse:
    """The database answers and its schema is current (unsigned)."""
    db: Database = request.app.state.database
    try:
        with db.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        current, head = current_revision(db), head_revision(db)
    except Exception as error:
        return JSONResponse({"status": "unavailable", "reason": type(error).__name__}, 503)
    if current != head:
        return JSONResponse({"status": "unavailable", "reason": "schema not upgraded"}, 503)
    return JSONResponse({"status": "ready", "schema": head})


async def _to_ui(_request: Request) -> RedirectResponse:
    """The Console's root is the admin UI."""
    return RedirectResponse(f"{UI_PREFIX}/", status_code=303)


def create_app(settings: Settings | None = None, database: Database | None = None) -> FastAPI:
    """The Console. Without arguments (as `dfe serve console` builds it) it reads the
    settings and logs JSON lines; tests pass their own settings and database."""
    if settings is None:
        settings = get_settings()
        configure_logging()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if owns_database:
            app.state.database.dispose()

    owns_database = database is None
    database = database or open_database(settings)
    app = FastAPI(
        title="DFE Console",
        version=__version__,
        description=DESCRIPTION,
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.database = database
    app.state.nonces = nonce_store(settings.redis_url)
    app.state.dispatcher = dispatcher_for(database, settings)
    problems.install(app)
    app.include_router(health, prefix=API_PREFIX)
    for router in [
        *estate.routers,
        *people.routers,
        accounts.router,
        instances.router,
        *admin.routers,
        metrics.router,
        snapshots.router,
    ]:
        app.include_router(router, prefix=API_PREFIX, responses=problems.RESPONSES)
    app.mount(UI_PREFIX, create_ui(settings, database, app.state.dispatcher))
    app.add_route("/", _to_ui, include_in_schema=False)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        uploads=(UPLOAD_SUFFIX, settings.snapshot_max_upload_bytes),
    )
    app.add_middleware(RequestContextMiddleware)
    process_metrics = RequestMetrics("console")
    process_metrics.gauges.append(console_gauges(database))
    app.state.metrics = process_metrics
    app.add_middleware(
        MetricsMiddleware, metrics=process_metrics, token=settings.metrics_token_value
    )
    return app
