"""The instance runtime: one ASGI app shared by every instance, told which instance a
request is for by the `InstanceContext` in its scope (the web tier puts it there;
`bind` does for a single instance).

Every route but `/`, `/api/health` needs the instance's API key, as
`Authorization: Bearer <key>` or `X-DFE-Api-Key: <key>`. Errors are problem+json.
"""

from __future__ import annotations

import copy
from typing import Annotated, Any

import structlog
from fastapi import Body, Depends, FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from sqlalchemy import text
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from dfe import __version__
from dfe.host.problems import Problem, problem_response
from dfe.host.runtime.context import SCOPE_KEY, InstanceContext
from dfe.host.runtime.files import Download, InstanceFiles
from dfe.host.runtime.tables import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    Tables,
    TableSpec,
    describe,
    logical_type,
)
from dfe.provisioning.drivers.base import describe as describe_database_error

log = structlog.get_logger("dfe.host")
MAX_ROWS_PER_REQUEST = 1000

DESCRIPTION = """The API of one DFE instance: its own database (tables and rows) and its
own files. Authenticate with the instance's API key: `Authorization: Bearer <key>`."""


# Who and what a request is for


def current_instance(request: Request) -> InstanceContext:
    context = request.scope.get(SCOPE_KEY)
    if not isinstance(context, InstanceContext):
        raise Problem(404, "not_found", "no instance answers here")
    return context


def _presented_key(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return request.headers.get("x-dfe-api-key") or None


def authorized_instance(
    request: Request, context: Annotated[InstanceContext, Depends(current_instance)]
) -> InstanceContext:
    presented = _presented_key(request)
    challenge = {"WWW-Authenticate": f'Bearer realm="{context.name}"'}
    if presented is None:
        raise Problem(
            401,
            "missing_api_key",
            "send the instance's API key: Authorization: Bearer <key>",
            challenge,
        )
    if not context.key_matches(presented):
        raise Problem(401, "invalid_api_key", "this is not the instance's API key", challenge)
    return context


Authorized = Annotated[InstanceContext, Depends(authorized_instance)]


def instance_tables(context: Authorized) -> Tables:
    if context.tables is None:
        raise Problem(503, "database_unavailable", "the instance's database is not ready")
    return context.tables


def instance_files(context: Authorized) -> InstanceFiles:
    if context.files is None:
        raise Problem(503, "storage_unavailable", "the instance has no storage")
    return context.files


TablesDep = Annotated[Tables, Depends(instance_tables)]
FilesDep = Annotated[InstanceFiles, Depends(instance_files)]
Document = Annotated[dict[str, Any], Body(description="Column values.")]


# Routes


def _routes(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    def index(context: Annotated[InstanceContext, Depends(current_instance)]) -> dict[str, str]:
        return {"instance": context.name, "api": "/api", "openapi": "/api/openapi.json"}

    @app.get("/api/health", tags=["instance"], summary="The instance answers (no key needed)")
    def health(context: Annotated[InstanceContext, Depends(current_instance)]) -> JSONResponse:
        database = "not_configured"
        if context.engine is not None:
            try:
                with context.engine.connect() as connection:
                    connection.execute(text("SELECT 1"))
                database = "ok"
            except DBAPIError:
                database = "unavailable"
        status = 200 if database == "ok" else 503
        body = {"status": "ok" if status == 200 else "unavailable", "database": database}
        return JSONResponse({**body, "instance": context.name}, status)

    @app.get("/api/openapi.json", include_in_schema=False)
    def openapi(request: Request, context: Authorized) -> dict[str, Any]:
        return instance_openapi(request, context)

    @app.get("/api/tables", tags=["tables"], summary="The instance's tables and their columns")
    def list_tables(tables: TablesDep) -> dict[str, Any]:
        return {"items": [describe(tables.table(name)) for name in tables.names()]}

    @app.post(
        "/api/tables", tags=["tables"], status_code=201, summary="Create a table ('id' is added)"
    )
    def create_table(spec: TableSpec, tables: TablesDep) -> dict[str, Any]:
        return describe(tables.create(spec))

    @app.get("/api/tables/{table}", tags=["tables"], summary="A table's columns")
    def show_table(table: str, tables: TablesDep) -> dict[str, Any]:
        return describe(tables.table(table, refresh=True))

    @app.delete(
        "/api/tables/{table}", tags=["tables"], status_code=204, summary="Drop a table and its rows"
    )
    def drop_table(table: str, tables: TablesDep) -> Response:
        tables.drop(table)
        return Response(status_code=204)

    @app.get("/api/tables/{table}/rows", tags=["rows"], summary="Rows: filter, sort, page")
    def list_rows(
        table: str,
        tables: TablesDep,
        filter: Annotated[
            list[str],
            Query(
                description="column:operator:value; operators eq, ne, lt, le, gt, ge, like, "
                "in (comma-separated values), null, notnull. Repeat to combine (AND).",
                max_length=20,
            ),
        ] = [],  # noqa: B006  (FastAPI copies defaults)
        sort: Annotated[
            list[str],
            Query(description="Columns, comma-separated; '-column' sorts descending."),
        ] = [],  # noqa: B006
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
        offset: Annotated[int, Query(ge=0, le=10**12)] = 0,
    ) -> dict[str, Any]:
        return tables.list_rows(table, filter, sort, limit, offset)

    @app.post("/api/tables/{table}/rows", tags=["rows"], status_code=201, summary="Insert rows")
    def insert_rows(
        table: str,
        tables: TablesDep,
        rows: Annotated[
            dict[str, Any] | list[dict[str, Any]],
            Body(description="One row (an object) or several (a list of objects)."),
        ],
    ) -> Any:
        if isinstance(rows, list):
            if len(rows) > MAX_ROWS_PER_REQUEST:
                raise Problem(
                    422, "invalid_input", f"at most {MAX_ROWS_PER_REQUEST} rows per request"
                )
            return {"items": tables.insert_rows(table, rows)}
        return tables.insert_rows(table, [rows])[0]

    @app.get("/api/tables/{table}/rows/{row_id}", tags=["rows"], summary="One row")
    def show_row(table: str, row_id: str, tables: TablesDep) -> dict[str, Any]:
        return tables.get_row(table, row_id)

    @app.patch("/api/tables/{table}/rows/{row_id}", tags=["rows"], summary="Change a row")
    def update_row(
        table: str, row_id: str, document: Document, tables: TablesDep
    ) -> dict[str, Any]:
        return tables.update_row(table, row_id, document)

    @app.delete(
        "/api/tables/{table}/rows/{row_id}", tags=["rows"], status_code=204, summary="Delete a row"
    )
    def delete_row(table: str, row_id: str, tables: TablesDep) -> Response:
        tables.delete_row(table, row_id)
        return Response(status_code=204)

    @app.get("/api/files", tags=["files"], summary="List the top directory of the files")
    def list_files(files: FilesDep) -> Any:
        return _read(files, "")

    @app.get(
        "/api/files/{path:path}", tags=["files"], summary="List a directory or download a file"
    )
    def read_file(path: str, files: FilesDep) -> Any:
        return _read(files, path)

    @app.put(
        "/api/files/{path:path}",
        tags=["files"],
        summary="Upload a file (the body); directories are made as needed",
        responses={201: {"description": "Created"}, 200: {"description": "Replaced"}},
    )
    async def write_file(path: str, request: Request, files: FilesDep) -> JSONResponse:
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > files.max_upload_bytes:
            raise Problem(
                413, "body_too_large", f"a file may have at most {files.max_upload_bytes} bytes"
            )
        created = await files.write(path, request.stream())
        return JSONResponse({"path": path, "created": created}, 201 if created else 200)

    @app.delete(
        "/api/files/{path:path}",
        tags=["files"],
        status_code=204,
        summary="Delete a file or an empty directory",
    )
    def delete_file(path: str, files: FilesDep) -> Response:
        files.delete(path)
        return Response(status_code=204)


def _read(files: InstanceFiles, path: str) -> Any:
    found = files.read(path)
    if isinstance(found, Download):
        return StreamingResponse(
            found.chunks(),
            media_type=found.media_type,
            headers={
                "Content-Length": str(found.size),
                "X-Content-Type-Options": "nosniff",
                # A stored HTML file must not run scripts on the instance's origin.
                "Content-Security-Policy": "sandbox",
            },
        )
    return {"path": path.strip("/"), "items": [entry.document() for entry in found]}


# The OpenAPI document of one instance

_JSON_TYPES: dict[str, dict[str, Any]] = {
    "string": {"type": "string"},
    "text": {"type": "string"},
    "integer": {"type": "integer"},
    "number": {"type": "number"},
    "boolean": {"type": "boolean"},
    "datetime": {"type": "string", "format": "date-time"},
    "other": {},
}


def instance_openapi(request: Request, context: InstanceContext) -> dict[str, Any]:
    """The runtime's document, addressed to this instance, with a schema per table."""
    document: dict[str, Any] = copy.deepcopy(request.app.openapi())
    document["info"]["title"] = f"{context.name}: DFE instance API"
    document["servers"] = [{"url": str(request.base_url).rstrip("/")}]
    components = document.setdefault("components", {})
    components["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer"},
        "apiKey": {"type": "apiKey", "in": "header", "name": "X-DFE-Api-Key"},
    }
    document["security"] = [{"bearer": []}, {"apiKey": []}]
    schemas = components.setdefault("schemas", {})
    if context.tables is not None:
        names = context.tables.names()
        for name in names:
            table = context.tables.table(name)
            properties = {}
            for column in table.columns:
                schema = dict(_JSON_TYPES[logical_type(column.type)])
                if column.nullable and not column.primary_key:
                    schema = {"anyOf": [schema, {"type": "null"}]}
                properties[column.name] = schema
            schemas[f"row_{name}"] = {"type": "object", "title": name, "properties": properties}
        document["x-dfe-tables"] = names
    return document


# Errors


def _install_problems(app: FastAPI) -> None:
    def respond(request: Request, error: Problem, **extra: Any) -> Response:
        return problem_response(
            error.status, error.code, error.detail, error.headers, instance=request.url.path,
            **extra,
        )  # fmt: skip

    async def on_problem(request: Request, error: Exception) -> Response:
        assert isinstance(error, Problem)
        return respond(request, error)

    async def on_validation(request: Request, error: Exception) -> Response:
        assert isinstance(error, RequestValidationError)
        errors = [
            {
                "location": [str(part) for part in item["loc"]],
                "message": str(item["msg"]).removeprefix("Value error, "),
            }
            for item in error.errors()
        ]
        detail = "; ".join(
            f"{'.'.join(e['location'][1:]) or 'body'}: {e['message']}" for e in errors
        )
        return respond(request, Problem(422, "invalid_input", detail), errors=errors)

    async def on_http(request: Request, error: Exception) -> Response:
        assert isinstance(error, StarletteHTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        headers = dict(error.headers) if error.headers else None
        return respond(request, Problem(error.status_code, code, str(error.detail), headers))

    async def on_database(request: Request, error: Exception) -> Response:
        assert isinstance(error, DBAPIError)
        if isinstance(error, IntegrityError):
            problem = Problem(409, "constraint", describe_database_error(error))
        elif isinstance(error, DataError):
            problem = Problem(422, "invalid_input", describe_database_error(error))
        elif isinstance(error, OperationalError):
            log.warning("instance database error", error=describe_database_error(error))
            problem = Problem(503, "database_unavailable", "the instance's database is unavailable")
        else:
            log.warning("instance database error", error=describe_database_error(error))
            problem = Problem(500, "database_error", "the database refused the request")
        return respond(request, problem)

    async def on_unexpected(request: Request, error: Exception) -> Response:
        log.exception("unhandled error", path=request.url.path, error=type(error).__name__)
        problem = Problem(500, "internal_error", "something went wrong; it has been logged")
        return respond(request, problem)

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(DBAPIError, on_database)
    app.add_exception_handler(Exception, on_unexpected)


def create_runtime_app() -> FastAPI:
    """The runtime every instance runs (one copy; the request's scope names the instance)."""
    app = FastAPI(
        title="DFE instance API",
        version=__version__,
        description=DESCRIPTION,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    _install_problems(app)
    _routes(app)
    return app


def bind(runtime: ASGIApp, context: InstanceContext) -> ASGIApp:
    """The runtime serving one instance, whatever the Host header (direct use: benchmarks,
    tests, a single instance without a web tier)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            scope = {**scope, SCOPE_KEY: context}
        await runtime(scope, receive, send)

    return app
