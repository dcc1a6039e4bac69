"""`dfe archive ...` and `dfe restore ...`: archived clusters, servers and instances."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from dfe.cli.backend import backend
from dfe.cli.common import (
    DfeGroup,
    JsonOption,
    print_json,
    print_table,
    stdout,
)
from dfe.services.archive import restore_sql

app = typer.Typer(
    cls=DfeGroup, help="Archived clusters, servers and instances.", no_args_is_help=True
)


class Kind(StrEnum):
    CLUSTER = "cluster"
    SERVER = "server"
    INSTANCE = "instance"


ARCHIVE_COLUMNS = ("id", "name", "archived_at", "archived_by", "archive_batch")


@app.command("list")
def archive_list(
    kind: Kind,
    name: Annotated[str | None, typer.Option("--name", help="Names containing this.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000)] = 100,
    as_json: bool = JsonOption,
) -> None:
    """List archived rows of a kind, newest first."""
    rows, total = backend().list_archived(kind.value, name=name, limit=limit)
    print_table(rows, ARCHIVE_COLUMNS, as_json=as_json, title=f"Archived {kind.value}s")
    if not as_json and total > len(rows):
        stdout.print(f"{len(rows)} of {total} shown; use --limit for more")


@app.command("show")
def archive_show(kind: Kind, name: str, as_json: bool = JsonOption) -> None:
    """Show the most recent archived row of a name, and the SQL that restores it."""
    record = backend().show_archived(kind.value, name)
    if as_json:
        print_json(record)
        return
    stdout.print(f"[bold]{kind.value} {record.name}[/] (id {record.id})")
    stdout.print(f"archived {record.archived_at:%Y-%m-%d %H:%M:%S} UTC by {record.archived_by}")
    stdout.print(f"batch {record.archive_batch}")
    # The row as JSON gives it, so that it reads the same from a remote Console.
    for key, value in record.model_dump(mode="json")["row"].items():
        stdout.print(f"  {key}: {value}", highlight=False)
    stdout.print(
        f"\nto restore it in plain SQL, in one transaction, with :archive_id = "
        f"{record.archive_id}, :id = {record.id}, :archive_batch = '{record.archive_batch}':",
        style="dim",
        highlight=False,
    )
    stdout.print(restore_sql(kind.value), highlight=False, style="dim")


def restore(kind: Kind, name: str) -> None:
    """Bring back the most recent archived batch of a cluster, server or instance."""
    record = backend().restore(kind.value, name)
    stdout.print(f"restored {kind.value} [bold]{record.name}[/] (id {record.id})")


app.command("restore")(restore)
