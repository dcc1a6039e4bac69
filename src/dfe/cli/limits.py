"""`dfe limit ...`: rate limits, enforced by the web tier; and resetting their counters."""

from __future__ import annotations

from typing import Annotated

import typer

from dfe.cli.backend import backend
from dfe.cli.common import (
    DfeGroup,
    JsonOption,
    YesOption,
    confirm,
    print_record,
    print_table,
    stdout,
)
from dfe.enums import LimitPeriod, LimitScope
from dfe.schemas import LimitCreate, LimitUpdate

app = typer.Typer(cls=DfeGroup, help="Rate limits.", no_args_is_help=True)

LIMIT_COLUMNS = (
    "label",
    "scope",
    "cluster",
    "instance",
    "client_id",
    "max_requests",
    "period",
    "is_active",
)


@app.command("create")
def limit_create(
    label: str,
    scope: Annotated[LimitScope, typer.Option("--scope", help="What it applies to.")],
    max_requests: Annotated[int, typer.Option("--max", min=0, help="Requests per period.")],
    period: Annotated[LimitPeriod, typer.Option("--per", help="The period.")],
    cluster: Annotated[
        str | None, typer.Option("--cluster", help="Scope cluster: each of its instances.")
    ] = None,
    instance: Annotated[str | None, typer.Option("--instance", help="Scope instance.")] = None,
    client_id: Annotated[
        str | None, typer.Option("--client-id", help="Scope key: one of an instance's keys.")
    ] = None,
    inactive: Annotated[bool, typer.Option("--inactive", help="Create it switched off.")] = False,
    as_json: bool = JsonOption,
) -> None:
    """Create a limit (e.g. `--scope instance --instance shop --max 1000 --per hour`)."""
    data = LimitCreate(
        label=label,
        scope=scope,
        cluster=cluster,
        instance=instance,
        client_id=client_id,
        period=period,
        max_requests=max_requests,
        is_active=not inactive,
    )
    print_record(backend().create_limit(data), as_json=as_json)


@app.command("list")
def limit_list(as_json: bool = JsonOption) -> None:
    """List the limits."""
    print_table(backend().list_limits(), LIMIT_COLUMNS, as_json=as_json, title="Limits")


@app.command("show")
def limit_show(label: str, as_json: bool = JsonOption) -> None:
    """Show one limit."""
    print_record(backend().get_limit(label), as_json=as_json)


@app.command("update")
def limit_update(
    label: str,
    max_requests: Annotated[int | None, typer.Option("--max", min=0)] = None,
    period: Annotated[LimitPeriod | None, typer.Option("--per")] = None,
    active: Annotated[
        bool | None, typer.Option("--active/--inactive", help="Switch it on or off.")
    ] = None,
    as_json: bool = JsonOption,
) -> None:
    """Change a limit's size, period or whether it is enforced."""
    values = {"max_requests": max_requests, "period": period, "is_active": active}
    data = LimitUpdate(**{name: value for name, value in values.items() if value is not None})
    print_record(backend().update_limit(label, data), as_json=as_json)


@app.command("delete")
def limit_delete(label: str, yes: bool = YesOption) -> None:
    """Delete a limit."""
    confirm(f"Delete limit {label}?", yes)
    backend().delete_limit(label)
    stdout.print(f"deleted limit [bold]{label}[/]")


@app.command("reset")
def limit_reset(labels: list[str], as_json: bool = JsonOption) -> None:
    """Start these limits' counters from zero, in every web-tier process (within a few
    seconds: the change feed carries the reset)."""
    reset = [backend().reset_limit(label) for label in labels]
    if as_json:
        print_table(reset, LIMIT_COLUMNS, as_json=True, title="Limits reset")
        return
    for limit in reset:
        stdout.print(f"reset the counters of limit [bold]{limit.label}[/]")
