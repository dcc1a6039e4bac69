"""`dfe metrics ...`: usage per instance per day (metrics_t)."""

from __future__ import annotations

from datetime import date
from typing import Annotated

import typer

from dfe.cli.backend import backend
from dfe.cli.common import (
    DfeGroup,
    JsonOption,
    database,
    fail,
    print_json,
    print_table,
    remote_target,
    stdout,
)
from dfe.services import metrics

app = typer.Typer(cls=DfeGroup, help="Usage metrics.", no_args_is_help=True)

METRIC_COLUMNS = ("day", "instance", "requests", "database_bytes", "storage_bytes")


@app.command("gather")
def metrics_gather(as_json: bool = JsonOption) -> None:
    """Measure every instance's database and storage now and record them for today
    (the worker does this once a day)."""
    if remote_target() is not None:
        fail("`dfe metrics gather` works on this machine only: drop --remote")
    db = database()
    try:
        result = metrics.gather(db)
    finally:
        db.dispose()
    if as_json:
        print_json(result)
        return
    stdout.print(f"measured {result.instances} instances for {result.day.isoformat()}")
    for failure in result.failures:
        stdout.print(f"[yellow]not measured:[/] {failure}")


@app.command("show")
def metrics_show(
    instance: Annotated[str | None, typer.Option("--instance", help="One instance.")] = None,
    since: Annotated[
        str | None, typer.Option("--since", metavar="YYYY-MM-DD", help="Default: 29 days ago.")
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", metavar="YYYY-MM-DD", help="Default: today (UTC).")
    ] = None,
    as_json: bool = JsonOption,
) -> None:
    """Requests, database and storage bytes per instance per day."""
    rows = backend().list_metrics(
        instance=instance, since=_day(since, "--since"), until=_day(until, "--until")
    )
    print_table(rows, METRIC_COLUMNS, as_json=as_json, title="Usage")


def _day(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        fail(f"{option}: not a date (YYYY-MM-DD): {value!r}")
