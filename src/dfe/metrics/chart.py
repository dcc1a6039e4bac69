"""Server-side SVG charts of usage metrics: no JavaScript, safe to inline in a page.

`bar_chart` draws one series of daily values as bars, with the largest value and
the first and last day labelled, and a <title> per bar (shown on hover, read by
screen readers). `usage_charts` turns metrics rows into the three charts a page
shows: requests, database bytes and storage bytes per day. Every text is escaped.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from html import escape

from markupsafe import Markup

from dfe.schemas import MetricPublic

WIDTH, HEIGHT = 640, 200
MARGIN_LEFT, MARGIN_BOTTOM, MARGIN_TOP = 64, 24, 12


def human_bytes(value: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(value) < 1024 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"  # pragma: no cover - the loop returns


def human_count(value: float) -> str:
    return f"{value:,.0f}"


@dataclass(frozen=True)
class Chart:
    title: str
    svg: Markup
    total: str


def bar_chart(
    title: str,
    points: Sequence[tuple[date, float]],
    *,
    unit: str = "count",
) -> Markup:
    """An SVG bar chart of (day, value) points in order (`unit`: "count" or "bytes");
    an empty chart says so."""
    fmt = human_bytes if unit == "bytes" else human_count
    label = escape(title)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'role="img" aria-label="{label}" class="usage-chart" width="100%">',
        f"<title>{label}</title>",
    ]
    plot_width = WIDTH - MARGIN_LEFT - 8
    plot_height = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM
    baseline = MARGIN_TOP + plot_height
    parts.append(
        f'<line x1="{MARGIN_LEFT}" y1="{baseline}" x2="{WIDTH - 8}" y2="{baseline}" '
        'stroke="#6c757d" stroke-width="1"/>'
    )
    if not points:
        parts.append(
            f'<text x="{WIDTH // 2}" y="{HEIGHT // 2}" text-anchor="middle" '
            'font-size="14" fill="#6c757d">No data yet</text></svg>'
        )
        return Markup("".join(parts))  # noqa: S704 - built from escaped parts
    top = max(value for _, value in points) or 1
    step = plot_width / len(points)
    bar = max(1.0, step * 0.8)
    for index, (day, value) in enumerate(points):
        height = plot_height * value / top
        x = MARGIN_LEFT + index * step + (step - bar) / 2
        y = baseline - height
        tip = escape(f"{day.isoformat()}: {fmt(value)}")
        parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{height:.1f}" '
            f'fill="#0d6efd"><title>{tip}</title></rect>'
        )
    parts += [
        f'<text x="{MARGIN_LEFT - 6}" y="{MARGIN_TOP + 10}" text-anchor="end" font-size="11" '
        f'fill="#212529">{escape(fmt(top))}</text>',
        f'<text x="{MARGIN_LEFT - 6}" y="{baseline}" text-anchor="end" font-size="11" '
        'fill="#212529">0</text>',
        f'<text x="{MARGIN_LEFT}" y="{HEIGHT - 6}" font-size="11" fill="#212529">'
        f"{escape(points[0][0].isoformat())}</text>",
        f'<text x="{WIDTH - 8}" y="{HEIGHT - 6}" text-anchor="end" font-size="11" '
        f'fill="#212529">{escape(points[-1][0].isoformat())}</text>',
        "</svg>",
    ]
    return Markup("".join(parts))  # noqa: S704 - built from escaped parts


def daily_series(
    rows: Iterable[MetricPublic], field: str, since: date, until: date
) -> list[tuple[date, float]]:
    """One value per day from `since` to `until`, summed over the instances (a day with
    no row, or no measurement, is 0)."""
    values: dict[date, float] = {}
    for row in rows:
        value = getattr(row, field)
        if value is not None:
            values[row.day] = values.get(row.day, 0) + value
    days = (until - since).days + 1
    series = [since + timedelta(days=n) for n in range(days)]
    return [(day, values.get(day, 0)) for day in series]


def usage_charts(rows: Sequence[MetricPublic], since: date, until: date) -> list[Chart]:
    """Requests, database bytes and storage bytes per day, over every row given."""
    requests = daily_series(rows, "requests", since, until)
    database = daily_series(rows, "database_bytes", since, until)
    storage = daily_series(rows, "storage_bytes", since, until)
    last_database = next((v for _, v in reversed(database) if v), 0)
    last_storage = next((v for _, v in reversed(storage) if v), 0)
    return [
        Chart(
            "Requests per day",
            bar_chart("Requests per day", requests),
            f"{human_count(sum(v for _, v in requests))} in all",
        ),
        Chart(
            "Database size",
            bar_chart("Database size", database, unit="bytes"),
            f"{human_bytes(last_database)} last measured",
        ),
        Chart(
            "Storage size",
            bar_chart("Storage size", storage, unit="bytes"),
            f"{human_bytes(last_storage)} last measured",
        ),
    ]
