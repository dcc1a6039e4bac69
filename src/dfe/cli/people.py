"""`dfe user ...` and `dfe service-user ...`: dashboard users and console operators."""

from __future__ import annotations

from pathlib import Path
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
    read_password,
    stdout,
)
from dfe.models import ServiceRole
from dfe.schemas import (
    ServiceUserCreate,
    ServiceUserUpdate,
    UserCreate,
    UserUpdate,
)
from dfe.services.errors import InvalidInput

users = typer.Typer(cls=DfeGroup, help="Dashboard users.", no_args_is_help=True)
service_users = typer.Typer(cls=DfeGroup, help="Console operators.", no_args_is_help=True)

PasswordFile = typer.Option(
    None, "--password-file", help="Read the password from this file (- for stdin)."
)
FirstName = typer.Option("", "--first-name")
LastName = typer.Option("", "--last-name")


def _changes(**values: object) -> dict[str, object]:
    return {key: value for key, value in values.items() if value is not None}


def _instance_limit(text: str) -> int | None:
    """--instance-limit: a number, or 'default' (None: follow the setting)."""
    if text.strip().lower() == "default":
        return None
    try:
        return int(text)
    except ValueError:
        raise InvalidInput(
            f"--instance-limit: {text!r} is neither a number nor 'default'"
        ) from None


# Users

USER_COLUMNS = (
    "email",
    "first_name",
    "last_name",
    "is_admin",
    "is_active",
    "instance_limit",
    "created_at",
)


@users.command("create")
def user_create(
    email: str,
    password_file: Path | None = PasswordFile,
    first_name: str = FirstName,
    last_name: str = LastName,
    admin: Annotated[bool, typer.Option("--admin", help="May pick any instance name.")] = False,
) -> None:
    """Create a dashboard user (and their app key)."""
    data = UserCreate(
        email=email,
        password=read_password(password_file),
        first_name=first_name,
        last_name=last_name,
        is_admin=admin,
    )
    user = backend().create_user(data)
    stdout.print(f"created user [bold]{user.email}[/]")


@users.command("list")
def user_list(as_json: bool = JsonOption) -> None:
    """List dashboard users."""
    print_table(backend().list_users(), USER_COLUMNS, as_json=as_json, title="Users")


@users.command("show")
def user_show(email: str, as_json: bool = JsonOption) -> None:
    """Show one user."""
    print_record(backend().get_user(email), as_json=as_json)


@users.command("update")
def user_update(
    email: str,
    new_email: Annotated[str | None, typer.Option("--email")] = None,
    password_file: Path | None = PasswordFile,
    first_name: Annotated[str | None, typer.Option("--first-name")] = None,
    last_name: Annotated[str | None, typer.Option("--last-name")] = None,
    admin: Annotated[bool | None, typer.Option("--admin/--no-admin")] = None,
    active: Annotated[bool | None, typer.Option("--activate/--deactivate")] = None,
    instance_limit: Annotated[
        str | None,
        typer.Option(
            "--instance-limit",
            help="Most instances the user may own: a number (0: no limit), or 'default' "
            "(DFE_DEFAULT_INSTANCE_LIMIT).",
        ),
    ] = None,
) -> None:
    """Change a user."""
    password = read_password(password_file) if password_file else None
    changes = _changes(
        email=new_email,
        password=password,
        first_name=first_name,
        last_name=last_name,
        is_admin=admin,
        is_active=active,
    )
    if instance_limit is not None:
        changes["instance_limit"] = _instance_limit(instance_limit)
    data = UserUpdate(**changes)
    user = backend().update_user(email, data)
    stdout.print(f"updated user [bold]{user.email}[/]")


@users.command("delete")
def user_delete(email: str, yes: bool = YesOption) -> None:
    """Delete a user who owns no instances; their keys are destroyed."""
    confirm(f"Delete user {email} for good?", yes)
    backend().delete_user(email)
    stdout.print(f"deleted user [bold]{email}[/]")


# Service users

SERVICE_USER_COLUMNS = ("email", "first_name", "last_name", "role", "is_active", "created_at")


@service_users.command("create")
def service_user_create(
    email: str,
    password_file: Path | None = PasswordFile,
    first_name: str = FirstName,
    last_name: str = LastName,
    role: Annotated[ServiceRole, typer.Option("--role")] = ServiceRole.ADMINISTRATOR,
) -> None:
    """Create a console operator (and their app key)."""
    data = ServiceUserCreate(
        email=email,
        password=read_password(password_file),
        first_name=first_name,
        last_name=last_name,
        role=role,
    )
    person = backend().create_service_user(data)
    stdout.print(f"created {person.role.value} [bold]{person.email}[/]")


@service_users.command("list")
def service_user_list(as_json: bool = JsonOption) -> None:
    """List console operators."""
    print_table(
        backend().list_service_users(), SERVICE_USER_COLUMNS, as_json=as_json, title="Service users"
    )


@service_users.command("show")
def service_user_show(email: str, as_json: bool = JsonOption) -> None:
    """Show one console operator."""
    print_record(backend().get_service_user(email), as_json=as_json)


@service_users.command("update")
def service_user_update(
    email: str,
    new_email: Annotated[str | None, typer.Option("--email")] = None,
    password_file: Path | None = PasswordFile,
    first_name: Annotated[str | None, typer.Option("--first-name")] = None,
    last_name: Annotated[str | None, typer.Option("--last-name")] = None,
    role: Annotated[ServiceRole | None, typer.Option("--role")] = None,
    active: Annotated[bool | None, typer.Option("--activate/--deactivate")] = None,
) -> None:
    """Change a console operator."""
    password = read_password(password_file) if password_file else None
    data = ServiceUserUpdate(
        **_changes(
            email=new_email,
            password=password,
            first_name=first_name,
            last_name=last_name,
            role=role,
            is_active=active,
        )
    )
    person = backend().update_service_user(email, data)
    stdout.print(f"updated service user [bold]{person.email}[/]")


@service_users.command("delete")
def service_user_delete(email: str, yes: bool = YesOption) -> None:
    """Delete a console operator; their keys are destroyed."""
    confirm(f"Delete service user {email} for good?", yes)
    backend().delete_service_user(email)
    stdout.print(f"deleted service user [bold]{email}[/]")
