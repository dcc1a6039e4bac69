"""MySQL and MariaDB: a utf8mb4 schema per instance and a user with grants on it alone.

Database names cannot be bind parameters: they are validated and backtick-quoted.
User names and passwords are bound (PyMySQL interpolates on the client).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pymysql
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
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
from dfe.provisioning.names import DEFAULT_PREFIX, MAX_USER_NAME, validate_identifier

USER_HOST = "%"  # the instance runtime may run on any app server
LOCK_WAIT_TIMEOUT = 30  # seconds a DDL statement waits for locks, instead of MySQL's year
_UNKNOWN_THREAD = 1094  # KILL of a session that has ended meanwhile


def quote(identifier: str) -> str:
    return "`" + identifier.replace("`", "``") + "`"


class MysqlDriver:
    """Needs an admin with CREATE, DROP, CREATE USER, GRANT OPTION on *.* and SELECT on `mysql`."""

    kind = "mysql"

    def __init__(self, config: dict[str, Any], *, pooled: bool = False) -> None:
        self.host = config_text(config, "host", self.kind)
        self.port = config_port(config, 3306)
        self.admin_user = config_text(config, "admin_user", self.kind)
        admin_password = config.get("admin_password") or None
        if admin_password is not None and not isinstance(admin_password, str):
            raise ValueError("a mysql db server's 'admin_password' must be a string")
        admin_url = URL.create(
            "mysql+pymysql",
            username=self.admin_user,
            password=admin_password,
            host=self.host,
            port=self.port,
            query={"charset": "utf8mb4"},
        )
        self._engine = create_engine(
            admin_url,
            **({"poolclass": QueuePool, **ADMIN_POOL} if pooled else {"poolclass": NullPool}),
            isolation_level="AUTOCOMMIT",
            hide_parameters=True,
            connect_args={
                "connect_timeout": CONNECT_TIMEOUT,
                "init_command": f"SET SESSION lock_wait_timeout = {LOCK_WAIT_TIMEOUT}",
            },
        )
        self._errors = AdminConnection(f"mysql server {self.host}:{self.port}", [admin_password])

    @contextmanager
    def _admin(self, action: str, *secrets: str) -> Iterator[Connection]:
        with self._errors.step(f"cannot connect as admin {self.admin_user!r}"):
            connection = self._engine.connect()
        try:
            with self._errors.step(action, *secrets):
                yield connection
        finally:
            connection.close()

    @staticmethod
    def _database_exists(connection: Connection, name: str) -> bool:
        query = text("SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = :name")
        return connection.execute(query, {"name": name}).first() is not None

    @staticmethod
    def _user_exists(connection: Connection, name: str) -> bool:
        query = text("SELECT 1 FROM mysql.user WHERE User = :name AND Host = :host")
        return connection.execute(query, {"name": name, "host": USER_HOST}).first() is not None

    def check(self) -> None:
        with self._admin("check") as connection:
            connection.execute(text("SELECT 1 FROM mysql.user LIMIT 1"))

    def create(self, database_name: str, user_name: str, password: str) -> InstanceDatabase:
        check_names(database_name, user_name, max_user=MAX_USER_NAME)
        who = {"user": user_name, "host": USER_HOST}
        action = f"create database {database_name!r} and user {user_name!r}"
        with self._admin(action, password) as connection:
            connection.execute(
                text(f"CREATE DATABASE IF NOT EXISTS {quote(database_name)} CHARACTER SET utf8mb4")
            )
            connection.execute(
                text("CREATE USER IF NOT EXISTS :user@:host IDENTIFIED BY :password"),
                {**who, "password": password},
            )
            # The user may be left by an earlier attempt: it takes the new password.
            connection.execute(
                text("ALTER USER :user@:host IDENTIFIED BY :password"),
                {**who, "password": password},
            )
            connection.execute(
                text(f"GRANT ALL PRIVILEGES ON {quote(database_name)}.* TO :user@:host"), who
            )
        return InstanceDatabase(
            self.kind, database_name, user_name, password, host=self.host, port=self.port
        )

    def exists(self, database_name: str, user_name: str) -> DatabaseState:
        check_names(database_name, user_name, max_user=MAX_USER_NAME)
        with self._admin(f"look up database {database_name!r}") as connection:
            return DatabaseState(
                database=self._database_exists(connection, database_name),
                user=self._user_exists(connection, user_name),
            )

    def drop(self, database_name: str, user_name: str) -> None:
        check_names(database_name, user_name, max_user=MAX_USER_NAME)
        action = f"drop database {database_name!r} and user {user_name!r}"
        with self._admin(action) as connection:
            # The user first: no new session can start while the old ones are ended.
            connection.execute(
                text("DROP USER IF EXISTS :user@:host"), {"user": user_name, "host": USER_HOST}
            )
            sessions = connection.execute(
                text(
                    "SELECT ID FROM information_schema.PROCESSLIST"
                    " WHERE (USER = :user OR DB = :database) AND ID <> CONNECTION_ID()"
                ),
                {"user": user_name, "database": database_name},
            ).scalars()
            for session_id in list(sessions):
                self._kill(connection, int(session_id))
            connection.execute(text(f"DROP DATABASE IF EXISTS {quote(database_name)}"))

    @staticmethod
    def _kill(connection: Connection, session_id: int) -> None:
        try:
            connection.execute(text(f"KILL CONNECTION {session_id:d}"))
        except DBAPIError as exc:
            orig = exc.orig
            if not (isinstance(orig, pymysql.err.Error) and orig.args[0] == _UNKNOWN_THREAD):
                raise

    def list_databases(self, prefix: str = DEFAULT_PREFIX) -> set[str]:
        with self._admin("list databases") as connection:
            query = text("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA")
            return {name for name in connection.execute(query).scalars() if name.startswith(prefix)}

    def list_users(self, prefix: str = DEFAULT_PREFIX) -> set[str]:
        with self._admin("list users") as connection:
            query = text("SELECT DISTINCT User FROM mysql.user")
            return {name for name in connection.execute(query).scalars() if name.startswith(prefix)}

    def size_bytes(self, database_name: str) -> int | None:
        """Data and indexes as information_schema reports them (InnoDB's estimate)."""
        validate_identifier(database_name, "database name")
        with self._admin(f"size of database {database_name!r}") as connection:
            if not self._database_exists(connection, database_name):
                return None
            query = text(
                "SELECT COALESCE(SUM(DATA_LENGTH + INDEX_LENGTH), 0)"
                " FROM information_schema.TABLES WHERE TABLE_SCHEMA = :name"
            )
            size = connection.execute(query, {"name": database_name}).scalar()
        return int(size or 0)

    def close(self) -> None:
        self._engine.dispose()

    def url_for(self, database: InstanceDatabase) -> str:
        url = URL.create(
            "mysql+pymysql",
            username=database.user_name,
            password=database.password,
            host=self.host,
            port=self.port,
            database=database.database_name,
            query={"charset": "utf8mb4"},
        )
        return url.render_as_string(hide_password=False)
