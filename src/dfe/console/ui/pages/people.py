"""Users (activate, deactivate; their instances and keys) and service users."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy import func, select
from starlette.responses import Response

from dfe.auth.permissions import Action
from dfe.console.ui.pages.instances import INSTANCE_SORTS, nested_columns
from dfe.console.ui.web import (
    PREFIX,
    Column,
    DbDep,
    Operator,
    attempt,
    confirm_page,
    confirmed,
    flash,
    form_of,
    redirect,
    render,
    requires,
    sentence,
    table,
)
from dfe.enums import ServiceRole
from dfe.models import AppKey, Instance, ServiceUser, User
from dfe.schemas import MIN_PASSWORD_LENGTH, ServiceUserCreate, ServiceUserUpdate, UserUpdate
from dfe.services import identity, instances
from dfe.services.errors import DfeError

router = APIRouter()

USER_COLUMNS = [
    Column("email", "Email", True),
    Column("last_name", "Name", True),
    Column("is_active", "Active"),
    Column("instances", "Instances"),
    Column("last_login_at", "Last login"),
    Column("created_at", "Created", True),
]
USER_SORTS = {"email": User.email, "last_name": User.last_name, "created_at": User.created_at}


@router.get("/users")
def user_list(request: Request, db: DbDep, _: Any = requires(Action.PEOPLE_READ)) -> Response:
    listing, page = table(
        request,
        db,
        select(User),
        USER_COLUMNS,
        sortable=USER_SORTS,
        searchable=[User.email, User.first_name, User.last_name],
        default_sort="email",
        tie_breaker=User.id,
    )
    ids = [user.id for user in page.items]
    counts = dict(
        db.execute(
            select(Instance.user_id, func.count())
            .where(Instance.user_id.in_(ids))
            .group_by(Instance.user_id)
        ).all()
    )
    return render(request, "users.html", {"t": listing, "counts": counts})


@router.get("/users/{email}")
def user_page(
    email: str, request: Request, db: DbDep, _: Any = requires(Action.PEOPLE_READ)
) -> Response:
    user = identity.get_user(db, email)
    listing, page = table(
        request,
        db,
        select(Instance).where(Instance.user_id == user.id),
        nested_columns("Cluster"),
        sortable=INSTANCE_SORTS,
        searchable=[Instance.name],
        default_sort="name",
        tie_breaker=Instance.id,
    )
    keys = list(db.scalars(select(AppKey).where(AppKey.user_id == user.id).order_by(AppKey.id)))
    return render(
        request,
        "user.html",
        {
            "user": user,
            "t": listing,
            "rows": instances.instance_publics(db, page.items),
            "keys": keys,
        },
    )


@router.post("/users/{email}/activate")
def user_activate(
    email: str, request: Request, db: DbDep, _: Any = requires(Action.PEOPLE_WRITE)
) -> Response:
    user = identity.update_user(db, email, UserUpdate(is_active=True))
    db.commit()
    flash(request, f"User {user.email} is active: they can log in.", "success")
    return redirect(request, f"{PREFIX}/users/{user.email}")


@router.get("/users/{email}/deactivate")
def user_deactivate_page(
    email: str, request: Request, db: DbDep, _: Any = requires(Action.PEOPLE_WRITE)
) -> Response:
    user = identity.get_user(db, email)
    return confirm_page(
        request,
        title=f"Deactivate {user.email}",
        text="They can no longer log in or use their keys; their instances keep running.",
        typed=user.email,
        action=f"{PREFIX}/users/{user.email}/deactivate",
        back=f"{PREFIX}/users/{user.email}",
        button="Deactivate",
    )


@router.post("/users/{email}/deactivate")
async def user_deactivate(
    email: str, request: Request, db: DbDep, _: Any = requires(Action.PEOPLE_WRITE)
) -> Response:
    user = identity.get_user(db, email)
    if not await confirmed(request, user.email):
        flash(request, "The email you typed does not match: nothing changed.", "warning")
        return redirect(request, f"{PREFIX}/users/{user.email}/deactivate")
    identity.update_user(db, user.id, UserUpdate(is_active=False))
    db.commit()
    flash(request, f"User {user.email} is deactivated.", "success")
    return redirect(request, f"{PREFIX}/users/{user.email}")


# Service users

SERVICE_USER_COLUMNS = [
    Column("email", "Email", True),
    Column("name", "Name"),
    Column("role", "Role"),
    Column("is_active", "Active"),
    Column("last_login_at", "Last login"),
    Column("created_at", "Created", True),
]
SERVICE_USER_SORTS = {"email": ServiceUser.email, "created_at": ServiceUser.created_at}
SERVICE_USER_FIELDS = ("email", "first_name", "last_name", "role")


def _service_users(
    request: Request, db: DbDep, form: dict[str, str], errors: dict[str, str], status: int = 200
) -> Response:
    listing, _page = table(
        request,
        db,
        select(ServiceUser),
        SERVICE_USER_COLUMNS,
        sortable=SERVICE_USER_SORTS,
        searchable=[ServiceUser.email, ServiceUser.first_name, ServiceUser.last_name],
        default_sort="email",
        tie_breaker=ServiceUser.id,
    )
    return render(
        request,
        "service_users.html",
        {
            "t": listing,
            "form": form,
            "errors": errors,
            "roles": [role.value for role in ServiceRole],
            "min_password": MIN_PASSWORD_LENGTH,
        },
        status=status,
    )


@router.get("/service-users")
def service_user_list(
    request: Request, db: DbDep, _: Any = requires(Action.PEOPLE_READ)
) -> Response:
    form = {**dict.fromkeys(SERVICE_USER_FIELDS, ""), "role": ServiceRole.OPERATOR.value}
    return _service_users(request, db, form, {})


@router.post("/service-users")
async def service_user_create(
    request: Request, db: DbDep, _: Any = requires(Action.PEOPLE_WRITE)
) -> Response:
    posted = await form_of(request)
    form = {key: posted.get(key, "").strip() for key in SERVICE_USER_FIELDS}
    values: dict[str, Any] = {**form, "password": posted.get("password", "")}
    person, errors, status = attempt(db, ServiceUserCreate, values, identity.create_service_user)
    if person is None:
        return _service_users(request, db, form, errors, status)
    flash(request, f"Service user {person.email} created ({person.role.value}).", "success")
    return redirect(request, f"{PREFIX}/service-users/{person.email}")


@router.get("/service-users/{email}")
def service_user_page(
    email: str, request: Request, db: DbDep, _: Any = requires(Action.PEOPLE_READ)
) -> Response:
    person = identity.get_service_user(db, email)
    return render(
        request,
        "service_user.html",
        {"person": person, "roles": [role.value for role in ServiceRole]},
    )


@router.post("/service-users/{email}")
async def service_user_update(
    email: str, request: Request, db: DbDep, operator: Operator = requires(Action.PEOPLE_WRITE)
) -> Response:
    person = identity.get_service_user(db, email)
    posted = await form_of(request)
    values: dict[str, Any] = {}
    if posted.get("role"):
        values["role"] = posted["role"]
    if posted.get("is_active") in ("true", "false"):
        values["is_active"] = posted["is_active"] == "true"
    if posted.get("password"):
        values["password"] = posted["password"]
    if person.id == operator.id and (
        values.get("is_active") is False or values.get("role") == ServiceRole.OPERATOR.value
    ):
        flash(request, "You cannot deactivate yourself or take away your own role.", "danger")
        return redirect(request, f"{PREFIX}/service-users/{person.email}")

    def change(session: Any, data: ServiceUserUpdate) -> ServiceUser:
        return identity.update_service_user(session, person.id, data)

    updated, errors, _status = attempt(db, ServiceUserUpdate, values, change)
    if updated is None:
        flash(request, " ".join(errors.values()), "danger")
    else:
        flash(request, f"Service user {updated.email} updated.", "success")
    return redirect(request, f"{PREFIX}/service-users/{person.email}")


@router.get("/service-users/{email}/delete")
def service_user_delete_page(
    email: str, request: Request, db: DbDep, _: Any = requires(Action.PEOPLE_WRITE)
) -> Response:
    person = identity.get_service_user(db, email)
    return confirm_page(
        request,
        title=f"Delete service user {person.email}",
        text="They can no longer log in; their keys are destroyed.",
        typed=person.email,
        action=f"{PREFIX}/service-users/{person.email}/delete",
        back=f"{PREFIX}/service-users/{person.email}",
    )


@router.post("/service-users/{email}/delete")
async def service_user_delete(
    email: str, request: Request, db: DbDep, operator: Operator = requires(Action.PEOPLE_WRITE)
) -> Response:
    person = identity.get_service_user(db, email)
    if person.id == operator.id:
        flash(request, "You cannot delete yourself.", "danger")
        return redirect(request, f"{PREFIX}/service-users/{person.email}")
    if not await confirmed(request, person.email):
        flash(request, "The email you typed does not match: nothing changed.", "warning")
        return redirect(request, f"{PREFIX}/service-users/{person.email}")
    try:
        identity.delete_service_user(db, person.id)
        db.commit()
    except DfeError as error:
        db.rollback()
        flash(request, sentence(error.message), "danger")
        return redirect(request, f"{PREFIX}/service-users/{person.email}")
    flash(request, f"Service user {person.email} deleted.", "success")
    return redirect(request, f"{PREFIX}/service-users")
