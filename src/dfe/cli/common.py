"""What every command shares: the database, the acting operator, output and errors."""

from __future__ import annotations

import getpass
import json
import socket
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import typer
from pydantic import BaseModel, ValidationError
from pydantic_settings import SettingsError
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from typer.core import TyperGroup

from dfe.client import ClientError, ConsoleError, ConsoleUnavailable, UnauthorizedError
from dfe.config import Settings, get_settings
from dfe.crypto import KeyringError
from dfe.db.session import Database, open_database
from dfe.services.errors import DfeError

# Off a terminal (pipes, CI logs) rich would assume 80 columns; keep rows whole instead.
stdout = Console(width=None if sys.stdout.isatty() else 200)
stderr = Console(stderr=True, width=None if sys.stderr.isatty() else 200)

JsonOption = typer.Option(False, "--json", help="Print JSON instead of a table.")
YesOption = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation.")


def fail(message: str, code: int = 2) -> NoReturn:
    stderr.print(f"[bold red]error:[/] {escape(message)}", highlight=False, markup=True)
    raise typer.Exit(code)


@dataclass(frozen=True)
class RemoteTarget:
    """`--remote URL [--key-file FILE]`: the Console the commands go through."""

    url: str
    key_file: Path | None = None


_remote: RemoteTarget | None = None


def set_remote(target: RemoteTarget | None) -> None:
    """Set by the root command for each invocation: remote mode, or None for local."""
    global _remote
    _remote = target


def remote_target() -> RemoteTarget | None:
    """The Console this invocation goes through, or None: this machine's database."""
    return _remote


def describe_console_error(error: ConsoleError) -> str:
    """An error answer from the Console in one line: for 4xx its detail, as a local
    command says it; who refused and why for a refused key; the status for a failure."""
    detail = " ".join(error.detail.split())
    if not error.problem:
        # Not a problem document: something other than a Console answered.
        return (
            f"{error.method} {error.path} got {error.status} {detail}, not an answer from "
            "a DFE Console: check the --remote URL"
        )
    if isinstance(error, UnauthorizedError):
        return f"the Console refused the key: {detail} ({error.code})"
    if error.status >= 500:
        reference = f" (request id {error.request_id})" if error.request_id else ""
        return f"the Console failed with {error.status} {error.code}: {detail}{reference}"
    return detail


def describe_validation_error(error: ValidationError) -> str:
    problems = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "input"
        message = item["msg"].removeprefix("Value error, ")
        problems.append(f"{where.replace('_', '-')}: {message}")
    return "; ".join(problems)


class DfeGroup(TyperGroup):
    """Turns every expected failure into one clear line on stderr and exit code 2."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except DfeError as error:
            fail(error.message)
        except ValidationError as error:
            fail(describe_validation_error(error))
        except KeyringError as error:
            fail(str(error))
        except OperationalError as error:
            fail(f"cannot use the database: {str(error.orig).strip().splitlines()[0]}")
        except SettingsError as error:
            fail(f"bad setting: {error}")
        except ConsoleUnavailable as error:
            target = remote_target()
            fail(
                f"cannot reach the Console at {target.url if target else error.url}: {error.reason}"
            )
        except ConsoleError as error:
            fail(describe_console_error(error))
        except ClientError as error:
            fail(str(error))


def actor() -> str:
    """Who the audit log and the archive say did it."""
    return f"cli:{getpass.getuser()}@{socket.gethostname()}"


def settings() -> Settings:
    try:
        return get_settings()
    except ValidationError as error:
        fail(f"bad setting: {describe_validation_error(error)}")


def database() -> Database:
    return open_database(settings())


@contextmanager
def transaction() -> Iterator[Session]:
    """A session for one command's changes: committed on success, rolled back on error."""
    db = database()
    try:
        with db.transaction(actor=actor()) as session:
            yield session
    finally:
        db.dispose()


@contextmanager
def reading() -> Iterator[Session]:
    db = database()
    try:
        with db.session(actor=actor()) as session:
            yield session
    finally:
        db.dispose()


def print_json(value: Any) -> None:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    elif isinstance(value, list):
        value = [v.model_dump(mode="json") if isinstance(v, BaseModel) else v for v in value]
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "-"
    if isinstance(value, dict):
        return json.dumps(value, default=str) if value else "-"
    if hasattr(value, "isoformat"):
        return f"{value:%Y-%m-%d %H:%M:%S}"
    return str(value.value if hasattr(value, "value") else value)


def print_table(
    rows: Sequence[BaseModel], columns: Sequence[str], *, as_json: bool, title: str
) -> None:
    if as_json:
        print_json(list(rows))
        return
    table = Table(title=title, title_justify="left", header_style="bold")
    for column in columns:
        table.add_column(column.replace("_", " "), overflow="fold")
    for row in rows:
        table.add_row(*(_cell(getattr(row, column)) for column in columns))
    stdout.print(table)
    if not rows:
        stdout.print(f"no {title.lower()}")


def print_record(record: BaseModel, *, as_json: bool) -> None:
    if as_json:
        print_json(record)
        return
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    for key, value in record.model_dump().items():
        table.add_row(key.replace("_", " "), _cell(value))
    stdout.print(table)


def parse_json_option(value: str | None, option: str) -> dict[str, Any] | None:
    """A JSON object given on the command line, or `@file` to read it from a file."""
    if value is None:
        return None
    text = Path(value[1:]).read_text() if value.startswith("@") else value
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        fail(f"{option}: not valid JSON ({error.msg} at line {error.lineno})")
    if not isinstance(document, dict):
        fail(f"{option}: must be a JSON object")
    return document


def read_password(password_file: Path | None, prompt: str = "Password") -> str:
    """A password from a file (`-` for stdin) or, interactively, from a hidden prompt."""
    if password_file is not None:
        if str(password_file) == "-":
            return sys.stdin.readline().rstrip("\n")
        try:
            return password_file.read_text().rstrip("\n")
        except OSError as error:
            fail(f"cannot read the password file: {error.strerror}")
    if not sys.stdin.isatty():
        fail("no terminal to ask for a password on: use --password-file FILE (or - for stdin)")
    value: str = typer.prompt(prompt, hide_input=True, confirmation_prompt=True)
    return value


def confirm(question: str, yes: bool) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        fail("refusing to do this without confirmation: add --yes")
    if not typer.confirm(question):
        raise typer.Exit(1)
