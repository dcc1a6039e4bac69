"""The ops client: a typed Python client of the Console API that signs every request.

`ConsoleClient` (blocking) and `AsyncConsoleClient` (asyncio) have one method per
API route, taking and returning the models of `dfe.schemas`. They need only
httpx2, pydantic and the signing code, not the server's dependencies.

    from dfe.client import ConsoleClient
    from dfe.schemas import ClusterCreate

    with ConsoleClient.from_key_file("var/console.key") as console:
        console.create_cluster(ClusterCreate(name="eu-1", subdomain="eu.example.com"))
"""

from dfe.client.aio import AsyncConsoleClient
from dfe.client.calls import Call, Ref
from dfe.client.errors import (
    BadRequestError,
    ClientError,
    ConflictError,
    ConsoleError,
    ConsoleUnavailable,
    FieldError,
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
    PayloadTooLargeError,
    ServerError,
    TooManyRequestsError,
    UnauthorizedError,
    UnexpectedResponse,
)
from dfe.client.models import ArchiveKind, Health, LoginResponse, Page, Readiness
from dfe.client.signing import AppKeyAuth
from dfe.client.sync import ConsoleClient

__all__ = [
    "AppKeyAuth",
    "ArchiveKind",
    "AsyncConsoleClient",
    "BadRequestError",
    "Call",
    "ClientError",
    "ConflictError",
    "ConsoleClient",
    "ConsoleError",
    "ConsoleUnavailable",
    "FieldError",
    "ForbiddenError",
    "Health",
    "InvalidInputError",
    "LoginResponse",
    "NotFoundError",
    "Page",
    "PayloadTooLargeError",
    "Readiness",
    "Ref",
    "ServerError",
    "TooManyRequestsError",
    "UnauthorizedError",
    "UnexpectedResponse",
]
