"""The user's instances: the list (with live states), launch, details and delete."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from dfe.client import ConsoleError, InvalidInputError, NotFoundError
from dfe.dashboard.web import (
    SignedIn,
    SignedInDep,
    flash,
    form_of,
    is_htmx,
    redirect,
    render,
    sentence,
    settings_of,
)
from dfe.enums import OperationalState, ProvisionState
from dfe.schemas import InstanceApiKey, InstanceCreate, InstancePublic
from dfe.services.names import MAX_LENGTH, MIN_LENGTH, instance_name_problem

router = APIRouter()

POLL_SECONDS = 2
# Console lists are paged; a user with more instances than this sees the newest ones.
MAX_LISTED = 200


@dataclass(frozen=True)
class StateView:
    """How a provisioning state reads to a user; pending states are polled."""

    label: str
    style: str
    pending: bool
    reachable: bool = False


STATES = {
    ProvisionState.CREATED: StateView("being created", "secondary", True),
    ProvisionState.PROVISIONING: StateView("being created", "info", True),
    ProvisionState.PROVISIONED: StateView("running", "success", False, reachable=True),
    ProvisionState.PROVISIONING_ERROR: StateView("failed", "danger", False),
    ProvisionState.DEPROVISIONING: StateView("being deleted", "warning", True),
    ProvisionState.DEPROVISIONED: StateView("deleted", "secondary", False),
    ProvisionState.DEPROVISIONING_ERROR: StateView("deletion failed", "danger", False),
}
FAILED_STATES = frozenset({ProvisionState.PROVISIONING_ERROR, ProvisionState.DEPROVISIONING_ERROR})
DELETABLE_STATES = frozenset({ProvisionState.PROVISIONED, *FAILED_STATES})


def state_view(instance: InstancePublic) -> StateView:
    if instance.archived:
        return STATES[ProvisionState.DEPROVISIONED]
    view = STATES[instance.provision_state]
    if (
        instance.provision_state is ProvisionState.PROVISIONED
        and instance.operational_state is not OperationalState.ACTIVATED
    ):
        label = instance.operational_state.value.replace("_", " ")
        return StateView(label, "warning", False, reachable=True)
    return view


@dataclass(frozen=True)
class InstanceRow:
    instance: InstancePublic
    state: StateView
    url: str
    message: str | None
    deletable: bool


@dataclass(frozen=True)
class NameCheck:
    """The launch form's verdict on a name: a problem to fix, or the host it gives."""

    problem: str | None
    host: str | None


def instance_url(request: Request, host: str) -> str:
    return settings_of(request).effective_instance_url.replace("{host}", host)


async def _failure_message(user: SignedIn, name: str) -> str | None:
    """What the last job of a failed instance said."""
    page = await user.console.list_jobs(q=name, limit=20)
    for job in page.items:
        if job.instance_name == name:
            return job.message
    return None


async def _rows(request: Request, user: SignedIn) -> list[InstanceRow]:
    page = await user.console.list_instances(sort="-created_at", limit=MAX_LISTED)
    rows = []
    for instance in page.items:
        failed = instance.provision_state in FAILED_STATES
        rows.append(
            InstanceRow(
                instance=instance,
                state=state_view(instance),
                url=instance_url(request, instance.host),
                message=await _failure_message(user, instance.name) if failed else None,
                deletable=instance.provision_state in DELETABLE_STATES,
            )
        )
    return rows


def _list_context(rows: list[InstanceRow]) -> dict[str, Any]:
    return {
        "rows": rows,
        "polling": any(row.state.pending for row in rows),
        "poll_seconds": POLL_SECONDS,
    }


def _name_problem(name: str) -> str | None:
    problem = instance_name_problem(name)
    return f"The name {problem}." if problem else None


async def _check_name(request: Request, user: SignedIn, name: str) -> NameCheck:
    problem = _name_problem(name)
    if problem:
        return NameCheck(problem, None)
    try:
        existing = await user.console.get_instance(name)
    except NotFoundError:
        existing = None
    if existing is not None and not existing.archived:
        return NameCheck(f"You already have an instance named {name}.", None)
    return NameCheck(None, f"{name}.{settings_of(request).dashboard_instance_domain}")


async def _home(
    request: Request,
    user: SignedIn,
    *,
    name: str = "",
    error: str | None = None,
    status: int = 200,
) -> Response:
    context = {
        **_list_context(await _rows(request, user)),
        "name": name,
        "error": error,
        "check": NameCheck(error, None) if error else None,
        "instance_domain": settings_of(request).dashboard_instance_domain,
        "min_length": MIN_LENGTH,
        "max_length": MAX_LENGTH,
    }
    return render(request, "home.html", context, status=status)


@router.get("/")
async def home(request: Request, user: SignedInDep) -> Response:
    return await _home(request, user)


@router.get("/fragments/instances")
async def instance_list(request: Request, user: SignedInDep) -> Response:
    """The list alone: what the home page polls while an instance is pending."""
    return render(request, "_instances.html", _list_context(await _rows(request, user)))


@router.get("/fragments/name-check")
async def name_check(request: Request, user: SignedInDep, name: str = "") -> Response:
    """The launch form's live check of the name being typed."""
    name = name.strip()
    check = await _check_name(request, user, name) if name else None
    return render(request, "_name_check.html", {"check": check})


@router.post("/instances")
async def launch(request: Request, user: SignedInDep) -> Response:
    name = (await form_of(request)).get("name", "").strip()
    problem = _name_problem(name)
    if problem:
        return await _home(request, user, name=name, error=problem, status=422)
    try:
        launched = await user.console.launch_instance(InstanceCreate(name=name))
    except InvalidInputError as error:
        return await _home(request, user, name=name, error=sentence(error.detail), status=422)
    except ConsoleError as error:
        if error.status >= 500 or error.status == 401:
            raise
        return await _home(
            request, user, name=name, error=sentence(error.detail), status=error.status
        )
    flash(request, f"Launching {launched.instance.name}: it appears below as it is created.")
    return redirect(request, "/")


async def _visible_instance(user: SignedIn, name: str) -> InstancePublic:
    """The user's own instance (404 for anyone else's, as the Console answers)."""
    if instance_name_problem(name):
        raise NotFoundError(404, "not_found", f"instance '{name}' does not exist")
    return await user.console.get_instance(name)


@router.get("/instances/{name}")
async def instance_page(request: Request, name: str, user: SignedInDep) -> Response:
    instance = await _visible_instance(user, name)
    return _instance_page(request, instance)


def _instance_page(
    request: Request, instance: InstancePublic, api_key: InstanceApiKey | None = None
) -> Response:
    state = state_view(instance)
    context = {
        "instance": instance,
        "state": state,
        "url": instance_url(request, instance.host),
        "deletable": not instance.archived and instance.provision_state in DELETABLE_STATES,
        "has_api_key": state.reachable and not instance.archived,
        "api_key": api_key,
    }
    return render(request, "instance.html", context)


@router.post("/instances/{name}/api-key")
async def reveal_api_key(request: Request, name: str, user: SignedInDep) -> Response:
    """The instance's runtime API key, shown to its owner on request (a POST: never
    cached, never in an address bar or a log)."""
    instance = await _visible_instance(user, name)
    api_key = await user.console.get_instance_api_key(instance.name)
    if is_htmx(request):
        context = {"api_key": api_key, "url": instance_url(request, instance.host)}
        return render(request, "_api_key.html", context)
    return _instance_page(request, instance, api_key)


def _delete_page(
    request: Request, instance: InstancePublic, typed: str, error: str | None, status: int = 200
) -> Response:
    context = {"instance": instance, "typed": typed, "error": error}
    return render(request, "delete.html", context, status=status)


@router.get("/instances/{name}/delete")
async def delete_page(request: Request, name: str, user: SignedInDep) -> Response:
    instance = await _visible_instance(user, name)
    if instance.archived:
        flash(request, f"{instance.name} is already deleted.")
        return redirect(request, "/")
    return _delete_page(request, instance, "", None)


@router.post("/instances/{name}/delete")
async def delete(request: Request, name: str, user: SignedInDep) -> Response:
    instance = await _visible_instance(user, name)
    typed = (await form_of(request)).get("confirm_name", "").strip()
    if typed != instance.name:
        error = f"Type the instance's name, {instance.name}, exactly to confirm."
        return _delete_page(request, instance, typed, error, status=422)
    try:
        await user.console.delete_instance(instance.name)
    except ConsoleError as error:
        if error.status >= 500 or error.status in (401, 404):
            raise
        return _delete_page(request, instance, typed, sentence(error.detail), error.status)
    flash(request, f"Deleting {instance.name}: it leaves the list once its data is gone.")
    return redirect(request, "/")
