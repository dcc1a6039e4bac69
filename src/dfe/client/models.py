"""Shapes the client returns besides dfe.schemas: pages, logins, health and readiness.

The Console defines the login answer next to its route (in `dfe.console`, which
needs the server's dependencies), so the client mirrors it here.
"""

from __future__ import annotations

import enum
from typing import Generic, TypeVar

from pydantic import BaseModel, Field

from dfe.schemas import UserPublic

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """One page of a list; pass `next_cursor` as `cursor` for the next (None: the last page)."""

    items: list[T]
    total: int
    next_cursor: str | None = None


class ArchiveKind(enum.StrEnum):
    """What the archive routes keep: `GET /archive/{kind}`."""

    CLUSTERS = "clusters"
    SERVERS = "servers"
    INSTANCES = "instances"


class LoginResponse(BaseModel):
    """A checked login: the user, and a short-lived token to act for them.

    Send the token with the same key that logged in: `client.with_user_token(token)`.
    """

    user: UserPublic
    token: str = Field(repr=False)
    expires_at: int


class Health(BaseModel):
    status: str
    version: str | None = None


class Readiness(BaseModel):
    """`GET /ready`: "ready" with the schema revision, or "unavailable" with a reason."""

    status: str
    schema_revision: str | None = Field(default=None, alias="schema")
    reason: str | None = None

    @property
    def ready(self) -> bool:
        return self.status == "ready"
