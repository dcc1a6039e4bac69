"""`dfe key ...`: app keys; a secret is printed once, when its key is made."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import typer

from dfe.cli.backend import backend
from dfe.cli.common import (
    DfeGroup,
    JsonOption,
    YesOption,
    confirm,
    print_json,
    print_table,
    stdout,
)
from dfe.db.base import utcnow
from dfe.models import OwnerType
from dfe.schemas import KeyCreate, KeyWithSecret

app = typer.Typer(cls=DfeGroup, help="App keys.", no_args_is_help=True)

KEY_COLUMNS = ("client_id", "owner_type", "owner_id", "label", "last_used_at", "expires_at")


def _show_secret(key: KeyWithSecret, as_json: bool) -> None:
    if as_json:
        print_json(key)
        return
    stdout.print(f"client_id:     [bold]{key.client_id}[/]")
    stdout.print(f"client_secret: [bold]{key.client_secret}[/]")
    stdout.print("[yellow]The secret is shown this once; store it now.[/]")


@app.command("create")
def key_create(
    owner_type: Annotated[OwnerType, typer.Option("--owner-type", help="Whose key it is.")],
    owner: Annotated[str | None, typer.Option("--owner", help="Owner's name, email or id.")] = None,
    label: Annotated[str, typer.Option("--label")] = "",
    expires_in_days: Annotated[int | None, typer.Option("--expires-in-days", min=1)] = None,
    as_json: bool = JsonOption,
) -> None:
    """Create a key and print its secret once."""
    expires_at = utcnow() + timedelta(days=expires_in_days) if expires_in_days else None
    data = KeyCreate(owner_type=owner_type, owner=owner, label=label, expires_at=expires_at)
    _show_secret(backend().create_key(data), as_json)


@app.command("list")
def key_list(
    owner_type: Annotated[OwnerType | None, typer.Option("--owner-type")] = None,
    owner: Annotated[str | None, typer.Option("--owner")] = None,
    as_json: bool = JsonOption,
) -> None:
    """List keys (never their secrets)."""
    print_table(backend().list_keys(owner_type, owner), KEY_COLUMNS, as_json=as_json, title="Keys")


@app.command("revoke")
def key_revoke(client_id: str, yes: bool = YesOption) -> None:
    """Destroy a key at once."""
    confirm(f"Revoke key {client_id}? Whoever uses it is locked out.", yes)
    backend().revoke_key(client_id)
    stdout.print(f"revoked key [bold]{client_id}[/]")


@app.command("rotate")
def key_rotate(
    client_id: str,
    grace_hours: Annotated[
        int | None,
        typer.Option("--grace-hours", min=0, help="Longest the old key stays valid."),
    ] = None,
    as_json: bool = JsonOption,
) -> None:
    """Make a successor key; the old one is revoked when the new one is first used
    (or when the grace period ends)."""
    _show_secret(backend().rotate_key(client_id, grace_hours), as_json)
