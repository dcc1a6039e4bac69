"""PostgreSQL: a database per instance, owned by a login role of its own.

DDL cannot take bind parameters (psycopg binds server-side), so statements are
composed with `psycopg.sql` (Identifier, Literal). The password never travels in
plain text: it is turned into the server's verifier (SCRAM-SHA-256) on the
client, as `\\password` does, so it cannot show up in the server's logs either.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any, cast

import psycopg
from psycopg import errors as pg_errors
from psycopg.sql import SQL, Composed, Identifier, Literal
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool, QueuePool

from dfe.provisioning.drivers.base import (
    ADMIN_POOL,
    CONNECT_TIMEOUT,
    AdminConnection,
    DatabaseState,
    InstanceDatabase,
    check_names,
    config_port,
    config_text,
)
from dfe.provisioning.errors import DriverError
from dfe.provisioning.names import DEFAULT_PREFIX, validate_identifier

SCRAM_ITERATIONS = 4096  # PostgreSQL's default (its scram_iterations setting)


def scram_sha256_verifier(
    password: str, *, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS
) -> str:
    """What PostgreSQL stores for a SCRAM-SHA-256 password (RFC 5802, RFC 7677).

    Made here as libpq's PQencryptPasswordConn makes it, at half its cost (OpenSSL's
    PBKDF2) and without its round trip for the server's `password_encryption`: the
    verifier is SCRAM whatever that says, which PostgreSQL 10+ accepts under `md5`
    lines of pg_hba.conf too. Passwords are generated hex; others (which SASLprep
    could change) are refused rather than stored differently from what libpq would.
    """
    if not (password.isascii() and password.isprintable()):
        raise DriverError("a database password must be printable ASCII (DFE generates hex)")
    salt = os.urandom(16) if salt is None else salt
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    b64 = base64.b64encode
    return (
        f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}"
        f"${b64(stored_key).decode()}:{b64(server_key).decode()}"
    )


class PostgresqlDriver:
    """Needs an admin that is superuser, or has CREATEDB and CREATEROLE; PostgreSQL 13 or later."""

    kind = "postgresql"

    def __init__(self, config: dict[str, Any], *, pooled: bool = False) -> None:
        self.host = config_text(config, "host", self.kind)
        self.port = config_port(config, 5432)
        self.admin_user = config_text(config, "admin_user", self.kind)
        admin_password = config.get("admin_password") or None
        if admin_password is not None and not isinstance(admin_password, str):
            raise ValueError("a postgresql db server's 'admin_password' must be a string")
        admin_database = config_text(config, "admin_database", self.kind, "postgres")
        sslmode = config.get("sslmode") or None
        if sslmode is not None and not isinstance(sslmode, str):
            raise ValueError("a postgresql db server's 'sslmode' must be a string")
        self._query = {"sslmode": sslmode} if sslmode else {}
        admin_url = URL.create(
            "postgresql+psycopg",
            username=self.admin_user,
            password=admin_password,
            host=self.host,
            port=self.port,
            database=admin_database,
            query=self._query,
        )
        self._engine = create_engine(
            admin_url,
            **({"poolclass": QueuePool, **ADMIN_POOL} if pooled else {"poolclass": NullPool}),
            isolation_level="AUTOCOMMIT",
            hide_parameters=True,
            connect_args={"connect_timeout": CONNECT_TIMEOUT},
        )
        self._errors = AdminConnection(
            f"postgresql server {self.host}:{self.port}", [admin_password]
        )

    @contextmanager
    def _admin(
        self, action: str, *secrets: str
    ) -> Iterator[tuple[Connection, psycopg.Connection[Any]]]:
        """An autocommit admin connection (CREATE DATABASE refuses to run in a transaction)."""
        with self._errors.step(f"cannot connect as admin {self.admin_user!r}"):
            connection = self._engine.connect()
        try:
            with self._errors.step(action, *secrets):
                raw = cast("psycopg.Connection[Any]", connection.connection.driver_connection)
                yield connection, raw
        finally:
            connection.close()

    @staticmethod
    def _run(raw: psycopg.Connection[Any], statement: Composed) -> None:
        raw.execute(statement)

    @staticmethod
    def _database_exists(connection: Connection, name: str) -> bool:
        query = text("SELECT 1 FROM pg_database WHERE datname = :name")
        return connection.execute(query, {"name": name}).first() is not None

    @staticmethod
    def _role_exists(connection: Connection, name: str) -> bool:
        query = text("SELECT 1 FROM pg_roles WHERE rolname = :name")
        return connection.execute(query, {"name": name}).first() is not None

    def check(self) -> None:
        with self._admin("check") as (connection, _):
            query = text(
                "SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles"
                " WHERE rolname = current_user"
            )
            row = connection.execute(query).one()
        if not (row.rolsuper or (row.rolcreatedb and row.rolcreaterole)):
            raise DriverError(
                f"{self._errors.label}: admin {self.admin_user!r} needs CREATEDB and CREATEROLE"
                " (or superuser)"
            )

    def create(self, database_name: str, user_name: str, password: str) -> InstanceDatabase:
        check_names(database_name, user_name)
        database, role = Identifier(database_name), Identifier(user_name)
        action = f"create database {database_name!r} and role {user_name!r}"
        with self._admin(action, password) as (connection, raw):
            verifier = Literal(scram_sha256_verifier(password))
            set_password = SQL("ALTER ROLE {} WITH LOGIN PASSWORD {}").format(role, verifier)
            # What is there already (an earlier attempt may have left part), in one round trip.
            found = connection.execute(
                text(
                    "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :user),"
                    " EXISTS (SELECT 1 FROM pg_database WHERE datname = :database),"
                    " (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)"
                ),
                {"user": user_name, "database": database_name},
            ).one()
            role_exists, database_exists, superuser = found
            if role_exists:
                self._run(raw, set_password)  # left by an earlier attempt: take the new password
            else:
                try:
                    self._run(
                        raw,
                        SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(role, verifier),
                    )
                # A parallel retry won the race (which PostgreSQL may report either way).
                except (pg_errors.DuplicateObject, pg_errors.UniqueViolation):
                    self._run(raw, set_password)
            if not superuser:
                # CREATE DATABASE ... OWNER needs the admin to be a member of the owner.
                self._run(raw, SQL("GRANT {} TO CURRENT_USER").format(role))
            created = False
            if not database_exists:
                with suppress(pg_errors.DuplicateDatabase, pg_errors.UniqueViolation):
                    self._run(raw, SQL("CREATE DATABASE {} OWNER {}").format(database, role))
                    created = True
            if not created:  # left by an earlier attempt (or a parallel one): make it ours
                self._run(raw, SQL("ALTER DATABASE {} OWNER TO {}").format(database, role))
            # Only the owner (and superusers) may connect: no instance reaches another's data.
            self._run(raw, SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(database))
        return InstanceDatabase(
            self.kind, database_name, user_name, password, host=self.host, port=self.port
        )

    def exists(self, database_name: str, user_name: str) -> DatabaseState:
        check_names(database_name, user_name)
        with self._admin(f"look up database {database_name!r}") as (connection, _):
            return DatabaseState(
                database=self._database_exists(connection, database_name),
                user=self._role_exists(connection, user_name),
            )

    def drop(self, database_name: str, user_name: str) -> None:
        check_names(database_name, user_name)
        action = f"drop database {database_name!r} and role {user_name!r}"
        with self._admin(action) as (_, raw):
            # FORCE ends the instance's own sessions first (PostgreSQL 13+).
            self._run(
                raw,
                SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(Identifier(database_name)),
            )
            self._run(raw, SQL("DROP ROLE IF EXISTS {}").format(Identifier(user_name)))

    def list_databases(self, prefix: str = DEFAULT_PREFIX) -> set[str]:
        with self._admin("list databases") as (connection, _):
            names = connection.execute(text("SELECT datname FROM pg_database")).scalars()
            return {name for name in names if name.startswith(prefix)}

    def list_users(self, prefix: str = DEFAULT_PREFIX) -> set[str]:
        with self._admin("list roles") as (connection, _):
            names = connection.execute(text("SELECT rolname FROM pg_roles")).scalars()
            return {name for name in names if name.startswith(prefix)}

    def size_bytes(self, database_name: str) -> int | None:
        validate_identifier(database_name, "database name")
        with self._admin(f"size of database {database_name!r}") as (connection, _):
            if not self._database_exists(connection, database_name):
                return None
            size = connection.execute(
                text("SELECT pg_database_size(:name)"), {"name": database_name}
            ).scalar()
        return int(size or 0)

    def close(self) -> None:
        self._engine.dispose()

    def url_for(self, database: InstanceDatabase) -> str:
        url = URL.create(
            "postgresql+psycopg",
            username=database.user_name,
            password=database.password,
            host=self.host,
            port=self.port,
            database=database.database_name,
            query=self._query,
        )
        return url.render_as_string(hide_password=False)
