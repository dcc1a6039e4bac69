"""Errors as RFC 9457 problem details (`application/problem+json`), never a stack trace."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from dfe.services.errors import DfeError, TooManyRequests

PROBLEM_TYPE = "urn:dfe:problem:"
log = structlog.get_logger("dfe.console")

_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Request body too large",
    422: "Invalid input",
    429: "Too many requests",
    500: "Internal error",
}


class Problem(BaseModel):
    """An RFC 9457 problem details document."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    instance: str | None = None
    request_id: str | None = None
    errors: list[dict[str, Any]] | None = None


_PROBLEM_CONTENT = {"application/problem+json": {"schema": Problem.model_json_schema()}}
RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"description": _TITLES[status], "model": Problem, "content": _PROBLEM_CONTENT}
    for status in (400, 401, 403, 404, 409, 413, 422, 429)
}


def problem(
    status: int,
    code: str,
    detail: str,
    request: Request | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body = {
        "type": PROBLEM_TYPE + code,
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        "code": code,
        **extra,
    }
    if request is not None:
        body["instance"] = request.url.path
        request_id = getattr(request.state, "request_id", None)
        if request_id:
            body["request_id"] = request_id
    return JSONResponse(body, status, headers=headers, media_type="application/problem+json")


async def _dfe_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, DfeError)
    headers = (
        {"Retry-After": str(error.retry_after)} if isinstance(error, TooManyRequests) else None
    )
    return problem(error.status, error.code, error.message, request, headers)


async def _validation_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    errors = [
        {
            "location": [str(part) for part in item["loc"]],
            "message": str(item["msg"]).removeprefix("Value error, "),
        }
        for item in error.errors()
    ]
    detail = "; ".join(f"{'.'.join(e['location'][1:]) or 'body'}: {e['message']}" for e in errors)
    return problem(422, "invalid_input", detail, request, errors=errors)


async def _http_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
    headers = dict(error.headers) if error.headers else None
    return problem(error.status_code, code, str(error.detail), request, headers)


async def _unexpected(request: Request, error: Exception) -> JSONResponse:
    log.exception("unhandled error", path=request.url.path, error=type(error).__name__)
    return problem(500, "internal_error", "something went wrong; it has been logged", request)


def install(app: FastAPI) -> None:
    app.add_exception_handler(DfeError, _dfe_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
