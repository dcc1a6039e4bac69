"""Request dependencies: the database session, the verified caller, and the action check.

Every route under /api/v1 (but health and readiness) takes `requires(action)`,
which verifies the request's signature, finds the caller's key, and asks
`dfe.auth.permissions.allowed`. The route-by-principal test reads the action
from the route's dependencies, so a route without one fails it.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Annotated, Any, Literal

import anyio
from fastapi import Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from dfe.auth import tokens
from dfe.auth.nonces import ConsoleNonceStore
from dfe.auth.permissions import Action, allowed
from dfe.auth.principals import Principal
from dfe.auth.signatures import (
    USER_TOKEN_HEADER,
    SignatureError,
    UnknownKeyError,
    verify_request,
)
from dfe.config import Settings
from dfe.db.session import ACTOR, Database, execute_prebuilt
from dfe.enums import OwnerType
from dfe.models import AppKey, ServiceUser, User
from dfe.services import keys
from dfe.services.errors import Forbidden, Unauthorized
from dfe.services.listing import ListQuery

# Dependencies that do no I/O are `async def`: FastAPI runs a plain `def` dependency
# in its thread pool, a hand-over to another thread and back on every request.


async def get_database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


async def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_session(
    database: Annotated[Database, Depends(get_database)],
) -> AsyncIterator[Session]:
    """A session for the request: made here (no I/O), closed in the thread pool (closing
    may roll back over the network), also when the request is cancelled. On SQLite,
    closing is a local call that never waits: done here, without the hand-over to a
    thread and back (0.5 ms of a launch's CPU)."""
    session = database.session()
    try:
        yield session
    finally:
        if database.dialect == "sqlite":
            session.close()
        else:
            with anyio.CancelScope(shield=True):
                await run_in_threadpool(session.close)


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


async def request_body(request: Request) -> bytes:
    return await request.body()


def signed_url(request: Request, trusted_proxies: frozenset[str]) -> str:
    """The URL as the client sent it: what `@authority` and `@target-uri` were signed over.

    Forwarded scheme and host are believed only from a trusted proxy.
    """
    scheme = request.url.scheme
    authority = request.headers.get("host", "")
    peer = request.client.host if request.client else None
    if peer is not None and peer in trusted_proxies:
        scheme = request.headers.get("x-forwarded-proto", scheme).split(",")[0].strip()
        authority = request.headers.get("x-forwarded-host", authority).split(",")[0].strip()
    path = request.scope.get("raw_path", request.url.path.encode()).decode("latin-1")
    query = request.scope.get("query_string", b"").decode("latin-1")
    return f"{scheme}://{authority}{path}" + (f"?{query}" if query else "")


@dataclass(frozen=True)
class _KeyRow:
    """The columns of a key that authentication needs (a plain row: no ORM object
    on the hot path)."""

    id: int
    client_id: str
    client_secret: str
    owner_type: OwnerType
    owner_id: int | None
    label: str
    expires_at: datetime | None
    last_used_at: datetime | None


_USABLE_KEY = select(
    AppKey.id,
    AppKey.client_id,
    AppKey.client_secret,
    AppKey.owner_type,
    func.coalesce(
        AppKey.user_id,
        AppKey.service_user_id,
        AppKey.instance_id,
        AppKey.server_id,
        AppKey.mount_id,
        AppKey.cluster_id,
    ),
    AppKey.label,
    AppKey.expires_at,
    AppKey.last_used_at,
).where(AppKey.client_id == bindparam("p_client"))


def _usable_key(session: Session, client_id: str) -> _KeyRow | None:
    row = execute_prebuilt(session, _USABLE_KEY, {"p_client": client_id}).first()
    if row is None:
        return None
    key = _KeyRow(*row)
    if keys.expired(key.expires_at):
        return None
    return key


def authenticate(
    request: Request,
    body: Annotated[bytes, Depends(request_body)],
    session: SessionDep,
    settings: SettingsDep,
) -> Principal:
    """Verify the request's signature and return who sent it."""
    found: dict[str, _KeyRow] = {}

    def resolve_secret(client_id: str) -> str | None:
        key = _usable_key(session, client_id)
        if key is None:
            return None
        found[client_id] = key
        return key.client_secret

    # Through this session: its connection looked up the key, and records the nonce.
    nonces: ConsoleNonceStore = request.app.state.nonces
    try:
        verified = verify_request(
            request.method,
            signed_url(request, settings.proxies),
            request.headers,
            body,
            resolve_secret=resolve_secret,
            nonces=nonces.in_session(session),
        )
    except UnknownKeyError as error:
        raise SignatureProblem(error.code, "unknown, revoked or expired key") from None
    except SignatureError as error:
        raise SignatureProblem(error.code, error.detail) from None
    key = found[verified.client_id]
    principal = _principal(session, key, request.headers.get(USER_TOKEN_HEADER))
    if keys.use_is_due(key.last_used_at):
        stored = session.get(AppKey, key.id)
        if stored is not None and keys.record_use(session, stored):
            session.commit()
    session.info[ACTOR] = principal.actor
    request.state.principal = principal
    return principal


class SignatureProblem(Unauthorized):
    """A request whose signature did not verify; `code` says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _principal(session: Session, key: _KeyRow, user_token: str | None) -> Principal:
    base = Principal(client_id=key.client_id, key_owner=key.owner_type, owner_id=key.owner_id)
    if key.owner_type is OwnerType.SERVICE_USER:
        person = session.get(ServiceUser, key.owner_id)
        if person is None or not person.is_active:
            raise Unauthorized("this service user is deactivated")
        return replace(base, role=person.role, label=person.email)
    if key.owner_type is OwnerType.USER:
        user = session.get(User, key.owner_id)
        if user is None or not user.is_active:
            raise Unauthorized("this user is deactivated")
        return replace(base, user_id=user.id, label=user.email)
    if user_token is not None:
        if key.owner_type is not OwnerType.DASHBOARD:
            raise Unauthorized("only the Dashboard's key may present a user token")
        return replace(base, user_id=_token_user(session, key, user_token).id)
    return replace(base, label=key.label)


_LOG_IN_AGAIN = "the user token is invalid or expired: log in again"


def _token_user(session: Session, key: _KeyRow, user_token: str) -> User:
    claims = tokens.read(user_token)
    if claims is None or claims.client_id != key.client_id:
        raise SignatureProblem(
            "invalid_user_token", "the user token is invalid or expired: log in again"
        )
    user = session.get(User, claims.user_id)
    if (
        user is None
        or not user.is_active
        or tokens.password_fingerprint(user.password_hash) != claims.fingerprint
    ):
        raise SignatureProblem(
            "invalid_user_token", "the user token is invalid or expired: log in again"
        )
    return user


def requires(action: Action) -> Any:
    """A dependency that authenticates the caller and checks it may do `action`."""

    async def check(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        if not allowed(principal, action):
            raise Forbidden(f"this key may not do {action.value}")
        return principal

    check.action = action  # type: ignore[attr-defined]
    return Depends(check)


def list_query(sortable: Iterable[str]) -> Any:
    """A dependency reading ?q=&sort=&limit=&cursor=, with the sort fields this list
    offers published in the OpenAPI document (so a wrong one is a schema error)."""
    fields = sorted(sortable)
    keyword = inspect.Parameter.KEYWORD_ONLY
    parameters = [
        inspect.Parameter(
            "q",
            keyword,
            default=None,
            annotation=Annotated[str | None, Query(max_length=200, description="Search text.")],
        ),
        inspect.Parameter(
            "limit", keyword, default=50, annotation=Annotated[int, Query(ge=1, le=500)]
        ),
        inspect.Parameter(
            "cursor",
            keyword,
            default=None,
            annotation=Annotated[
                str | None,
                Query(pattern=r"^[0-9]{0,9}$", description="next_cursor of the page before."),
            ],
        ),
    ]
    if fields:
        choices = Literal.__getitem__(tuple(fields + [f"-{field}" for field in fields]))
        sort_query = Query(description="Field to sort by; a leading '-' sorts descending.")
        parameters.append(
            inspect.Parameter(
                "sort",
                keyword,
                default=None,
                annotation=Annotated[choices | None, sort_query],  # type: ignore[operator]
            )
        )

    async def read(
        q: str | None, limit: int, cursor: str | None, sort: str | None = None
    ) -> ListQuery:
        return ListQuery(q=q, sort=sort, limit=limit, cursor=cursor)

    read.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        parameters, return_annotation=ListQuery
    )
    return Depends(read)


def action_of(dependency: Callable[..., Any]) -> Action | None:
    action: Action | None = getattr(dependency, "action", None)
    return action
