"""Schema upgrade and the `dfe db check` verification."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect

from dfe.db.archive_triggers import (
    drop_archive_triggers,
    include_name,
    install_archive_triggers,
    missing_archive_triggers,
)
from dfe.db.base import Base
from dfe.db.session import Database
from dfe.models.keys import OWNER_COLUMNS

SCRIPT_LOCATION = Path(__file__).parent / "alembic"


def alembic_config(database: Database) -> Config:
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    config.set_main_option("sqlalchemy.url", database.url.replace("%", "%%"))
    return config


def upgrade(database: Database, revision: str = "head") -> None:
    """Upgrade the schema, then (re)install the archive triggers."""
    config = alembic_config(database)
    with database.engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        config.attributes["connection"] = connection
        # SQLite batch mode rebuilds tables, which breaks triggers that name them.
        drop_archive_triggers(connection)
        connection.commit()
        command.upgrade(config, revision)
        install_archive_triggers(connection)
        connection.commit()
        if connection.dialect.name == "sqlite":
            connection.exec_driver_sql("PRAGMA foreign_keys=ON")


def current_revision(database: Database) -> str | None:
    with database.engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision(database: Database) -> str | None:
    return ScriptDirectory.from_config(alembic_config(database)).get_current_head()


@dataclass
class CheckReport:
    problems: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check(database: Database) -> CheckReport:
    """Verify the schema matches the models and the archive/key guarantees hold."""
    report = CheckReport()
    current, head = current_revision(database), head_revision(database)
    if current != head:
        report.problems.append(
            f"schema is at revision {current}, code expects {head}: run `dfe db upgrade`"
        )
        return report
    report.checked.append(f"schema at revision {head}")
    with database.engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "include_name": include_name}
        )
        with warnings.catch_warnings():
            # SQLite's placement index is on an expression, which SQLAlchemy does not
            # reflect (it warns); the index is not in the models, and not compared.
            warnings.filterwarnings("ignore", "Skipped unsupported reflection of expression")
            diffs = compare_metadata(context, Base.metadata)
        report.problems += [f"schema differs from the models: {diff}" for diff in diffs]
        if not diffs:
            report.checked.append("tables, columns, indexes and constraints match the models")
        if connection.dialect.name == "sqlite":
            reused = _sqlite_tables_reusing_ids(connection)
            report.problems += [
                f"{table} lost AUTOINCREMENT: a deleted id could come back" for table in reused
            ]
            if not reused:
                report.checked.append("ids are never reused (AUTOINCREMENT on SQLite)")
        missing = missing_archive_triggers(connection)
        report.problems += [
            f"archive trigger {name} is missing: run `dfe db upgrade`" for name in missing
        ]
        if not missing:
            report.checked.append("archive triggers installed on every archived table")
        keys = inspect(connection).get_foreign_keys("app_key_t")
        cascading = {
            fk["constrained_columns"][0]
            for fk in keys
            if (fk.get("options") or {}).get("ondelete", "").upper() == "CASCADE"
        }
        for column, _table in OWNER_COLUMNS.values():
            if column not in cascading:
                report.problems.append(
                    f"app_key_t.{column} does not cascade deletes from its owner"
                )
        if all(column in cascading for column, _ in OWNER_COLUMNS.values()):
            report.checked.append("app keys are destroyed with their owners (ON DELETE CASCADE)")
    return report


def _sqlite_tables_reusing_ids(connection: Connection) -> list[str]:
    """Tables the models declare AUTOINCREMENT for whose SQLite DDL lacks it (an Alembic
    batch migration rebuilds a table without it unless told)."""
    rows = connection.exec_driver_sql("SELECT name, sql FROM sqlite_master WHERE type='table'")
    ddl: dict[str, str | None] = dict(rows.all())
    return [
        table.name
        for table in Base.metadata.sorted_tables
        if table.dialect_options["sqlite"].get("autoincrement")
        and "AUTOINCREMENT" not in (ddl.get(table.name) or "").upper()
    ]
