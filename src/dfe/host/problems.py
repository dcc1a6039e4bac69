"""Errors of the web tier and the runtime: RFC 9457 problem details, or a small HTML page
for a browser; never a stack trace."""

from __future__ import annotations

import html
from typing import Any

from starlette.responses import HTMLResponse, JSONResponse, Response

PROBLEM_TYPE = "urn:dfe:problem:"
TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Request body too large",
    415: "Unsupported media type",
    422: "Invalid input",
    423: "Locked",
    500: "Internal error",
    502: "Bad gateway",
    503: "Service unavailable",
}


class Problem(Exception):
    """An expected failure of a request: its status, a stable code and a sentence."""

    def __init__(
        self, status: int, code: str, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}


def problem_document(status: int, code: str, detail: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": PROBLEM_TYPE + code,
        "title": TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        "code": code,
        **extra,
    }


def problem_response(
    status: int,
    code: str,
    detail: str,
    headers: dict[str, str] | None = None,
    *,
    accept: str = "",
    **extra: Any,
) -> Response:
    """The problem as JSON, or as an HTML page when the client prefers HTML (a browser)."""
    if _prefers_html(accept):
        title = html.escape(TITLES.get(status, "Error"))
        page = (
            f"<!doctype html><html lang=en><meta charset=utf-8><title>{status} {title}</title>"
            f"<body style='font-family:sans-serif;margin:4em auto;max-width:40em'>"
            f"<h1>{status} {title}</h1><p>{html.escape(detail)}</p></body></html>"
        )
        return HTMLResponse(page, status, headers=headers)
    return JSONResponse(
        problem_document(status, code, detail, **extra),
        status,
        headers=headers,
        media_type="application/problem+json",
    )


def _prefers_html(accept: str) -> bool:
    accept = accept.lower()
    return "text/html" in accept and "json" not in accept
