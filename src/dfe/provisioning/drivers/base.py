"""What every database-server driver offers, and the pieces they share."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import psycopg
import pymysql
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from dfe.provisioning.errors import DriverError
from dfe.provisioning.names import DEFAULT_PREFIX, validate_identifier

CONNECT_TIMEOUT = 5  # seconds: a server that is down must fail a job quickly, not hang it
# Admin connections kept open per driver between jobs (more are opened under load and
# closed after use); each is checked with a ping before use, so one the server dropped
# (a restart) is replaced instead of failing a job.
ADMIN_POOL = {"pool_size": 1, "max_overflow": 16, "pool_pre_ping": True, "pool_recycle": 600}


@dataclass(frozen=True)
class InstanceDatabase:
    """An instance's database and the credentials it logs in with (kept on the instance row)."""

    kind: str
    database_name: str
    user_name: str
    password: str = field(repr=False)
    host: str | None = None
    port: int | None = None


@dataclass(frozen=True)
class DatabaseState:
    """Whether an instance's database and its user exist: apart, so a retry knows what is left."""

    database: bool
    user: bool

    @property
    def complete(self) -> bool:
        return self.database and self.user

    @property
    def absent(self) -> bool:
        return not self.database and not self.user


@runtime_checkable
class DatabaseDriver(Protocol):
    """A database server that hosts instance databases.

    Every method may be called again after a crash half-way through: create()
    finishes what exists in part (and sets the new password), drop() accepts
    that some or all is gone already.
    """

    kind: str

    def check(self) -> None:
        """Raise DriverError unless the server answers to the admin credentials."""

    def create(self, database_name: str, user_name: str, password: str) -> InstanceDatabase:
        """Create (or complete) the database and a user of its own that may use only it."""

    def exists(self, database_name: str, user_name: str) -> DatabaseState:
        """Whether the database and the user exist."""

    def drop(self, database_name: str, user_name: str) -> None:
        """Drop the database and the user; what is gone already is skipped."""

    def list_databases(self, prefix: str = DEFAULT_PREFIX) -> set[str]:
        """The names of the databases that start with `prefix` (for the orphan scan)."""

    def list_users(self, prefix: str = DEFAULT_PREFIX) -> set[str]:
        """The names of the users/roles that start with `prefix` (for the orphan scan)."""

    def url_for(self, database: InstanceDatabase) -> str:
        """A SQLAlchemy URL, with the instance's own credentials, for the instance runtime."""

    def size_bytes(self, database_name: str) -> int | None:
        """The database's size on disk (usage metrics); None when it does not exist."""

    def close(self) -> None:
        """Close the admin connections the driver keeps (it may still be used after)."""


def check_names(database_name: str, user_name: str, *, max_user: int = 63) -> None:
    validate_identifier(database_name, "database name")
    validate_identifier(user_name, "user name")
    if len(user_name) > max_user:
        raise ValueError(f"invalid user name {user_name!r}: at most {max_user} characters")


def one_line(text: str) -> str:
    return " ".join(text.split())


def redact(message: str, secrets: Iterable[str | None]) -> str:
    for secret in secrets:
        if secret:
            message = message.replace(secret, "***")
    return message


def describe(exc: BaseException) -> str:
    """The database's own first line about a failure, without SQLAlchemy's SQL and parameters."""
    orig: BaseException = exc.orig if isinstance(exc, DBAPIError) and exc.orig else exc
    args: tuple[Any, ...] = tuple(getattr(orig, "args", ()))
    # PyMySQL: (code, message)
    if len(args) == 2 and isinstance(args[0], int) and isinstance(args[1], str):
        text = f"{args[1]} (error {args[0]})"
    else:
        text = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    return one_line(text)


class AdminConnection:
    """Turns any failure on an admin connection into a DriverError with a safe message.

    `label` names the server ("postgresql server 10.0.0.5:5432"); `secrets` are
    scrubbed from every message, whatever the server chose to echo back.
    """

    def __init__(self, label: str, secrets: Iterable[str | None]) -> None:
        self.label = label
        self.secrets = [s for s in secrets if s]

    @contextmanager
    def step(self, action: str, *extra_secrets: str) -> Iterator[None]:
        try:
            yield
        except DriverError:
            raise
        except (SQLAlchemyError, OSError, psycopg.Error, pymysql.err.Error) as exc:
            message = redact(
                f"{self.label}: {action}: {describe(exc)}", [*self.secrets, *extra_secrets]
            )
            # `from None`: the original may quote the statement, which could hold a password.
            raise DriverError(message) from None


def config_port(config: dict[str, Any], default: int) -> int:
    port = config.get("port", default)
    try:
        value = int(port)
    except (TypeError, ValueError):
        raise ValueError(f"invalid port {port!r} in the db server's config") from None
    if not 0 < value < 65536:
        raise ValueError(f"invalid port {port!r} in the db server's config")
    return value


def config_text(config: dict[str, Any], key: str, kind: str, default: str | None = None) -> str:
    value = config.get(key, default)
    if not isinstance(value, str) or not value:
        raise ValueError(f"a {kind} db server's config needs {key!r} (a non-empty string)")
    return value
