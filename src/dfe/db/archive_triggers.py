"""Archive-on-delete triggers, generated from the model metadata for each engine.

A BEFORE DELETE trigger on every archived table first deletes the row's
archived children (whose own triggers archive them), then copies the row into
its archive table with when, by whom and in which batch. Triggers are the only
mechanism that also catches a plain `DELETE` typed into a database shell, and
MySQL fires no trigger on a foreign-key cascade, hence the explicit child
deletes.

Who and which batch: the application says so per transaction (see
`dfe.db.session`); PostgreSQL reads transaction-local settings, MySQL/MariaDB
session variables, SQLite a one-row context table that only the writing
transaction can see. Without that context (a database shell), the actor is the
database user and the batch is derived from the transaction or statement.

Alembic's SQLite batch mode drops triggers, so migrations remove them first and
`install_archive_triggers` puts them back after every upgrade; `dfe db check`
verifies they are in place.
"""

from __future__ import annotations

from sqlalchemy import Connection, Table, text

from dfe.db.base import Base
from dfe.models.archive import ARCHIVED_TABLES
from dfe.models.common import ARCHIVED_WITH_PARENT
from dfe.models.keys import OWNER_COLUMNS

SQLITE_CONTEXT_TABLE = "archive_context_t"


def trigger_name(live: Table) -> str:
    return f"dfe_archive_{live.name}"


def archived_children(live: Table) -> list[tuple[Table, str]]:
    """Rows that go to the archive with a `live` row: (table, column referring to it)."""
    return [
        (child, fk.parent.name)
        for child in ARCHIVED_TABLES
        for fk in child.foreign_keys
        if fk.column.table is live and fk.parent.info.get(ARCHIVED_WITH_PARENT)
    ]


def _context_expressions(dialect: str) -> tuple[str, str, str]:
    """(archived_at, archived_by, archive_batch) SQL expressions for one engine."""
    if dialect == "postgresql":
        return (
            "(now() AT TIME ZONE 'UTC')",
            "COALESCE(NULLIF(current_setting('dfe.archive_actor', true), ''), "
            "'sql:' || session_user)",
            "COALESCE(NULLIF(current_setting('dfe.archive_batch', true), ''), "
            "'sql-' || txid_current()::text)",
        )
    if dialect in ("mysql", "mariadb"):
        return (
            "UTC_TIMESTAMP(6)",
            "COALESCE(@dfe_archive_actor, CONCAT('sql:', USER()))",
            "COALESCE(@dfe_archive_batch, CONCAT('sql-', CONNECTION_ID(), '-', "
            "DATE_FORMAT(NOW(6), '%Y%m%d%H%i%s%f')))",
        )
    context = f"(SELECT {{}} FROM {SQLITE_CONTEXT_TABLE} ORDER BY id DESC LIMIT 1)"
    return (
        "strftime('%Y-%m-%d %H:%M:%f', 'now')",
        f"COALESCE({context.format('actor')}, 'sql')",
        f"COALESCE({context.format('batch')}, 'sql-' || lower(hex(randomblob(8))))",
    )


def _body_statements(live: Table, dialect: str, quote: object) -> list[str]:
    q = quote.quote  # type: ignore[attr-defined]
    archive = ARCHIVED_TABLES[live]
    at, by, batch = _context_expressions(dialect)
    statements = [
        f"DELETE FROM {q(child.name)} WHERE {q(column)} = OLD.id"
        for child, column in archived_children(live)
    ]
    names = [q(c.name) for c in live.columns]
    statements.append(
        f"INSERT INTO {q(archive.name)} ({', '.join(names)}, archived_at, archived_by, "
        f"archive_batch) VALUES ({', '.join('OLD.' + n for n in names)}, {at}, {by}, {batch})"
    )
    if dialect == "sqlite" and len(statements) > 1:
        # SQLite has no transaction id: in a shell, a row and the children it takes
        # along share a batch made up here, for the length of this trigger.
        statements.insert(
            0,
            f"INSERT INTO {SQLITE_CONTEXT_TABLE} (batch, actor, automatic) "
            f"SELECT 'sql-' || lower(hex(randomblob(8))), NULL, 1 "
            f"WHERE NOT EXISTS (SELECT 1 FROM {SQLITE_CONTEXT_TABLE})",
        )
        statements.append(f"DELETE FROM {SQLITE_CONTEXT_TABLE} WHERE automatic = 1")
    return statements


def _create_statements(live: Table, dialect: str, quote: object) -> list[str]:
    name = trigger_name(live)
    body = ";\n  ".join(_body_statements(live, dialect, quote)) + ";"
    if dialect == "postgresql":
        return [
            f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$\n"
            f"BEGIN\n  {body}\n  RETURN OLD;\nEND $$",
            f"CREATE TRIGGER {name} BEFORE DELETE ON {live.name} "
            f"FOR EACH ROW EXECUTE FUNCTION {name}()",
        ]
    return [
        f"CREATE TRIGGER {name} BEFORE DELETE ON {live.name} FOR EACH ROW\nBEGIN\n  {body}\nEND"
    ]


def _sqlite_foreign_key_triggers() -> dict[str, str]:
    """SQLite enforces foreign keys only when a connection asks, and a bare `sqlite3`
    shell does not. So on SQLite, triggers also do what the foreign keys do elsewhere:
    `dfe_keys_<owner>` destroys an owner's app keys (ON DELETE CASCADE on other
    engines) and `dfe_restrict_<table>` refuses to delete a row still referred to
    (ON DELETE RESTRICT). Returns trigger name -> CREATE statement."""
    triggers = {
        f"dfe_keys_{table}": (
            f"CREATE TRIGGER dfe_keys_{table} BEFORE DELETE ON {table} FOR EACH ROW\n"
            f"BEGIN\n  DELETE FROM app_key_t WHERE {column} = OLD.id;\nEND"
        )
        for column, table in OWNER_COLUMNS.values()
    }
    referrers: dict[str, list[str]] = {}
    for table in Base.metadata.sorted_tables:
        for fk in table.foreign_keys:
            if fk.ondelete == "RESTRICT" and not fk.parent.info.get(ARCHIVED_WITH_PARENT):
                parent = fk.column.table.name
                referrers.setdefault(parent, []).append(
                    f"SELECT RAISE(ABORT, 'FOREIGN KEY constraint failed: "
                    f"{table.name}.{fk.parent.name} still refers to this {parent} row') "
                    f"WHERE EXISTS (SELECT 1 FROM {table.name} WHERE {fk.parent.name} = OLD.id);"
                )
    for parent, checks in referrers.items():
        name = f"dfe_restrict_{parent}"
        triggers[name] = (
            f"CREATE TRIGGER {name} BEFORE DELETE ON {parent} FOR EACH ROW\nBEGIN\n  "
            + "\n  ".join(checks)
            + "\nEND"
        )
    return triggers


# Instance counters: server_t and cluster_t count their live instances, so placement
# reads one row instead of counting, and the counts hold by every path (plain SQL too).
_COUNTED = {"insert": ("AFTER INSERT", "NEW", "+"), "delete": ("AFTER DELETE", "OLD", "-")}
# The rows are updated (locked) in placement's order: the cluster, then the db, web and
# app server. In another order, a launch and a deletion could each hold a row the other
# waits for (PostgreSQL and MariaDB would then fail one of them as a deadlock).
_COUNTED_ROWS = (
    ("cluster_t", "cluster_id"),
    ("server_t", "db_server_id"),
    ("server_t", "web_server_id"),
    ("server_t", "app_server_id"),
)


def _counter_triggers(dialect: str) -> dict[str, list[str]]:
    """Trigger name -> statements creating it, for the instance counters."""
    triggers = {}
    for event, (timing, row, sign) in _COUNTED.items():
        name = f"dfe_count_instance_t_{event}"
        body = "\n  ".join(
            f"UPDATE {table} SET instance_count = instance_count {sign} 1 "
            f"WHERE id = {row}.{column};"
            for table, column in _COUNTED_ROWS
        )
        if dialect == "postgresql":
            triggers[name] = [
                f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$\n"
                f"BEGIN\n  {body}\n  RETURN {row};\nEND $$",
                f"CREATE TRIGGER {name} {timing} ON instance_t "
                f"FOR EACH ROW EXECUTE FUNCTION {name}()",
            ]
        else:
            triggers[name] = [
                f"CREATE TRIGGER {name} {timing} ON instance_t FOR EACH ROW\nBEGIN\n  {body}\nEND"
            ]
    return triggers


def _drop_trigger(name: str, table: str, dialect: str) -> str:
    if dialect == "postgresql":
        return f"DROP TRIGGER IF EXISTS {name} ON {table}"
    return f"DROP TRIGGER IF EXISTS {name}"


def _drop_statement(live: Table, dialect: str) -> str:
    if dialect == "postgresql":
        return f"DROP TRIGGER IF EXISTS {trigger_name(live)} ON {live.name}"
    return f"DROP TRIGGER IF EXISTS {trigger_name(live)}"


def _execute_verbatim(connection: Connection, statement: str) -> None:
    """Run DDL whose body holds literal % signs, which DB-API drivers would treat as parameters."""
    cursor = connection.connection.cursor()
    try:
        cursor.execute(statement)
    finally:
        cursor.close()


def drop_archive_triggers(connection: Connection) -> None:
    """Remove every trigger this module installs (before a migration rebuilds tables)."""
    dialect = connection.dialect.name
    tables = set(connection.dialect.get_table_names(connection))
    for live in ARCHIVED_TABLES:
        if live.name in tables:
            connection.execute(text(_drop_statement(live, dialect)))
    if "instance_t" in tables:
        for name in _counter_triggers(dialect):
            connection.execute(text(_drop_trigger(name, "instance_t", dialect)))
    if dialect == "sqlite":
        for name in _sqlite_foreign_key_triggers():
            connection.execute(text(f"DROP TRIGGER IF EXISTS {name}"))


def install_archive_triggers(connection: Connection) -> None:
    """(Re)create every archive trigger; idempotent."""
    dialect = connection.dialect.name
    if dialect == "sqlite":
        # Transient rows only (inserted and deleted within one transaction), so the
        # table can always be made anew.
        connection.execute(text(f"DROP TABLE IF EXISTS {SQLITE_CONTEXT_TABLE}"))
        connection.execute(
            text(
                f"CREATE TABLE {SQLITE_CONTEXT_TABLE} (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                "batch TEXT NOT NULL, actor TEXT, automatic INTEGER NOT NULL DEFAULT 0)"
            )
        )
        for name, statement in _sqlite_foreign_key_triggers().items():
            connection.execute(text(f"DROP TRIGGER IF EXISTS {name}"))
            connection.execute(text(statement))
    for name, statements in _counter_triggers(dialect).items():
        connection.execute(text(_drop_trigger(name, "instance_t", dialect)))
        for statement in statements:
            _execute_verbatim(connection, statement)
    quote = connection.dialect.identifier_preparer
    for live in ARCHIVED_TABLES:
        connection.execute(text(_drop_statement(live, dialect)))
        for statement in _create_statements(live, dialect, quote):
            _execute_verbatim(connection, statement)


def installed_archive_triggers(connection: Connection) -> set[str]:
    dialect = connection.dialect.name
    if dialect == "postgresql":
        query = "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal"
    elif dialect in ("mysql", "mariadb"):
        query = (
            "SELECT trigger_name FROM information_schema.triggers WHERE trigger_schema = DATABASE()"
        )
    else:
        query = "SELECT name FROM sqlite_master WHERE type = 'trigger'"
    return {row[0] for row in connection.exec_driver_sql(query)}


def expected_triggers(dialect: str) -> list[str]:
    names = [trigger_name(t) for t in ARCHIVED_TABLES] + list(_counter_triggers(dialect))
    if dialect == "sqlite":
        names += list(_sqlite_foreign_key_triggers())
    return names


def missing_archive_triggers(connection: Connection) -> list[str]:
    installed = installed_archive_triggers(connection)
    return [name for name in expected_triggers(connection.dialect.name) if name not in installed]


# Made by their migrations and not in the models: the trigram search index (PostgreSQL,
# migration 0009), the placement index (0010, 0011) and MySQL's column behind it (0011).
INDEXES_NOT_IN_MODELS = frozenset({"ix_instance_t_name_trgm", "ix_server_t_placement"})
COLUMNS_NOT_IN_MODELS = frozenset({"placement_load"})


def include_name(name: str | None, type_: str, _parent_names: object) -> bool:
    """Alembic filter: the SQLite archive context table is trigger machinery, and the
    migrations' own indexes and column are not in the models."""
    if type_ == "index" and name in INDEXES_NOT_IN_MODELS:
        return False
    if type_ == "column" and name in COLUMNS_NOT_IN_MODELS:
        return False
    return not (type_ == "table" and name == SQLITE_CONTEXT_TABLE)
