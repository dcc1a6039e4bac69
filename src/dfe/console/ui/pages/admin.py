"""App keys (the secret shown once; revoke, rotate), rate limits, the audit log and the
archive (browse; restore, with the conflict explained when it cannot)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy import select
from starlette.responses import Response

from dfe.auth.permissions import Action
from dfe.console.ui.web import (
    PAGE_SIZE,
    PREFIX,
    Column,
    DbDep,
    attempt,
    choice_param,
    confirm_page,
    flash,
    form_of,
    redirect,
    render,
    requires,
    sentence,
    settings_of,
    table,
)
from dfe.enums import LimitPeriod, LimitScope, OwnerType
from dfe.models import AppKey, AuditEntry, Limit
from dfe.schemas import KeyCreate, LimitCreate, LimitUpdate
from dfe.services import archive, audit, keys, limits
from dfe.services.errors import DfeError, NotFound

router = APIRouter()

# App keys

KEY_COLUMNS = [
    Column("client_id", "Client id", True),
    Column("owner_type", "Owner", True),
    Column("label", "Label", True),
    Column("created_at", "Created", True),
    Column("last_used_at", "Last used"),
    Column("expires_at", "Expires"),
]
KEY_SORTS = {
    "client_id": AppKey.client_id,
    "owner_type": AppKey.owner_type,
    "label": AppKey.label,
    "created_at": AppKey.created_at,
}
KEY_FIELDS = ("owner_type", "owner", "label")


def _keys(
    request: Request, db: DbDep, form: dict[str, str], errors: dict[str, str], status: int = 200
) -> Response:
    owner_type = choice_param(request, "owner_type", OwnerType)
    query = select(AppKey)
    if owner_type:
        query = query.where(AppKey.owner_type == OwnerType(owner_type))
    listing, _page = table(
        request,
        db,
        query,
        KEY_COLUMNS,
        sortable=KEY_SORTS,
        searchable=[AppKey.client_id, AppKey.label],
        default_sort="-created_at",
        tie_breaker=AppKey.id,
        filters={"owner_type": owner_type},
    )
    return render(
        request,
        "keys.html",
        {
            "t": listing,
            "owner_type": owner_type,
            "owner_types": [value.value for value in OwnerType],
            "form": form,
            "errors": errors,
        },
        status=status,
    )


@router.get("/keys")
def key_list(request: Request, db: DbDep, _: Any = requires(Action.KEYS_READ)) -> Response:
    form = {**dict.fromkeys(KEY_FIELDS, ""), "owner_type": OwnerType.SERVICE_USER.value}
    return _keys(request, db, form, {})


def _shown_once(request: Request, key: Any, title: str) -> Response:
    return render(request, "key_secret.html", {"key": key, "title": title})


@router.post("/keys")
async def key_create(request: Request, db: DbDep, _: Any = requires(Action.KEYS_WRITE)) -> Response:
    posted = await form_of(request)
    form = {key: posted.get(key, "").strip() for key in KEY_FIELDS}

    def create(session: Any, data: KeyCreate) -> Any:
        owner_id = keys.resolve_owner(session, data.owner_type, data.owner)
        return keys.create_key(session, data.owner_type, owner_id, label=data.label)

    values = {**form, "owner": form["owner"] or None}
    key, errors, status = attempt(db, KeyCreate, values, create)
    if key is None:
        return _keys(request, db, form, errors, status)
    return _shown_once(request, key, "Key created")


@router.get("/keys/{client_id}/revoke")
def key_revoke_page(
    client_id: str, request: Request, db: DbDep, _: Any = requires(Action.KEYS_WRITE)
) -> Response:
    key = keys.get_key(db, client_id)
    return confirm_page(
        request,
        title=f"Revoke key {key.client_id}",
        text=f"Whatever uses this key ({key.owner_type.value} {key.label}) is refused from now on.",
        typed=key.client_id,
        action=f"{PREFIX}/keys/{key.client_id}/revoke",
        back=f"{PREFIX}/keys",
        button="Revoke",
    )


@router.post("/keys/{client_id}/revoke")
async def key_revoke(
    client_id: str, request: Request, db: DbDep, _: Any = requires(Action.KEYS_WRITE)
) -> Response:
    if (await form_of(request)).get("confirm", "").strip() != client_id:
        flash(request, "The client id you typed does not match: nothing changed.", "warning")
        return redirect(request, f"{PREFIX}/keys/{client_id}/revoke")
    keys.revoke_key(db, client_id)
    db.commit()
    flash(request, f"Key {client_id} revoked.", "success")
    return redirect(request, f"{PREFIX}/keys")


@router.post("/keys/{client_id}/rotate")
def key_rotate(
    client_id: str, request: Request, db: DbDep, _: Any = requires(Action.KEYS_WRITE)
) -> Response:
    grace = timedelta(hours=settings_of(request).key_rotation_grace_hours)
    try:
        key = keys.rotate_key(db, client_id, grace)
        db.commit()
    except DfeError as error:
        db.rollback()
        flash(request, sentence(error.message), "danger")
        return redirect(request, f"{PREFIX}/keys")
    return _shown_once(request, key, f"Successor of {client_id}")


# Limits

LIMIT_COLUMNS = [
    Column("label", "Label", True),
    Column("scope", "Scope"),
    Column("target", "Target"),
    Column("rate", "Rate"),
    Column("is_active", "Active"),
    Column("actions", ""),
]
LIMIT_SORTS = {"label": Limit.label, "created_at": Limit.created_at}
LIMIT_FIELDS = ("label", "scope", "target", "period", "max_requests")


def _limits(
    request: Request, db: DbDep, form: dict[str, str], errors: dict[str, str], status: int = 200
) -> Response:
    listing, page = table(
        request,
        db,
        select(Limit),
        LIMIT_COLUMNS,
        sortable=LIMIT_SORTS,
        searchable=[Limit.label],
        default_sort="label",
        tie_breaker=Limit.id,
    )
    return render(
        request,
        "limits.html",
        {
            "t": listing,
            "rows": limits.limit_publics(db, page.items),
            "form": form,
            "errors": errors,
            "scopes": [value.value for value in LimitScope],
            "periods": [value.value for value in LimitPeriod],
        },
        status=status,
    )


@router.get("/limits")
def limit_list(request: Request, db: DbDep, _: Any = requires(Action.LIMITS_READ)) -> Response:
    form = {**dict.fromkeys(LIMIT_FIELDS, ""), "scope": "cluster", "period": "minute"}
    return _limits(request, db, form, {})


@router.post("/limits")
async def limit_create(
    request: Request, db: DbDep, _: Any = requires(Action.LIMITS_WRITE)
) -> Response:
    posted = await form_of(request)
    form = {key: posted.get(key, "").strip() for key in LIMIT_FIELDS}
    target_field = {"cluster": "cluster", "instance": "instance", "key": "client_id"}.get(
        form["scope"], "cluster"
    )
    values: dict[str, Any] = {
        "label": form["label"],
        "scope": form["scope"],
        "period": form["period"],
        "max_requests": form["max_requests"] or None,
        target_field: form["target"] or None,
    }
    limit, errors, status = attempt(db, LimitCreate, values, limits.create_limit)
    if limit is None:
        if target_field in errors:
            errors["target"] = errors.pop(target_field)
        return _limits(request, db, form, errors, status)
    flash(request, f"Limit {limit.label} created.", "success")
    return redirect(request, f"{PREFIX}/limits")


@router.post("/limits/{label}/toggle")
def limit_toggle(
    label: str, request: Request, db: DbDep, _: Any = requires(Action.LIMITS_WRITE)
) -> Response:
    limit = limits.get_limit(db, label)
    limits.update_limit(db, limit.id, LimitUpdate(is_active=not limit.is_active))
    db.commit()
    flash(request, f"Limit {label} is {'on' if limit.is_active else 'off'}.", "success")
    return redirect(request, f"{PREFIX}/limits")


@router.post("/limits/{label}/reset")
def limit_reset(
    label: str, request: Request, db: DbDep, _: Any = requires(Action.LIMITS_WRITE)
) -> Response:
    settings = settings_of(request)
    limits.reset_limits(db, [label], settings.redis_url, settings.redis_namespace)
    db.commit()
    flash(request, f"The counters of limit {label} start from zero again.", "success")
    return redirect(request, f"{PREFIX}/limits")


@router.get("/limits/{label}/delete")
def limit_delete_page(
    label: str, request: Request, db: DbDep, _: Any = requires(Action.LIMITS_WRITE)
) -> Response:
    limit = limits.get_limit(db, label)
    return confirm_page(
        request,
        title=f"Delete limit {limit.label}",
        text="Requests it throttled are no longer limited by it.",
        action=f"{PREFIX}/limits/{limit.label}/delete",
        back=f"{PREFIX}/limits",
    )


@router.post("/limits/{label}/delete")
async def limit_delete(
    label: str, request: Request, db: DbDep, _: Any = requires(Action.LIMITS_WRITE)
) -> Response:
    if (await form_of(request)).get("confirm") != "yes":
        return redirect(request, f"{PREFIX}/limits/{label}/delete")
    limits.delete_limit(db, label)
    db.commit()
    flash(request, f"Limit {label} deleted.", "success")
    return redirect(request, f"{PREFIX}/limits")


# The audit log

AUDIT_COLUMNS = [
    Column("at", "When", True),
    Column("actor", "Actor"),
    Column("action", "Action"),
    Column("target", "Target"),
    Column("change", "Change"),
]


def _moment(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@router.get("/audit")
def audit_log(request: Request, db: DbDep, _: Any = requires(Action.AUDIT_READ)) -> Response:
    params = request.query_params
    filters = {
        key: (params.get(key) or "").strip()[:255]
        for key in ("actor", "target", "action", "since", "until")
    }
    errors: dict[str, str] = {}
    moments: dict[str, datetime | None] = {}
    for key in ("since", "until"):
        moments[key] = _moment(filters[key]) if filters[key] else None
        if filters[key] and moments[key] is None:
            errors[key] = "Enter a date (YYYY-MM-DD) or a date and time."
    query = audit.entry_query(
        actor=filters["actor"] or None,
        target=filters["target"] or None,
        action=filters["action"] or None,
        since=moments["since"],
        until=moments["until"],
    )
    listing, _page = table(
        request,
        db,
        query,
        AUDIT_COLUMNS,
        sortable={"at": AuditEntry.at},
        searchable=[AuditEntry.target_name, AuditEntry.action],
        default_sort="-at",
        tie_breaker=AuditEntry.id,
        filters=filters,
    )
    return render(
        request,
        "audit.html",
        {"t": listing, "filters": filters, "errors": errors},
        status=422 if errors else 200,
    )


# The archive

ARCHIVE_KINDS = {"clusters": "cluster", "servers": "server", "instances": "instance"}


def _kind(kinds: str) -> str:
    if kinds not in ARCHIVE_KINDS:
        raise NotFound(f"the archive keeps clusters, servers and instances, not '{kinds}'")
    return ARCHIVE_KINDS[kinds]


@router.get("/archive")
def archive_home(request: Request, _: Any = requires(Action.ARCHIVE_READ)) -> Response:
    return redirect(request, f"{PREFIX}/archive/instances")


@router.get("/archive/{kinds}")
def archive_list(
    kinds: str, request: Request, db: DbDep, _: Any = requires(Action.ARCHIVE_READ)
) -> Response:
    kind = _kind(kinds)
    q = (request.query_params.get("q") or "").strip()[:200]
    page_text = request.query_params.get("page") or "1"
    page = int(page_text) if page_text.isdigit() and 0 < int(page_text) < 10**6 else 1
    rows, total = archive.list_archived(
        db, kind, name=q or None, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE
    )
    pages = max(1, -(-total // PAGE_SIZE))
    return render(
        request,
        "archive.html",
        {
            "kinds": kinds,
            "kind": kind,
            "rows": rows,
            "total": total,
            "q": q,
            "page": page,
            "pages": pages,
        },
    )


def _archived(
    request: Request, db: DbDep, kinds: str, ref: str, error: str | None = None, status: int = 200
) -> Response:
    row = archive.show_archived(db, _kind(kinds), ref)
    return render(
        request,
        "archived.html",
        {
            "kinds": kinds,
            "row": row,
            "document": json.dumps(row.row, indent=2, default=str),
            "error": error,
        },
        status=status,
    )


@router.get("/archive/{kinds}/{ref}")
def archived_page(
    kinds: str, ref: str, request: Request, db: DbDep, _: Any = requires(Action.ARCHIVE_READ)
) -> Response:
    return _archived(request, db, kinds, ref)


@router.post("/archive/{kinds}/{ref}/restore")
def archived_restore(
    kinds: str, ref: str, request: Request, db: DbDep, _: Any = requires(Action.ARCHIVE_WRITE)
) -> Response:
    kind = _kind(kinds)
    try:
        restored = archive.restore(db, kind, ref)
        db.commit()
    except DfeError as error:
        db.rollback()
        if isinstance(error, NotFound):
            raise
        return _archived(request, db, kinds, ref, sentence(error.message), error.status)
    flash(request, f"{kind.capitalize()} {restored.name} is restored.", "success")
    return redirect(request, f"{PREFIX}/{kinds}/{restored.name}")
