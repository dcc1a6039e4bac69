"""Errors the services raise; each says in one line what is wrong, for any caller."""

from __future__ import annotations


class DfeError(Exception):
    """Base of every expected failure: bad input, missing things, conflicts."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(DfeError):
    status = 422
    code = "invalid_input"


class NotFound(DfeError):
    status = 404
    code = "not_found"


class Conflict(DfeError):
    status = 409
    code = "conflict"


class TooManyRequests(DfeError):
    status = 429
    code = "too_many_requests"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unauthorized(DfeError):
    status = 401
    code = "unauthorized"


class Forbidden(DfeError):
    status = 403
    code = "forbidden"
