"""Instances as their owners and operators see them (never a secret), and jobs."""

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from sqlalchemy import select

from dfe.auth.permissions import Action
from dfe.auth.principals import Principal
from dfe.console.api.crud import ListResponse
from dfe.console.api.deps import SessionDep, SettingsDep, list_query, requires
from dfe.enums import JobKind, JobStatus, OwnerType, ProvisionState
from dfe.models import Cluster, Instance, Job, User
from dfe.provisioning import engine
from dfe.schemas import (
    InstanceApiKey,
    InstanceChanges,
    InstanceConfig,
    InstanceCreate,
    InstanceLaunched,
    InstancePublic,
    JobPublic,
)
from dfe.services import identity, infrastructure, instances, jobs
from dfe.services.base import MAX_ID
from dfe.services.errors import Forbidden, InvalidInput
from dfe.services.listing import ListQuery, paginate

router = APIRouter(tags=["instances"])
INSTANCE_SORTS = {
    "name": Instance.name,
    "created_at": Instance.created_at,
    "provision_state": Instance.provision_state,
}
JOB_SORTS = {"created_at": Job.created_at, "status": Job.status}


def _scope(principal: Principal) -> dict[str, int | None]:
    """Which instances a caller sees: operators all, users their own, an instance itself."""
    if principal.is_operator:
        return {}
    if principal.key_owner is OwnerType.INSTANCE:
        return {"only_id": principal.owner_id}
    return {"owner_id": principal.user_id if principal.user_id is not None else -1}


@router.get("/instances", response_model=ListResponse[InstancePublic], summary="List instances")
def list_instances(
    session: SessionDep,
    principal: Annotated[Principal, requires(Action.INSTANCES_READ)],
    query: ListQuery = list_query(INSTANCE_SORTS),
    owner: Annotated[str | None, Query(max_length=192, description="Owner's email.")] = None,
    cluster: Annotated[str | None, Query(max_length=64, description="Cluster name.")] = None,
    state: Annotated[ProvisionState | None, Query(description="Provisioning state.")] = None,
) -> Any:
    selection = instances.instance_query(**_scope(principal))
    if owner is not None:
        selection = selection.where(Instance.user_id == _id_or_none(session, User, "email", owner))
    if cluster is not None:
        selection = selection.where(
            Instance.cluster_id == _id_or_none(session, Cluster, "name", cluster)
        )
    if state is not None:
        selection = selection.where(Instance.provision_state == state)
    page = paginate(
        session,
        selection,
        query,
        sortable=INSTANCE_SORTS,
        searchable=[Instance.name],
        default_sort="name",
        tie_breaker=Instance.id,
    )
    return ListResponse[InstancePublic](
        items=instances.instance_publics(session, page.items),
        total=page.total,
        next_cursor=page.next_cursor,
    )


def _web_server(principal: Principal) -> int | None:
    """A web server's key sees the instances placed on that server; administrators all."""
    return principal.owner_id if principal.key_owner is OwnerType.SERVER else None


# Declared before /instances/{name}, which would otherwise take "changes" for a name
# (the name is reserved, so no instance can have it).
@router.get(
    "/instances/changes",
    response_model=InstanceChanges,
    summary="Instances whose config changed since a cursor (the web tier polls this)",
)
def instance_changes(
    session: SessionDep,
    principal: Annotated[Principal, requires(Action.INSTANCE_CONFIG)],
    since: Annotated[
        str | None,
        Query(
            pattern=r"^[0-9]{1,19}$",
            description="The cursor of the previous answer; without it, only a cursor.",
        ),
    ] = None,
) -> Any:
    return instances.instance_changes(session, since, _web_server(principal))


@router.get(
    "/instances/{name}/config",
    response_model=InstanceConfig,
    summary="What the web tier needs to serve an instance (its database password included)",
)
def instance_config(
    name: str,
    session: SessionDep,
    principal: Annotated[Principal, requires(Action.INSTANCE_CONFIG)],
) -> Any:
    return instances.instance_config(session, name, _web_server(principal))


@router.get(
    "/instances/{name}/api-key",
    response_model=InstanceApiKey,
    summary="The key of an instance's runtime API (its owner and administrators)",
)
def instance_api_key(
    name: str,
    session: SessionDep,
    principal: Annotated[Principal, requires(Action.INSTANCE_API_KEY)],
) -> Any:
    owner_id = None if principal.is_administrator else (principal.user_id or -1)
    found = instances.instance_api_key(session, name, owner_id)
    session.commit()
    return found


def _id_or_none(session: SessionDep, model: Any, column: str, value: str) -> int | None:
    """The id of the row named `value` (a filter on an unknown name matches nothing)."""
    found: int | None = session.scalar(
        select(model.id).where(getattr(model, column) == value.strip().lower())
    )
    return found


@router.get("/instances/{name}", response_model=InstancePublic, summary="An instance's status")
def show_instance(
    name: str,
    session: SessionDep,
    principal: Annotated[Principal, requires(Action.INSTANCE_STATUS)],
) -> Any:
    return instances.find_instance(session, name, **_scope(principal))


@router.post(
    "/instances",
    response_model=InstanceLaunched,
    status_code=202,
    summary="Launch an instance (provisioned by a job)",
)
def launch_instance(
    data: InstanceCreate,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: Annotated[Principal, requires(Action.INSTANCES_WRITE)],
) -> Any:
    if data.owner is not None and not principal.is_administrator:
        raise Forbidden("only administrators may launch instances for someone else")
    if principal.user_id is not None:
        owner = identity.get_user(session, principal.user_id)
    elif data.owner is not None:
        owner = identity.get_user(session, data.owner)
    else:
        raise InvalidInput("owner: name the user who will own the instance")
    cluster = infrastructure.get_cluster(session, data.cluster or settings.default_cluster)
    instance, job = engine.launch(session, owner, data.name, cluster.id)
    return _start(request, session, job, instance.name)


@router.delete(
    "/instances/{name}",
    response_model=InstanceLaunched,
    status_code=202,
    summary="Delete an instance: its database and files go, its records to the archive",
)
def delete_instance(
    name: str,
    request: Request,
    session: SessionDep,
    principal: Annotated[Principal, requires(Action.INSTANCES_WRITE)],
) -> Any:
    instances.find_instance(session, name, **_scope(principal))  # 404 unless visible
    job = engine.request_deprovision(session, name)
    return _start(request, session, job, job.instance_name or name)


def _start(request: Request, session: SessionDep, job: Job, name: str) -> InstanceLaunched:
    """Commit the request's job (claimed in its transaction when this process runs it),
    run or queue it, and answer with instance `name` and the job as they stand then."""
    dispatcher = request.app.state.dispatcher
    claimed = dispatcher.claim(session, job)
    job_id = job.id
    session.commit()
    dispatcher.dispatch(job_id, claimed)
    return InstanceLaunched(
        instance=instances.find_instance(session, name), job=jobs.job_public(session, job_id)
    )


@router.get("/jobs", response_model=ListResponse[JobPublic], summary="List jobs")
def list_jobs(
    session: SessionDep,
    principal: Annotated[Principal, requires(Action.JOBS_READ)],
    query: ListQuery = list_query(JOB_SORTS),
    status: Annotated[JobStatus | None, Query(description="Only jobs in this state.")] = None,
    kind: Annotated[JobKind | None, Query(description="Only jobs of this kind.")] = None,
) -> Any:
    jobs = select(Job)
    if not principal.is_operator:
        jobs = jobs.where(Job.user_id == (principal.user_id or -1))
    if status is not None:
        jobs = jobs.where(Job.status == status)
    if kind is not None:
        jobs = jobs.where(Job.kind == kind)
    page = paginate(
        session,
        jobs,
        query,
        sortable=JOB_SORTS,
        searchable=[Job.instance_name],
        default_sort="-created_at",
        tie_breaker=Job.id,
    )
    return ListResponse[JobPublic](
        items=[JobPublic.model_validate(job) for job in page.items],
        total=page.total,
        next_cursor=page.next_cursor,
    )


@router.get("/jobs/{job_id}", response_model=JobPublic, summary="A job's progress")
def show_job(
    job_id: Annotated[int, Path(ge=1, le=MAX_ID)],
    session: SessionDep,
    principal: Annotated[Principal, requires(Action.JOBS_READ)],
) -> Any:
    owner_id = None if principal.is_operator else (principal.user_id or -1)
    return jobs.job_public(session, job_id, owner_id)
