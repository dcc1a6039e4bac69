"""The overview: counts, failed jobs needing attention, instances per day; and the
usage of all instances (or one) per day."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from dfe.auth.permissions import Action
from dfe.console.ui.web import DbDep, render, requires
from dfe.metrics.chart import usage_charts
from dfe.services.metrics import list_metrics, today
from dfe.services.operations import DayCount, instances_per_day, overview

router = APIRouter()

CHART_DAYS = 30
CHART_WIDTH, CHART_HEIGHT, CHART_TOP, CHART_BOTTOM, CHART_LEFT = 760, 220, 16, 28, 36


@dataclass
class Bar:
    x: float
    y: float
    height: float
    width: float
    title: str
    kind: str


def chart(days: list[DayCount]) -> dict[str, Any]:
    """Bars of launched and deprovisioned instances per day, laid out for an inline SVG
    (drawn by the server: no script, nothing to load)."""
    peak = max([1, *(max(day.launched, day.deprovisioned) for day in days)])
    plot_height = CHART_HEIGHT - CHART_TOP - CHART_BOTTOM
    slot = (CHART_WIDTH - CHART_LEFT) / len(days)
    width = max(1.0, slot / 2 - 1)
    bars: list[Bar] = []
    labels: list[dict[str, Any]] = []
    for index, day in enumerate(days):
        x = CHART_LEFT + index * slot
        for offset, kind, count in (
            (0.0, "launched", day.launched),
            (width, "gone", day.deprovisioned),
        ):
            height = plot_height * count / peak
            noun = "launched" if kind == "launched" else "deprovisioned"
            bars.append(
                Bar(
                    x=round(x + offset, 1),
                    y=round(CHART_TOP + plot_height - height, 1),
                    height=round(height, 1),
                    width=round(width, 1),
                    title=f"{day.day.isoformat()}: {count} {noun}",
                    kind=kind,
                )
            )
        if index % 5 == 0 or index == len(days) - 1:
            last = index == len(days) - 1
            labels.append(
                {
                    "x": round(x + slot if last else x, 1),
                    "text": day.day.strftime("%m-%d"),
                    "anchor": "end" if last else "start",
                }
            )
    return {
        "width": CHART_WIDTH,
        "height": CHART_HEIGHT,
        "bars": bars,
        "labels": labels,
        "peak": peak,
        "left": CHART_LEFT,
        "top": CHART_TOP,
        "base": CHART_HEIGHT - CHART_BOTTOM,
        "launched": sum(day.launched for day in days),
        "deprovisioned": sum(day.deprovisioned for day in days),
        "days": len(days),
    }


@router.get("/")
def overview_page(request: Request, db: DbDep, _: Any = requires(Action.ESTATE_READ)) -> Response:
    figures = overview(db)
    return render(
        request,
        "overview.html",
        {"figures": figures, "chart": chart(instances_per_day(db, CHART_DAYS))},
    )


@router.get("/usage")
def usage_page(
    request: Request, db: DbDep, instance: str = "", _: Any = requires(Action.METRICS_READ)
) -> Response:
    """Requests, database and storage bytes per day over every instance, or one."""
    until = today()
    since = until - timedelta(days=CHART_DAYS - 1)
    chosen = instance.strip().lower() or None
    rows = list_metrics(db, instance=chosen, since=since, until=until)
    context = {
        "charts": usage_charts(rows, since, until),
        "chosen": chosen,
        "since": since,
        "until": until,
        "instances": len({row.instance_id for row in rows}),
    }
    return render(request, "usage.html", context)
