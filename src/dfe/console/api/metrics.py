"""Usage metrics: reading them (administrators all, users their own instances) and the
web tier's request counts coming in."""

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from dfe.auth.permissions import Action
from dfe.auth.principals import Principal
from dfe.console.api.deps import SessionDep, requires
from dfe.enums import OwnerType
from dfe.schemas import MetricsPage, RequestCounts
from dfe.services import metrics

router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    response_model=MetricsPage,
    summary="Usage per instance per day (requests, database and storage bytes)",
)
def list_metrics(
    session: SessionDep,
    principal: Annotated[Principal, requires(Action.METRICS_READ)],
    instance: Annotated[str | None, Query(max_length=63, description="One instance.")] = None,
    since: Annotated[date | None, Query(description="First day (default: 29 days ago).")] = None,
    until: Annotated[date | None, Query(description="Last day (default: today, UTC).")] = None,
) -> Any:
    owner_id = None if principal.is_operator else (principal.user_id or -1)
    items = metrics.list_metrics(
        session, owner_id=owner_id, instance=instance, since=since, until=until
    )
    return MetricsPage(items=items)


@router.post(
    "/metrics/requests",
    status_code=204,
    summary="Add requests a web-tier process served (web servers' keys)",
)
def report_requests(
    data: RequestCounts,
    session: SessionDep,
    principal: Annotated[Principal, requires(Action.METRICS_REPORT)],
) -> Response:
    web_server = principal.owner_id if principal.key_owner is OwnerType.SERVER else None
    metrics.add_requests(session, data, web_server)
    session.commit()
    return Response(status_code=204)
