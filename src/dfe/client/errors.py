"""What the ops client raises: one class per kind of failure, built from the problem details.

Every error the Console answers with is an RFC 9457 problem document
(`application/problem+json`); `ConsoleError` carries it whole (`problem`) and
its main members as attributes. Nothing here ever holds a request's headers,
so neither the client secret nor a user token can end up in a message, a
repr or a traceback.
"""

from __future__ import annotations

import email.utils
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx2


class ClientError(Exception):
    """Base of everything the ops client raises."""


class ConsoleError(ClientError):
    """The Console answered with an error status (4xx or 5xx)."""

    default_code: ClassVar[str] = "http_error"

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        problem: dict[str, Any] | None = None,
        *,
        method: str | None = None,
        path: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(status, code, detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.problem: dict[str, Any] = dict(problem or {})
        self.method = method
        self.path = path
        self.request_id = request_id

    def __str__(self) -> str:
        text = f"{self.status} {self.code}: {self.detail}"
        if self.method and self.path:
            text += f" ({self.method} {self.path})"
        if self.request_id:
            text += f" [request id {self.request_id}]"
        return text

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status={self.status}, code={self.code!r},"
            f" detail={self.detail!r})"
        )


class BadRequestError(ConsoleError):
    """400: the request could not be understood."""

    default_code = "bad_request"


class UnauthorizedError(ConsoleError):
    """401: the signature was refused (`code` says why, e.g. "unknown_key", "expired",
    "replayed"; see docs/authentication.md), or a user token or login was refused
    ("unauthorized")."""

    default_code = "unauthorized"


class ForbiddenError(ConsoleError):
    """403: the key is valid but may not do this."""

    default_code = "forbidden"


class NotFoundError(ConsoleError):
    """404: no such thing, or not one the caller may see."""

    default_code = "not_found"


class ConflictError(ConsoleError):
    """409: the change conflicts with the current state (a duplicate name, a thing in use)."""

    default_code = "conflict"


class PayloadTooLargeError(ConsoleError):
    """413: the request body is over the Console's limit."""

    default_code = "payload_too_large"


@dataclass(frozen=True)
class FieldError:
    """One invalid input: where (e.g. ("body", "name")) and what is wrong with it."""

    location: tuple[str, ...]
    message: str

    @property
    def field(self) -> str:
        """The location without its first part ("body", "query", "path"): e.g. "name"."""
        return ".".join(self.location[1:]) or ".".join(self.location)


class InvalidInputError(ConsoleError):
    """422: the input is invalid; `errors` lists each invalid field when the Console says."""

    default_code = "invalid_input"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.errors: list[FieldError] = _field_errors(self.problem.get("errors"))


class TooManyRequestsError(ConsoleError):
    """429: throttled; `retry_after` is the number of seconds to wait, when given."""

    default_code = "too_many_requests"

    def __init__(self, *args: Any, retry_after: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.retry_after = retry_after


class ServerError(ConsoleError):
    """5xx: the Console (or a proxy in front of it) failed."""

    default_code = "server_error"


class ConsoleUnavailable(ClientError):
    """The Console could not be reached (refused, reset, timed out), after any retries."""

    def __init__(self, reason: str, *, method: str, url: str, attempts: int) -> None:
        super().__init__(reason, method, url, attempts)
        self.reason = reason
        self.method = method
        self.url = url
        self.attempts = attempts

    def __str__(self) -> str:
        tries = "1 attempt" if self.attempts == 1 else f"{self.attempts} attempts"
        return f"cannot reach the Console ({self.method} {self.url}, {tries}): {self.reason}"

    def __repr__(self) -> str:
        return f"ConsoleUnavailable(reason={self.reason!r}, attempts={self.attempts})"


class UnexpectedResponse(ClientError):
    """The Console answered with success, but not with what this client expects."""

    def __init__(self, message: str, *, status: int, method: str, path: str) -> None:
        super().__init__(message)
        self.status = status
        self.method = method
        self.path = path

    def __str__(self) -> str:
        return f"{self.args[0]} ({self.method} {self.path}, status {self.status})"


_BY_STATUS: dict[int, type[ConsoleError]] = {
    400: BadRequestError,
    401: UnauthorizedError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: InvalidInputError,
    429: TooManyRequestsError,
}


def error_class(status: int) -> type[ConsoleError]:
    if status >= 500:
        return ServerError
    return _BY_STATUS.get(status, ConsoleError)


def error_from_response(response: httpx2.Response, method: str, path: str) -> ConsoleError:
    """The exception for an error response; reads the problem document when there is one."""
    problem = _problem(response)
    cls = error_class(response.status_code)
    code = _text(problem.get("code")) or cls.default_code
    detail = (
        _text(problem.get("detail"))
        or _text(problem.get("title"))
        or response.reason_phrase
        or f"HTTP {response.status_code}"
    )
    request_id = _text(problem.get("request_id")) or response.headers.get("x-request-id")
    arguments: dict[str, Any] = {"method": method, "path": path, "request_id": request_id}
    if cls is TooManyRequestsError:
        arguments["retry_after"] = retry_after_seconds(response)
    return cls(response.status_code, code, detail, problem, **arguments)


def retry_after_seconds(response: httpx2.Response) -> int | None:
    """The Retry-After header in seconds (delay-seconds or an HTTP date), if any."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isdigit():
        return int(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0, round(when.timestamp() - time.time()))


def _problem(response: httpx2.Response) -> dict[str, Any]:
    if "json" not in response.headers.get("content-type", ""):
        return {}
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _field_errors(raw: Any) -> list[FieldError]:
    if not isinstance(raw, list):
        return []
    errors = []
    for item in raw:
        if not isinstance(item, dict):
            continue
        location = item.get("location", item.get("loc", ()))
        parts = tuple(str(part) for part in location) if isinstance(location, list) else ()
        message = item.get("message", item.get("msg", ""))
        errors.append(FieldError(parts, str(message)))
    return errors
