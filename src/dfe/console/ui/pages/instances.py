"""Instances (state, placement, owner, jobs; provision, deprovision, lock) and jobs
(live progress, errors, retry)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path, Request
from sqlalchemy import select
from starlette.responses import Response

from dfe.auth.permissions import Action
from dfe.console.ui.web import (
    PREFIX,
    Column,
    DbDep,
    choice_param,
    flash,
    form_of,
    redirect,
    render,
    requires,
    sentence,
    table,
)
from dfe.enums import JobStatus, ProvisionState, ServerType
from dfe.jobs.queue import Dispatcher
from dfe.models import Cluster, Instance, Job, Server, User
from dfe.provisioning import engine
from dfe.services import identity, infrastructure, instances, jobs, operations, snapshots
from dfe.services.base import MAX_ID
from dfe.services.errors import DfeError

router = APIRouter()

INSTANCE_COLUMNS = [
    Column("name", "Name", True),
    Column("owner", "Owner"),
    Column("cluster", "Cluster"),
    Column("provision_state", "Provisioning", True),
    Column("operational_state", "Operation"),
    Column("servers", "Servers (db / web / app)"),
    Column("created_at", "Created", True),
]
INSTANCE_SORTS = {
    "name": Instance.name,
    "created_at": Instance.created_at,
    "provision_state": Instance.provision_state,
}


def nested_columns(other: str) -> list[Column]:
    """An instance table inside another page (a cluster's: owners; a user's: clusters)."""
    return [
        Column("name", "Name", True),
        Column(other.lower(), other),
        Column("provision_state", "State", True),
        Column("created_at", "Created", True),
    ]


JOB_COLUMNS = [
    Column("id", "Job", True),
    Column("kind", "Kind"),
    Column("instance_name", "Instance", True),
    Column("status", "Status", True),
    Column("progress", "Progress"),
    Column("message", "Error"),
    Column("created_at", "Created", True),
]
JOB_SORTS = {
    "id": Job.id,
    "created_at": Job.created_at,
    "status": Job.status,
    "instance_name": Job.instance_name,
}
LAUNCH_FIELDS = ("owner", "name", "cluster")


def _dispatch(request: Request, job_id: int) -> None:
    dispatcher: Dispatcher = request.app.state.dispatcher
    dispatcher.dispatch(job_id)


def _id_of(db: DbDep, model: Any, column: Any, value: str) -> int:
    found: int | None = db.scalar(select(model.id).where(column == value.strip().lower()))
    return found if found is not None else -1


@router.get("/instances")
def instance_list(
    request: Request, db: DbDep, _: Any = requires(Action.INSTANCES_READ)
) -> Response:
    params = request.query_params
    filters = {key: (params.get(key) or "").strip()[:192] for key in ("state", "cluster", "owner")}
    query = select(Instance)
    if filters["state"] in {state.value for state in ProvisionState}:
        query = query.where(Instance.provision_state == ProvisionState(filters["state"]))
    else:
        filters["state"] = ""
    if filters["cluster"]:
        query = query.where(
            Instance.cluster_id == _id_of(db, Cluster, Cluster.name, filters["cluster"])
        )
    if filters["owner"]:
        query = query.where(Instance.user_id == _id_of(db, User, User.email, filters["owner"]))
    listing, page = table(
        request,
        db,
        query,
        INSTANCE_COLUMNS,
        sortable=INSTANCE_SORTS,
        searchable=[Instance.name],
        default_sort="-created_at",
        tie_breaker=Instance.id,
        filters=filters,
    )
    rows = instances.instance_publics(db, page.items)
    return render(
        request,
        "instances.html",
        {
            "t": listing,
            "rows": rows,
            "filters": filters,
            "states": [state.value for state in ProvisionState],
        },
    )


def _launch_form(
    request: Request, db: DbDep, form: dict[str, str], errors: dict[str, str], status: int = 200
) -> Response:
    clusters = list(db.scalars(select(Cluster.name).order_by(Cluster.name)))
    return render(
        request,
        "instance_new.html",
        {"form": form, "errors": errors, "clusters": clusters},
        status=status,
    )


@router.get("/instances/new")
def launch_page(request: Request, db: DbDep, _: Any = requires(Action.INSTANCES_WRITE)) -> Response:
    form = {"owner": request.query_params.get("owner", ""), "name": "", "cluster": ""}
    form["cluster"] = request.app.state.settings.default_cluster
    return _launch_form(request, db, form, {})


@router.post("/instances/new")
async def launch(
    request: Request, db: DbDep, _: Any = requires(Action.INSTANCES_WRITE)
) -> Response:
    posted = await form_of(request)
    form = {key: posted.get(key, "").strip()[:192] for key in LAUNCH_FIELDS}
    errors: dict[str, str] = {}
    for key, label in (
        ("owner", "the owner's email"),
        ("name", "a name"),
        ("cluster", "a cluster"),
    ):
        if not form[key]:
            errors[key] = f"Enter {label}."
    owner = cluster = None
    if not errors:
        try:
            owner = identity.get_user(db, form["owner"].lower())
        except DfeError as error:
            errors["owner"] = sentence(error.message)
        try:
            cluster = infrastructure.get_cluster(db, form["cluster"])
        except DfeError as error:
            errors["cluster"] = sentence(error.message)
    if errors or owner is None or cluster is None:
        return _launch_form(request, db, form, errors, 422)
    try:
        instance, job = engine.launch(db, owner, form["name"], cluster.id)
        db.commit()
    except DfeError as error:
        db.rollback()
        errors["name" if error.status == 409 or "name" in error.message else "form"] = sentence(
            error.message
        )
        return _launch_form(request, db, form, errors, error.status)
    _dispatch(request, job.id)
    flash(request, f"Instance {instance.name} is being provisioned (job #{job.id}).", "success")
    return redirect(request, f"{PREFIX}/jobs/{job.id}")


@router.get("/instances/{name}")
def instance_page(
    name: str, request: Request, db: DbDep, _: Any = requires(Action.INSTANCES_READ)
) -> Response:
    shown = instances.find_instance(db, name)
    history = list(
        db.scalars(select(Job).where(Job.instance_id == shown.id).order_by(Job.id.desc()).limit(50))
    )
    live = db.get(Instance, shown.id) if not shown.archived else None
    return render(request, "instance.html", {"instance": shown, "jobs": history, "live": live})


@router.get("/instances/{name}/deprovision")
def deprovision_page(
    name: str, request: Request, db: DbDep, _: Any = requires(Action.INSTANCES_WRITE)
) -> Response:
    instance = instances.get_instance(db, name)
    return _confirm_deprovision(request, instance.name, None, 200)


def _confirm_deprovision(request: Request, name: str, error: str | None, status: int) -> Response:
    return render(
        request,
        "confirm.html",
        {
            "title": f"Deprovision {name}",
            "text": "Its database and files are deleted; its records go to the archive, "
            "where they can be restored (without the data).",
            "typed": name,
            "action": f"{PREFIX}/instances/{name}/deprovision",
            "button": "Deprovision",
            "back": f"{PREFIX}/instances/{name}",
            "error": error,
        },
        status=status,
    )


@router.post("/instances/{name}/deprovision")
async def deprovision(
    name: str, request: Request, db: DbDep, _: Any = requires(Action.INSTANCES_WRITE)
) -> Response:
    instance = instances.get_instance(db, name)
    typed = (await form_of(request)).get("confirm", "").strip()
    if typed != instance.name:
        return _confirm_deprovision(
            request, instance.name, "The name you typed does not match.", 422
        )
    try:
        job = engine.request_deprovision(db, instance.name)
        db.commit()
    except DfeError as error:
        db.rollback()
        return _confirm_deprovision(request, instance.name, sentence(error.message), error.status)
    _dispatch(request, job.id)
    flash(request, f"Instance {instance.name} is being deprovisioned (job #{job.id}).", "success")
    return redirect(request, f"{PREFIX}/jobs/{job.id}")


@router.get("/instances/{name}/move")
def move_page(
    name: str, request: Request, db: DbDep, _: Any = requires(Action.INSTANCES_MOVE)
) -> Response:
    return _move_form(request, db, instances.get_instance(db, name), None, 200)


def _move_form(
    request: Request, db: DbDep, instance: Instance, error: str | None, status: int
) -> Response:
    targets = db.scalars(
        select(Server.name)
        .where(
            Server.server_type == ServerType.DB,
            Server.is_enabled.is_(True),
            Server.id != instance.db_server_id,
        )
        .order_by(Server.name)
    )
    return render(
        request,
        "move.html",
        {"instance": instance, "targets": list(targets), "error": error},
        status=status,
    )


@router.post("/instances/{name}/move")
async def move(
    name: str, request: Request, db: DbDep, _: Any = requires(Action.INSTANCES_MOVE)
) -> Response:
    instance = instances.get_instance(db, name)
    target = (await form_of(request)).get("db_server", "")
    try:
        job = snapshots.request_move(db, instance, target)
        db.commit()
    except DfeError as error:
        db.rollback()
        return _move_form(request, db, instance, sentence(error.message), error.status)
    _dispatch(request, job.id)
    flash(request, f"Instance {instance.name} is moving to {target} (job #{job.id}).", "success")
    return redirect(request, f"{PREFIX}/jobs/{job.id}")


@router.post("/instances/{name}/lock")
def lock(
    name: str, request: Request, db: DbDep, _: Any = requires(Action.INSTANCES_WRITE)
) -> Response:
    return _set_locked(request, db, name, True)


@router.post("/instances/{name}/unlock")
def unlock(
    name: str, request: Request, db: DbDep, _: Any = requires(Action.INSTANCES_WRITE)
) -> Response:
    return _set_locked(request, db, name, False)


def _set_locked(request: Request, db: DbDep, name: str, locked: bool) -> Response:
    try:
        instance = operations.set_locked(db, name, locked)
        db.commit()
        flash(
            request, f"Instance {instance.name} is {'locked' if locked else 'unlocked'}.", "success"
        )
    except DfeError as error:
        db.rollback()
        flash(request, sentence(error.message), "danger")
    return redirect(request, f"{PREFIX}/instances/{name}")


# Jobs


@router.get("/jobs")
def job_list(request: Request, db: DbDep, _: Any = requires(Action.JOBS_READ)) -> Response:
    status = choice_param(request, "status", JobStatus)
    query = select(Job)
    if status:
        query = query.where(Job.status == JobStatus(status))
    listing, _page = table(
        request,
        db,
        query,
        JOB_COLUMNS,
        sortable=JOB_SORTS,
        searchable=[Job.instance_name],
        default_sort="-id",
        tie_breaker=None,
        filters={"status": status},
    )
    active = any(job.status in (JobStatus.QUEUED, JobStatus.RUNNING) for job in listing.rows)
    return render(
        request,
        "jobs.html",
        {
            "t": listing,
            "status": status,
            "statuses": [value.value for value in JobStatus],
            "active": active,
        },
    )


@router.get("/jobs/{job_id}")
def job_page(
    request: Request,
    db: DbDep,
    job_id: int = Path(ge=1, le=MAX_ID),
    _: Any = requires(Action.JOBS_READ),
) -> Response:
    job = jobs.get_job(db, job_id)
    retryable = job.status is JobStatus.FAILED
    return render(request, "job.html", {"job": job, "retryable": retryable})


@router.post("/jobs/{job_id}/retry")
def retry(
    request: Request,
    db: DbDep,
    job_id: int = Path(ge=1, le=MAX_ID),
    _: Any = requires(Action.INSTANCES_WRITE),
) -> Response:
    try:
        job = operations.retry_job(db, job_id)
        db.commit()
    except DfeError as error:
        db.rollback()
        flash(request, sentence(error.message), "danger")
        return redirect(request, f"{PREFIX}/jobs/{job_id}")
    _dispatch(request, job.id)
    flash(request, f"Job #{job_id} is retried as job #{job.id}.", "success")
    return redirect(request, f"{PREFIX}/jobs/{job.id}")
