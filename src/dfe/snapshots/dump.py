"""Reading an instance database into the portable form, and loading it back, on any engine.

Rows are read with a server-side cursor in batches (`yield_per`) and written as
they come, so memory stays flat whatever the size; on PostgreSQL the server
writes the canonical lines itself (postgres.py). Loading uses COPY on PostgreSQL
and batched multi-row INSERTs elsewhere, in one transaction where the engine
allows DDL in one (SQLite, PostgreSQL); MySQL commits each DDL, so an import there
loads into temporary tables and swaps them in (prepare_schema, swap_in).
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import groupby
from operator import itemgetter
from typing import IO, Any, cast

import orjson
import structlog
from sqlalchemy import (
    Column,
    Connection,
    Engine,
    ForeignKeyConstraint,
    Index,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    UniqueConstraint,
    column,
    create_engine,
    func,
    insert,
    inspect,
    select,
    table,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from dfe.provisioning.drivers.base import describe
from dfe.snapshots.errors import SnapshotError
from dfe.snapshots.format import (
    NAME,
    lines_encoder,
    portable_type,
    row_decoder,
    sql_type,
)
from dfe.snapshots.postgres import CSV, ROWS, TEXT, plain_runs, server_chunks

log = structlog.get_logger("dfe.snapshots")

BATCH_ROWS = 5000
CONNECT_TIMEOUT = 10


@dataclass(frozen=True)
class TableSum:
    """A table's row count and checksum (SHA-256 of its canonical lines)."""

    rows: int
    sha256: str


def open_engine(database_url: str) -> Engine:
    """An engine on an instance database (no pool: a job opens it once or twice)."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        return create_engine(url, poolclass=NullPool, hide_parameters=True)
    return create_engine(
        url,
        poolclass=NullPool,
        hide_parameters=True,
        connect_args={"connect_timeout": CONNECT_TIMEOUT},
    )


def engine_kind(engine: Engine) -> str:
    name = engine.dialect.name
    return "mysql" if name in ("mysql", "mariadb") else name


# Schema


def describe_database(connection: Connection) -> list[dict[str, Any]]:
    """Every table as an engine-neutral description, parents before the tables that refer
    to them."""
    inspector = inspect(connection)
    names = sorted(n for n in inspector.get_table_names() if not n.startswith("sqlite_"))
    tables: dict[str, dict[str, Any]] = {}
    for name in names:
        if not NAME.fullmatch(name):
            raise SnapshotError(f"table {name[:80]!r}: its name cannot be carried by a snapshot")
        key = [c for c in inspector.get_pk_constraint(name)["constrained_columns"] if c]
        columns = []
        for reflected in inspector.get_columns(name):
            where = f"table {name!r}, column {reflected['name']!r}"
            if not NAME.fullmatch(reflected["name"]):
                raise SnapshotError(f"{where}: its name cannot be carried by a snapshot")
            description = {
                "name": reflected["name"],
                **portable_type(reflected["type"], where),
                "nullable": bool(reflected["nullable"]),
            }
            columns.append(description)
        integer_key = len(key) == 1 and next(
            c["type"] == "integer" for c in columns if c["name"] == key[0]
        )
        indexes = inspector.get_indexes(name)
        uniques: list[list[str]] = []
        for group in [u["column_names"] for u in inspector.get_unique_constraints(name)] + [
            i["column_names"] for i in indexes if i["unique"]
        ]:
            cols = [c for c in group if c]
            if len(cols) == len(group) and cols not in uniques and cols != key:
                uniques.append(cols)
        plain: list[list[str]] = []
        for index in indexes:
            cols = [c for c in index["column_names"] if c]
            if (
                not index["unique"]
                and len(cols) == len(index["column_names"])
                and cols
                and cols not in plain
            ):
                plain.append(cols)
        foreign = [
            {
                "columns": fk["constrained_columns"],
                "table": fk["referred_table"],
                "ref_columns": fk["referred_columns"],
            }
            for fk in inspector.get_foreign_keys(name)
            if fk["referred_table"] in names
        ]
        tables[name] = {
            "name": name,
            "columns": columns,
            "primary_key": key,
            "autoincrement": bool(integer_key),
            "unique": uniques,
            "indexes": [{"columns": cols} for cols in plain],
            "foreign_keys": foreign,
        }
    return _parents_first(tables)


def _parents_first(tables: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    ordered: list[dict[str, Any]] = []
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in done or name in path:
            return  # a cycle: loaded in name order (constraints are created with the table)
        for fk in tables[name]["foreign_keys"]:
            if fk["table"] != name:
                visit(fk["table"], (*path, name))
        done.add(name)
        ordered.append(tables[name])

    for name in sorted(tables):
        visit(name, ())
    return ordered


def _short(kind: str, *parts: str) -> str:
    return f"{kind}_" + hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def build_table(description: dict[str, Any], metadata: MetaData) -> Table:
    """The SQLAlchemy table a description stands for (constraint names derived from it)."""
    name = description["name"]
    key = description.get("primary_key") or []
    autoincrement = bool(description.get("autoincrement")) and len(key) == 1
    columns: list[Any] = [
        Column(
            c["name"],
            sql_type(c, integer_key=autoincrement and c["name"] == key[0]),
            nullable=c["nullable"] and c["name"] not in key,
            autoincrement=autoincrement and c["name"] == key[0],
        )
        for c in description["columns"]
    ]
    if key:
        columns.append(PrimaryKeyConstraint(*key))
    for cols in description.get("unique", []):
        columns.append(UniqueConstraint(*cols, name=_short("uq", name, *cols)))
    for fk in description.get("foreign_keys", []):
        columns.append(
            ForeignKeyConstraint(
                fk["columns"],
                [f"{fk['table']}.{c}" for c in fk["ref_columns"]],
                name=_short("fk", name, *fk["columns"]),
            )
        )
    created = Table(name, metadata, *columns)
    for index in description.get("indexes", []):
        Index(_short("ix", name, *index["columns"]), *[created.c[c] for c in index["columns"]])
    return created


# Rows out


def _reader(description: dict[str, Any]) -> Any:
    """A typeless select of the table in key order: values come as the driver gives them
    (no per-value processing), and the converters make them canonical."""
    names = [c["name"] for c in description["columns"]]
    source = table(description["name"], *[column(n) for n in names])
    order = description.get("primary_key") or names
    return select(*[source.c[n] for n in names]).order_by(*[source.c[n] for n in order])


def dump_chunks(connection: Connection, description: dict[str, Any]) -> Iterator[tuple[bytes, int]]:
    """The table's canonical lines in primary-key order, a batch at a time: (the batch's
    lines as one bytes, its row count). On PostgreSQL the server makes them where it can
    (postgres.py), elsewhere `encoded_chunks`."""
    if connection.dialect.name == "postgresql":
        made = server_chunks(connection, description)
        if made is not None:
            return made
    return encoded_chunks(connection, description)


def encoded_chunks(
    connection: Connection, description: dict[str, Any]
) -> Iterator[tuple[bytes, int]]:
    """`dump_chunks` by the Python encoder (format.lines_encoder), on any engine."""
    encode = lines_encoder(description["columns"], engine_kind(connection.engine))
    result = connection.execution_options(stream_results=True, yield_per=BATCH_ROWS).execute(
        _reader(description)
    )
    for partition in result.partitions():
        yield encode(partition), len(partition)


def dump_rows(connection: Connection, description: dict[str, Any]) -> Iterator[bytes]:
    """The table's canonical lines, in primary-key order, read in batches."""
    for chunk, _ in dump_chunks(connection, description):
        yield from (line + b"\n" for line in chunk_lines(chunk))


def dump_table(connection: Connection, description: dict[str, Any], out: IO[bytes]) -> TableSum:
    digest = hashlib.sha256()
    rows = 0
    for chunk, count in dump_chunks(connection, description):
        digest.update(chunk)
        out.write(chunk)
        rows += count
    return TableSum(rows, digest.hexdigest())


def checksum_database(
    engine: Engine, tables: list[dict[str, Any]] | None = None
) -> tuple[list[dict[str, Any]], dict[str, TableSum]]:
    """The schema and each table's count and checksum, as an export would record them."""
    try:
        with engine.connect() as connection:
            described = tables if tables is not None else describe_database(connection)
            sums = table_sums(connection, described)
    except SQLAlchemyError as error:
        raise SnapshotError(f"cannot read the instance database: {describe(error)}") from None
    return described, sums


def table_sums(connection: Connection, tables: list[dict[str, Any]]) -> dict[str, TableSum]:
    """Each table's count and checksum, read through `connection` (inside its transaction)."""
    sums: dict[str, TableSum] = {}
    for description in tables:
        digest = hashlib.sha256()
        rows = 0
        for chunk, count in dump_chunks(connection, description):
            digest.update(chunk)
            rows += count
        sums[description["name"]] = TableSum(rows, digest.hexdigest())
    return sums


# Rows in


def parse_line(line: bytes, width: int, where: str) -> list[Any]:
    """A row's values; SnapshotError unless the line is one JSON array of `width` values."""
    try:
        values = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise SnapshotError(f"{where}: a row is not valid JSON") from None
    if type(values) is not list or len(values) != width:
        raise SnapshotError(f"{where}: a row does not have {width} values")
    return values


# Where the server checks these types itself (a string for an integer is refused), JSON's
# values go as they are; SQLite stores anything anywhere, so there every value is checked.
# PostgreSQL's COPY parses the canonical text of numbers, decimals, dates and times itself;
# whatever it makes of a value, the tables are read back and compared with the manifest in
# the same transaction, so a value loaded differently rolls the import back.
_SERVER_CHECKED = {
    "sqlite": frozenset[str](),
    "mysql": frozenset({"integer", "string", "text", "boolean"}),
    "postgresql": frozenset(
        {"integer", "string", "text", "boolean", "number", "decimal", "datetime", "date", "time"}
    ),
}


def chunk_lines(chunk: bytes) -> list[bytes]:
    """The lines of a chunk of whole lines (each with its newline), without their newlines."""
    lines = chunk.split(b"\n")
    if lines.pop():
        raise SnapshotError("a row is cut short")
    return lines


def _batches(
    chunks: Iterable[bytes], description: dict[str, Any], where: str, engine: str
) -> Iterator[list[list[Any]]]:
    columns = description["columns"]
    decode = row_decoder(columns, _SERVER_CHECKED.get(engine, frozenset()))
    width = len(columns)
    batch: list[list[Any]] = []
    for chunk in chunks:
        for line in chunk_lines(chunk):
            values = parse_line(line, width, where)
            try:
                batch.append(decode(values))
            except (ValueError, TypeError, ArithmeticError):  # decimal.InvalidOperation
                raise SnapshotError(f"{where}: a value does not fit its column's type") from None
            if len(batch) >= BATCH_ROWS:
                yield batch
                batch = []
    if batch:
        yield batch


def begin_ddl(connection: Connection) -> None:
    """SQLite: the driver (pysqlite) opens a transaction only before a row is written, so a
    DROP or CREATE TABLE before that would be committed at once; an explicit BEGIN makes
    them part of the import's transaction, undone with it. Elsewhere nothing."""
    if connection.dialect.name != "sqlite":
        return
    raw = cast("sqlite3.Connection", connection.connection.driver_connection)
    if not raw.in_transaction:
        connection.exec_driver_sql("BEGIN")


def replace_schema(connection: Connection, tables: list[dict[str, Any]]) -> dict[str, Table]:
    """Drop every table of the database and create the snapshot's."""
    existing = MetaData()
    existing.reflect(connection)
    for name in [n for n in existing.tables if n.startswith("sqlite_")]:
        existing.remove(existing.tables[name])
    existing.drop_all(connection)
    return create_tables(connection, tables)


def create_tables(connection: Connection, tables: list[dict[str, Any]]) -> dict[str, Table]:
    """The described tables, by name, created without their plain indexes."""
    metadata = MetaData()
    built = {description["name"]: build_table(description, metadata) for description in tables}
    # Plain indexes are made once the rows are in (as pg_restore does): building one is
    # faster than keeping it up to date row by row. See create_indexes.
    for created in built.values():
        created.info["pending_indexes"] = list(created.indexes)
        created.indexes.clear()
    metadata.create_all(connection)
    return built


# An import into MySQL: each DDL statement commits, so the instance's tables cannot be
# dropped in a transaction that a failure rolls back. The snapshot's tables are created
# and loaded beside them under temporary names (prefix, random tag, position: within
# MySQL's 64 characters whatever the table's name) and swapped in once proven.
STAGED_PREFIX = "dfe_import_"
ASIDE_PREFIX = "dfe_aside_"


@dataclass
class Loading:
    """Where an import loads each snapshot table (by the snapshot's name). `tag` is set on
    MySQL, where these are temporary tables and `replaced` the instance's tables that
    `swap_in` replaces with them."""

    tables: dict[str, Table]
    replaced: list[str]
    tag: str = ""


def prepare_schema(connection: Connection, tables: list[dict[str, Any]]) -> Loading:
    """The snapshot's tables, created for an import. On PostgreSQL and SQLite the instance's
    tables are dropped and these created under their names, in the import's transaction;
    on MySQL they are created under temporary names and the instance's are left alone."""
    if engine_kind(connection.engine) != "mysql":
        return Loading(replace_schema(connection, tables), [])
    replaced = inspect(connection).get_table_names()
    tag = secrets.token_hex(4)
    names = {d["name"]: f"{STAGED_PREFIX}{tag}_{i}" for i, d in enumerate(tables, 1)}
    loading = Loading({}, replaced, tag)
    try:
        built = create_tables(connection, [_renamed(d, names) for d in tables])
    except BaseException:
        discard(connection, loading, list(names.values()))
        raise
    loading.tables = {name: built[temporary] for name, temporary in names.items()}
    return loading


def _renamed(description: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """The description under its temporary name, its foreign keys pointing at the others'
    temporary names (their constraint names, derived from the table's name, then differ
    from the instance's: MySQL wants them unique in the database)."""
    foreign = [
        {**fk, "table": names.get(fk["table"], fk["table"])}
        for fk in description.get("foreign_keys", [])
    ]
    return {**description, "name": names[description["name"]], "foreign_keys": foreign}


def read_back(
    connection: Connection, loading: Loading, tables: list[dict[str, Any]]
) -> dict[str, TableSum]:
    """Each loaded table's count and checksum, by the snapshot's table name."""
    reading = [{**d, "name": loading.tables[d["name"]].name} for d in tables]
    sums = table_sums(connection, reading)
    return {d["name"]: sums[r["name"]] for d, r in zip(tables, reading, strict=True)}


def swap_in(connection: Connection, loading: Loading) -> None:
    """MySQL: one RENAME TABLE (atomic) moves the instance's tables aside and the loaded
    ones into their names (foreign keys follow the tables they point at); the old are
    then dropped. Elsewhere the tables already have their names."""
    if not loading.tag:
        return
    aside = {n: f"{ASIDE_PREFIX}{loading.tag}_{i}" for i, n in enumerate(loading.replaced, 1)}
    pairs = [*aside.items(), *((t.name, name) for name, t in loading.tables.items())]
    if pairs:
        quote = connection.dialect.identifier_preparer.quote
        renames = ", ".join(f"{quote(old)} TO {quote(new)}" for old, new in pairs)
        connection.execute(text(f"RENAME TABLE {renames}"))
    try:
        _drop_tables(connection, list(aside.values()))
    except SQLAlchemyError as error:
        # The import itself is done: the instance holds the snapshot's tables.
        log.warning("replaced tables not dropped", tables=len(aside), error=describe(error))


def discard(connection: Connection, loading: Loading, names: list[str] | None = None) -> None:
    """MySQL, after a failure before `swap_in`: drop the temporary tables (the instance's
    were never touched). Elsewhere nothing: the transaction's rollback undoes it all."""
    if not loading.tag:
        return
    created = names if names is not None else [t.name for t in loading.tables.values()]
    try:
        _drop_tables(connection, created)
    except SQLAlchemyError as error:  # the failure that brought us here is what is reported
        log.warning("temporary tables not dropped", tables=len(created), error=describe(error))


def _drop_tables(connection: Connection, names: list[str]) -> None:
    """MySQL: drop these tables in one statement, whatever foreign keys join them."""
    if not names:
        return
    quote = connection.dialect.identifier_preparer.quote
    connection.execute(text("SET FOREIGN_KEY_CHECKS = 0"))
    try:
        connection.execute(text("DROP TABLE IF EXISTS " + ", ".join(map(quote, names))))
    finally:
        connection.execute(text("SET FOREIGN_KEY_CHECKS = 1"))


def create_indexes(connection: Connection, built: dict[str, Table]) -> None:
    """The plain indexes `replace_schema` left out, once the tables are loaded."""
    for created in built.values():
        for index in created.info.pop("pending_indexes", []):
            created.indexes.add(index)
            index.create(connection)


def load_table(
    connection: Connection, target: Table, description: dict[str, Any], chunks: Iterable[bytes]
) -> None:
    """Load the table's canonical lines, given as chunks of whole lines."""
    where = f"table {description['name']!r}"
    names = [c["name"] for c in description["columns"]]
    if connection.dialect.name == "postgresql":
        _copy_rows(connection, target, description, chunks)
        if description.get("autoincrement"):
            _advance_sequence(connection, target, description["primary_key"][0])
        return
    statement = insert(target)
    for batch in _batches(chunks, description, where, engine_kind(connection.engine)):
        connection.execute(statement, [dict(zip(names, row, strict=True)) for row in batch])


def _copy_rows(
    connection: Connection, target: Table, description: dict[str, Any], chunks: Iterable[bytes]
) -> None:
    """COPY FROM STDIN, what pg_restore uses: runs of plain lines in the server's text
    format or as CSV, with no work per row here (postgres.plain_runs), the others decoded
    row by row."""
    import psycopg
    from psycopg import sql

    raw = cast("psycopg.Connection[Any]", connection.connection.driver_connection)
    copy = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(target.name),
        sql.SQL(", ").join(sql.Identifier(c["name"]) for c in description["columns"]),
    )
    statements = {
        TEXT: sql.SQL("{} (NULL 'null')").format(copy),
        CSV: sql.SQL("{} (FORMAT csv, NULL 'null')").format(copy),
        ROWS: copy,
    }
    converted = raw.info.encoding == "utf-8" and all(
        c["type"] != "binary" for c in description["columns"]
    )
    width = len(description["columns"])
    where = f"table {description['name']!r}"
    try:
        with raw.cursor() as cursor:
            runs = plain_runs(chunks, width) if converted else ((ROWS, c) for c in chunks)
            for kind, run in groupby(runs, key=itemgetter(0)):
                with cursor.copy(statements[kind]) as writer:
                    if kind != ROWS:
                        for _, rows in run:
                            writer.write(rows)
                        continue
                    for batch in _batches((c for _, c in run), description, where, "postgresql"):
                        for row in batch:
                            writer.write_row(row)
    except psycopg.Error as error:
        # The server refused a value (or a key twice): the transaction is rolled back.
        raise SnapshotError(f"table {target.name!r}: {describe(error)}") from None


def _advance_sequence(connection: Connection, target: Table, key: str) -> None:
    """Rows came with their ids: the next id the database assigns must follow the largest."""
    quoted = connection.dialect.identifier_preparer.quote(target.name)
    sequence = connection.execute(
        text("SELECT pg_get_serial_sequence(:table, :column)"),
        {"table": quoted, "column": key},
    ).scalar()
    if sequence:
        largest = connection.execute(select(func.max(target.c[key]))).scalar()
        connection.execute(
            text("SELECT setval(:sequence, :value, :called)"),
            {"sequence": sequence, "value": largest or 1, "called": largest is not None},
        )
