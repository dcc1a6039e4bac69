"""The embedded default: one SQLite file per instance under the db server's directory.

SQLite has no users: the user name and password are recorded (the instance row
keeps them like any other) but not applied. The "user" exists exactly when the
file does, so `DatabaseState` reads the same on every engine, and `list_users`
is empty: there is no user that could be left over.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL

from dfe.provisioning.drivers.base import (
    AdminConnection,
    DatabaseState,
    InstanceDatabase,
    check_names,
    config_text,
)
from dfe.provisioning.names import DEFAULT_PREFIX, validate_identifier

SUFFIX = ".db"
_COMPANIONS = ("-wal", "-shm", "-journal")  # files SQLite keeps next to a database


class SqliteDriver:
    kind = "sqlite"

    def __init__(self, config: dict[str, Any], *, pooled: bool = False) -> None:
        self.directory = Path(os.path.abspath(config_text(config, "path", self.kind)))
        self._errors = AdminConnection(f"sqlite directory {self.directory}", [])

    def file_for(self, database_name: str) -> Path:
        return self.directory / f"{validate_identifier(database_name, 'database name')}{SUFFIX}"

    def check(self) -> None:
        with self._errors.step("not usable"):
            self.directory.mkdir(mode=0o750, parents=True, exist_ok=True)
            if not os.access(self.directory, os.W_OK | os.X_OK):
                raise PermissionError("not writable")

    def create(self, database_name: str, user_name: str, password: str) -> InstanceDatabase:
        check_names(database_name, user_name)
        path = self.file_for(database_name)
        with self._errors.step(f"create database {database_name!r}"):
            self.directory.mkdir(mode=0o750, parents=True, exist_ok=True)
            # An empty file is an empty SQLite database; O_EXCL-free so a retry is fine.
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o640))
        return InstanceDatabase(self.kind, database_name, user_name, password)

    def exists(self, database_name: str, user_name: str) -> DatabaseState:
        check_names(database_name, user_name)
        present = self.file_for(database_name).is_file()
        return DatabaseState(database=present, user=present)

    def drop(self, database_name: str, user_name: str) -> None:
        check_names(database_name, user_name)
        path = self.file_for(database_name)
        with self._errors.step(f"drop database {database_name!r}"):
            for companion in _COMPANIONS:
                Path(f"{path}{companion}").unlink(missing_ok=True)
            path.unlink(missing_ok=True)

    def list_databases(self, prefix: str = DEFAULT_PREFIX) -> set[str]:
        with self._errors.step("list databases"):
            if not self.directory.is_dir():
                return set()
            names = {
                entry.name[: -len(SUFFIX)]
                for entry in os.scandir(self.directory)
                if entry.name.endswith(SUFFIX) and entry.name.startswith(prefix)
            }
        return {name for name in names if self._is_database(name)}

    def _is_database(self, name: str) -> bool:
        try:
            return self.file_for(name).is_file()
        except ValueError:
            return False

    def list_users(self, prefix: str = DEFAULT_PREFIX) -> set[str]:
        """Always empty: SQLite has no users, so none can be left over."""
        return set()

    def size_bytes(self, database_name: str) -> int | None:
        """The file and its write-ahead log and shared-memory companions."""
        path = self.file_for(database_name)
        if not path.is_file():
            return None
        with self._errors.step(f"size of database {database_name!r}"):
            return sum(
                Path(f"{path}{suffix}").stat().st_size
                for suffix in ("", *_COMPANIONS)
                if Path(f"{path}{suffix}").is_file()
            )

    def close(self) -> None:
        """Nothing to close: files are opened per call."""

    def url_for(self, database: InstanceDatabase) -> str:
        path = self.file_for(database.database_name)
        return URL.create("sqlite", database=str(path)).render_as_string(hide_password=False)
