"""The user's usage: requests, database and storage per day over their own instances,
as server-drawn SVG charts (`dfe.metrics.chart`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Request
from starlette.responses import Response

from dfe.dashboard.web import SignedInDep, render
from dfe.metrics.chart import usage_charts

router = APIRouter()
DAYS = 30


@router.get("/usage")
async def usage(request: Request, user: SignedInDep, instance: str | None = None) -> Response:
    until = datetime.now(UTC).date()
    since = until - timedelta(days=DAYS - 1)
    page = await user.console.list_metrics(since=since, until=until)
    names = sorted({row.instance for row in page.items})
    chosen = instance if instance in names else None
    rows = [row for row in page.items if chosen is None or row.instance == chosen]
    context = {
        "charts": usage_charts(rows, since, until),
        "names": names,
        "chosen": chosen,
        "since": since,
        "until": until,
    }
    return render(request, "usage.html", context)
