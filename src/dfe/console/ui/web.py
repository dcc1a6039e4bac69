"""What every admin page shares: templates, the signed-in service user and the one
permission check, messages, forms, and server-side tables.

Every route but the login page declares what it needs with `requires(Action.X)`,
the same actions the API's routes name, decided by `dfe.auth.permissions.allowed`
for the service user's role: an operator reads, an administrator also writes. The
check is, in order: a live session (else a redirect to the login page), the CSRF
token on unsafe requests (else 403), the role (else 403).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

import jinja2
from fastapi import Depends, Request
from fastapi.templating import Jinja2Templates
from sqlalchemy import Select, select
from sqlalchemy.orm import Session
from starlette.responses import Response

from dfe.auth.permissions import Action, allowed
from dfe.auth.principals import Principal
from dfe.auth.tokens import password_fingerprint
from dfe.dashboard.security import CSRF_FIELD, SAFE_METHODS, check_csrf, csrf_token
from dfe.db.session import ACTOR, Database
from dfe.enums import OwnerType, ServiceRole
from dfe.models import ServiceUser
from dfe.services.listing import Field, ListQuery, Page, paginate
from dfe.webui import flash as flash
from dfe.webui import is_htmx as is_htmx
from dfe.webui import redirect as redirect
from dfe.webui import sentence as sentence
from dfe.webui import session_of as session_of
from dfe.webui import settings_of as settings_of
from dfe.webui import take_flashes

PREFIX = "/ui"
TEMPLATES_DIR = Path(__file__).parent / "templates"
PAGE_SIZE = 25


class LoginRequired(Exception):
    def __init__(self, message: str | None = None) -> None:
        super().__init__(message)
        self.message = message


class RoleRefused(Exception):
    """The signed-in service user's role does not allow the action."""

    def __init__(self, action: Action) -> None:
        super().__init__(action.value)
        self.action = action


def database_of(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


def db_session(request: Request) -> Iterator[Session]:
    with database_of(request).session() as session:
        yield session


DbDep = Annotated[Session, Depends(db_session)]


@dataclass(frozen=True)
class Operator:
    """The signed-in service user."""

    id: int
    email: str
    role: ServiceRole

    @property
    def principal(self) -> Principal:
        return Principal(
            client_id="console-ui",
            key_owner=OwnerType.SERVICE_USER,
            owner_id=self.id,
            role=self.role,
            label=self.email,
        )

    def may(self, action: Action) -> bool:
        return allowed(self.principal, action)

    @property
    def can_write(self) -> bool:
        return self.role is ServiceRole.ADMINISTRATOR

    @property
    def actor(self) -> str:
        """How the audit log and the archive name this operator."""
        return f"service_user {self.email} (console ui)"


def start_session(request: Request, person: ServiceUser) -> None:
    """A new session for `person`: the password fingerprint ends it when the password
    changes, and the account is looked up again on every request."""
    session = session_of(request)
    session.clear()
    session["uid"] = person.id
    session["fp"] = password_fingerprint(person.password_hash)
    session["expires_at"] = int(datetime.now(UTC).timestamp()) + (
        settings_of(request).user_token_ttl_seconds
    )


def _signed_in(request: Request, db: Session) -> Operator:
    session = session_of(request)
    uid, fingerprint = session.get("uid"), session.get("fp")
    if not isinstance(uid, int) or not isinstance(fingerprint, str):
        raise LoginRequired
    expires_at = session.get("expires_at")
    if not isinstance(expires_at, int) or expires_at <= datetime.now(UTC).timestamp():
        session.clear()
        raise LoginRequired("Your session has expired: please log in again.")
    person = db.get(ServiceUser, uid)
    if (
        person is None
        or not person.is_active
        or password_fingerprint(person.password_hash) != fingerprint
    ):
        session.clear()
        raise LoginRequired("Your session has ended: please log in again.")
    operator = Operator(id=person.id, email=person.email, role=person.role)
    db.info[ACTOR] = operator.actor
    db.rollback()  # give the connection back; the page opens its own work
    return operator


def requires(action: Action) -> Any:
    """The dependency every page and action declares: signed in, CSRF, then role."""

    async def check(request: Request, db: DbDep) -> Operator:
        operator = _signed_in(request, db)
        if request.method not in SAFE_METHODS:
            await check_csrf(request)
        if not operator.may(action):
            raise RoleRefused(action)
        request.state.operator = operator
        return operator

    check.action = action  # type: ignore[attr-defined]
    return Depends(check)


def action_of(dependency: Callable[..., Any]) -> Action | None:
    action: Action | None = getattr(dependency, "action", None)
    return action


# Templates


def _page_context(request: Request) -> dict[str, Any]:
    operator: Operator | None = getattr(request.state, "operator", None)
    return {
        "ui": PREFIX,
        "operator": operator,
        "csrf_token": csrf_token(request),
        "csrf_field": CSRF_FIELD,
        "take_flashes": take_flashes(request),
        "path": request.url.path,
    }


def _when(value: datetime | None) -> str:
    if value is None:
        return "—"
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _label(value: Any) -> str:
    text = str(getattr(value, "value", value))
    return text.replace("_", " ")


def make_templates() -> Jinja2Templates:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["when"] = _when
    environment.filters["label"] = _label
    return Jinja2Templates(env=environment, context_processors=[_page_context])


def render(
    request: Request, name: str, context: dict[str, Any] | None = None, *, status: int = 200
) -> Response:
    templates: Jinja2Templates = request.app.state.templates
    return templates.TemplateResponse(request, name, context or {}, status_code=status)


async def form_of(request: Request) -> dict[str, str]:
    form = await request.form()
    return {key: value for key, value in form.items() if isinstance(value, str)}


def field_errors(error: Exception) -> dict[str, str]:
    """A pydantic ValidationError as {field: message}."""
    messages: dict[str, str] = {}
    for item in getattr(error, "errors", lambda: [])():
        where = str(item["loc"][0]) if item.get("loc") else "form"
        messages.setdefault(where, sentence(str(item["msg"]).removeprefix("Value error, ")))
    return messages


# Tables: paged, sorted and searched by the database


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    sortable: bool = False


@dataclass
class Table:
    """One page of a list, with what the template needs to draw its controls."""

    rows: list[Any]
    total: int
    page: int
    pages: int
    sort: str
    q: str
    columns: Sequence[Column]
    base: str
    filters: dict[str, str] = field(default_factory=dict)

    def url(self, **changes: Any) -> str:
        params = {"q": self.q, "sort": self.sort, "page": str(self.page), **self.filters}
        params.update({key: str(value) for key, value in changes.items()})
        kept = {key: value for key, value in params.items() if value not in ("", None)}
        if kept.get("page") == "1":
            kept.pop("page")
        return self.base + ("?" + urlencode(kept) if kept else "")

    def sort_url(self, key: str) -> str:
        return self.url(
            sort=key[1:] if self.sort == f"-{key}" else (f"-{key}" if self.sort == key else key),
            page=1,
        )

    def sort_mark(self, key: str) -> str:
        if self.sort == key:
            return "▲"
        if self.sort == f"-{key}":
            return "▼"
        return ""


def choice_param(request: Request, name: str, choices: type[Enum]) -> str:
    """The query parameter `name` when it is one of the values of `choices`, else ""
    (a list shown unfiltered)."""
    value = request.query_params.get(name, "")
    return value if value in {choice.value for choice in choices} else ""


def _page_number(text: str | None) -> int:
    return int(text) if text and text.isdigit() and 0 < int(text) < 10**6 else 1


def table(
    request: Request,
    db: Session,
    query: Select[Any],
    columns: Sequence[Column],
    *,
    sortable: Mapping[str, Field],
    searchable: Sequence[Field],
    default_sort: str,
    tie_breaker: Field | None,
    filters: dict[str, str] | None = None,
) -> tuple[Table, Page[Any]]:
    """Run a list query for the page the request asks for (?q=&sort=&page=)."""
    params = request.query_params
    q = (params.get("q") or "").strip()[:200]
    sort = params.get("sort") or default_sort
    if sort.removeprefix("-") not in sortable:
        sort = default_sort
    page_number = _page_number(params.get("page"))
    listing = ListQuery(
        q=q or None, sort=sort, limit=PAGE_SIZE, cursor=str((page_number - 1) * PAGE_SIZE)
    )
    # Page through ids only (the database walks an index, not joined rows, past the
    # offset), then load the page's rows with their eager joins.
    model = query.column_descriptions[0]["entity"]
    ids = paginate(
        db,
        query.with_only_columns(model.id),
        listing,
        sortable=sortable,
        searchable=searchable,
        default_sort=default_sort,
        tie_breaker=tie_breaker,
    )
    found = {row.id: row for row in db.scalars(select(model).where(model.id.in_(ids.items)))}
    page = Page(
        items=[found[row_id] for row_id in ids.items if row_id in found],
        total=ids.total,
        next_cursor=ids.next_cursor,
    )
    pages = max(1, math.ceil(page.total / PAGE_SIZE))
    return (
        Table(
            rows=page.items,
            total=page.total,
            page=page_number,
            pages=pages,
            sort=sort,
            q=q,
            columns=columns,
            base=request.url.path,
            filters={key: value for key, value in (filters or {}).items() if value},
        ),
        page,
    )


# Forms that call a service


def attempt(
    db: Session, schema: Any, values: dict[str, Any], action: Callable[[Session, Any], Any]
) -> tuple[Any, dict[str, str], int]:
    """Validate `values` with `schema`, call `action` and commit: (result, {}, 200), or
    (None, errors by field, status) with nothing written."""
    from pydantic import ValidationError

    from dfe.services.errors import DfeError

    try:
        data = schema(**values)
    except ValidationError as error:
        return None, field_errors(error), 422
    try:
        result = action(db, data)
        db.commit()
    except DfeError as error:
        db.rollback()
        return None, {"form": sentence(error.message)}, error.status
    return result, {}, 200


def confirm_page(
    request: Request,
    *,
    title: str,
    text: str,
    action: str,
    back: str,
    typed: str | None = None,
    button: str = "Delete",
    error: str | None = None,
    status: int = 200,
) -> Response:
    """A confirmation step that works without JavaScript (typing the name, when given)."""
    return render(
        request,
        "confirm.html",
        {
            "title": title,
            "text": text,
            "typed": typed,
            "action": action,
            "button": button,
            "back": back,
            "error": error,
        },
        status=status,
    )


async def confirmed(request: Request, typed: str | None) -> bool:
    value = (await form_of(request)).get("confirm", "").strip()
    return value == typed if typed else value == "yes"
