"""The Console ASGI application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy import text

from dfe import __version__
from dfe.config import Settings, get_settings
from dfe.db.migrate import current_revision, head_revision
from dfe.db.session import Database, open_database


def create_app(settings: Settings | None = None, database: Database | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.database = database or open_database(settings)
        yield
        app.state.database.dispose()

    app = FastAPI(
        title="DFE Console",
        version=__version__,
        openapi_url="/api/v1/openapi.json",
        docs_url="/api/v1/docs",
        redoc_url=None,
        lifespan=lifespan,
    )

    @app.get("/api/v1/health", tags=["health"])
    def health() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok", "version": __version__}

    @app.get("/api/v1/ready", tags=["health"])
    def ready() -> JSONResponse:
        """The database answers and its schema is current."""
        db: Database = app.state.database
        try:
            with db.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            current, head = current_revision(db), head_revision(db)
        except Exception as error:
            return JSONResponse({"status": "unavailable", "reason": type(error).__name__}, 503)
        if current != head:
            return JSONResponse({"status": "unavailable", "reason": "schema not upgraded"}, 503)
        return JSONResponse({"status": "ready", "schema": head})

    return app
