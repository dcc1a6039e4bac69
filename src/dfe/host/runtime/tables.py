"""An instance's tables through SQLAlchemy Core: schemas, rows, filters, sorting, paging.

Table and column names must match `IDENTIFIER` and are always quoted by
SQLAlchemy; values always travel as bound parameters. The same code serves
SQLite, PostgreSQL and MySQL/MariaDB: a table is created from six portable
column types, and a reflected column is read back as the closest of them.
"""

from __future__ import annotations

import base64
import math
import re
import time
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from datetime import time as time_of_day
from decimal import Decimal
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, Field
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ColumnElement,
    DateTime,
    Double,
    Engine,
    Float,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    delete,
    func,
    insert,
    inspect,
    select,
    update,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.exc import NoSuchTableError, OperationalError, ProgrammingError
from sqlalchemy.types import TypeEngine

from dfe.host.problems import Problem

IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
ColumnType = Literal["string", "text", "integer", "number", "boolean", "datetime"]
PRIMARY_KEY = "id"
STRING_LENGTH = 255
MAX_COLUMNS = 200
DEFAULT_LIMIT, MAX_LIMIT = 100, 1000
MAX_IN_VALUES = 100
SCHEMA_TTL = 30.0  # seconds a reflected table is trusted (another process may change it)
_INT64 = 2**63

T = TypeVar("T")


class ColumnSpec(BaseModel):
    name: str = Field(description="^[a-z][a-z0-9_]{0,62}$; not 'id' (added for you).")
    type: ColumnType
    nullable: bool = True
    unique: bool = False


class TableSpec(BaseModel):
    """A table to create: a primary key `id` (an integer the database assigns) is added."""

    name: str = Field(description="^[a-z][a-z0-9_]{0,62}$")
    columns: list[ColumnSpec] = Field(default_factory=list, max_length=MAX_COLUMNS)


def identifier(name: str, what: str) -> str:
    if not IDENTIFIER.fullmatch(name) or name.startswith("sqlite_"):
        raise Problem(
            422,
            "invalid_input",
            f"{what} {name[:80]!r} is not allowed: use a-z, 0-9 and '_', start with a letter, "
            "at most 63 characters",
        )
    return name


_ID_TYPE = BigInteger().with_variant(Integer(), "sqlite")  # SQLite: the rowid alias


def sql_type(kind: ColumnType) -> TypeEngine[Any]:
    types: dict[str, TypeEngine[Any]] = {
        "string": String(STRING_LENGTH),
        "text": Text(),
        "integer": BigInteger(),
        "number": Double(),
        "boolean": Boolean(),
        "datetime": DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb"),
    }
    return types[kind]


def logical_type(column_type: TypeEngine[Any]) -> str:
    """The portable type a reflected column stands for ("other" when none fits)."""
    if isinstance(column_type, Boolean):
        return "boolean"
    if isinstance(column_type, mysql.TINYINT) and column_type.display_width == 1:
        return "boolean"  # what MySQL and MariaDB make of BOOLEAN
    if isinstance(column_type, Integer):
        return "integer"
    if isinstance(column_type, Float | Numeric):
        return "number"
    if isinstance(column_type, DateTime):
        return "datetime"
    if isinstance(column_type, Text) or type(column_type).__name__.endswith("TEXT"):
        return "text"
    if isinstance(column_type, String):
        return "string"
    return "other"


def describe(table: Table) -> dict[str, Any]:
    return {
        "name": table.name,
        "columns": [
            {
                "name": column.name,
                "type": logical_type(column.type),
                "nullable": bool(column.nullable),
                "primary_key": bool(column.primary_key),
            }
            for column in table.columns
        ],
    }


class Tables:
    """The tables of one instance database, their reflected schemas cached briefly."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._cache: dict[str, tuple[float, Table]] = {}

    # -- schema ---------------------------------------------------------------------------------

    def names(self) -> list[str]:
        names = inspect(self.engine).get_table_names()
        return sorted(n for n in names if IDENTIFIER.fullmatch(n) and not n.startswith("sqlite_"))

    def table(self, name: str, *, refresh: bool = False) -> Table:
        identifier(name, "table name")
        cached = self._cache.get(name)
        if cached is not None and not refresh and time.monotonic() - cached[0] < SCHEMA_TTL:
            return cached[1]
        try:
            table = Table(name, MetaData(), autoload_with=self.engine)
        except NoSuchTableError:
            self._cache.pop(name, None)
            raise Problem(404, "not_found", f"no table named {name!r}") from None
        self._cache[name] = (time.monotonic(), table)
        return table

    def create(self, spec: TableSpec) -> Table:
        name = identifier(spec.name, "table name")
        seen = {PRIMARY_KEY}
        columns: list[Column[Any]] = [
            Column(PRIMARY_KEY, _ID_TYPE, primary_key=True, autoincrement=True)
        ]
        for column in spec.columns:
            identifier(column.name, "column name")
            if column.name in seen:
                raise Problem(
                    422,
                    "invalid_input",
                    f"column {column.name!r} is given twice"
                    if column.name != PRIMARY_KEY
                    else "column 'id' is added for you: leave it out",
                )
            seen.add(column.name)
            columns.append(
                Column(
                    column.name,
                    sql_type(column.type),
                    nullable=column.nullable,
                    unique=column.unique or None,
                )
            )
        if inspect(self.engine).has_table(name):
            raise Problem(409, "conflict", f"a table named {name!r} exists already")
        table = Table(name, MetaData(), *columns)
        try:
            table.create(self.engine)
        except (OperationalError, ProgrammingError):
            if inspect(self.engine).has_table(name):  # another request was faster
                raise Problem(409, "conflict", f"a table named {name!r} exists already") from None
            raise
        self._cache.pop(name, None)
        return self.table(name)

    def drop(self, name: str) -> None:
        table = self.table(name, refresh=True)
        table.drop(self.engine)
        self._cache.pop(name, None)

    def _fresh(self, name: str, operation: Callable[[Table], T]) -> T:
        """Run `operation` on the cached table; if the database refuses it, the schema may
        have changed under us: reflect again and try once more."""
        table = self.table(name)
        try:
            return operation(table)
        except (OperationalError, ProgrammingError):
            fresh = self.table(name, refresh=True)
            return operation(fresh)

    # -- rows -----------------------------------------------------------------------------------

    def list_rows(
        self, name: str, filters: Sequence[str], sort: Sequence[str], limit: int, offset: int
    ) -> dict[str, Any]:
        def run(table: Table) -> dict[str, Any]:
            conditions = [_condition(table, text) for text in filters]
            order = _order(table, sort)
            with self.engine.connect() as connection:
                total = connection.execute(
                    select(func.count()).select_from(table).where(*conditions)
                ).scalar_one()
                rows = connection.execute(
                    select(table).where(*conditions).order_by(*order).limit(limit).offset(offset)
                ).mappings()
                items = [_output(table, row) for row in rows]
            return {"items": items, "total": total, "limit": limit, "offset": offset}

        return self._fresh(name, run)

    def get_row(self, name: str, row_id: str) -> dict[str, Any]:
        def run(table: Table) -> dict[str, Any]:
            key = _primary_key(table)
            with self.engine.connect() as connection:
                row = (
                    connection.execute(select(table).where(key == _key_value(key, row_id)))
                    .mappings()
                    .first()
                )
            if row is None:
                raise Problem(404, "not_found", f"no row {row_id[:40]!r} in {name!r}")
            return _output(table, row)

        return self._fresh(name, run)

    def insert_rows(self, name: str, documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
        def run(table: Table) -> list[dict[str, Any]]:
            key = _primary_key(table)
            values = [
                _input(table, document, where=f"rows[{i}]") for i, document in enumerate(documents)
            ]
            created = []
            with self.engine.begin() as connection:
                for row in values:
                    result = connection.execute(insert(table).values(**row))
                    new_id = result.inserted_primary_key[0] if result.inserted_primary_key else None
                    found = connection.execute(select(table).where(key == new_id)).mappings().one()
                    created.append(_output(table, found))
            return created

        return self._fresh(name, run)

    def update_row(self, name: str, row_id: str, document: dict[str, Any]) -> dict[str, Any]:
        def run(table: Table) -> dict[str, Any]:
            key = _primary_key(table)
            value = _key_value(key, row_id)
            changes = _input(table, document, where="body", partial=True)
            with self.engine.begin() as connection:
                if changes:
                    connection.execute(update(table).where(key == value).values(**changes))
                row = connection.execute(select(table).where(key == value)).mappings().first()
            if row is None:
                raise Problem(404, "not_found", f"no row {row_id[:40]!r} in {name!r}")
            return _output(table, row)

        return self._fresh(name, run)

    def delete_row(self, name: str, row_id: str) -> None:
        def run(table: Table) -> None:
            key = _primary_key(table)
            with self.engine.begin() as connection:
                result = connection.execute(delete(table).where(key == _key_value(key, row_id)))
            if result.rowcount == 0:
                raise Problem(404, "not_found", f"no row {row_id[:40]!r} in {name!r}")

        self._fresh(name, run)


# Values in and out


def _primary_key(table: Table) -> Column[Any]:
    keys = list(table.primary_key.columns)
    if len(keys) != 1:
        raise Problem(
            409, "no_primary_key", f"table {table.name!r} has no single-column primary key"
        )
    return keys[0]


def _key_value(key: Column[Any], text: str) -> Any:
    return _parse(key, logical_type(key.type), text, f"row id {text[:40]!r}")


def _column(table: Table, name: str, where: str) -> Column[Any]:
    if not IDENTIFIER.fullmatch(name) or name not in table.columns:
        raise Problem(
            422, "invalid_input", f"{where}: table {table.name!r} has no column {name[:80]!r}"
        )
    column: Column[Any] = table.columns[name]
    return column


def _input(table: Table, document: Any, *, where: str, partial: bool = False) -> dict[str, Any]:
    """A JSON object as column values, checked against the table (unknown columns, types)."""
    if not isinstance(document, dict):
        raise Problem(422, "invalid_input", f"{where}: expected a JSON object of column values")
    key = _primary_key(table)
    values: dict[str, Any] = {}
    for name, value in document.items():
        column = _column(table, str(name), where)
        if column is key and logical_type(key.type) == "integer":
            raise Problem(422, "invalid_input", f"{where}.{name}: assigned by the database")
        values[column.name] = _convert(column, value, f"{where}.{name}")
    if not partial:
        for column in table.columns:
            if (
                column.name not in values
                and not column.nullable
                and column is not key
                and column.server_default is None
            ):
                raise Problem(422, "invalid_input", f"{where}.{column.name}: required")
    return values


def _convert(column: Column[Any], value: Any, where: str) -> Any:
    """A JSON value as what the column holds; 422 when it does not fit."""
    if value is None:
        if not column.nullable:
            raise Problem(422, "invalid_input", f"{where}: may not be null")
        return None
    kind = logical_type(column.type)
    if kind == "integer":
        if isinstance(value, bool) or not isinstance(value, int) or not -_INT64 <= value < _INT64:
            raise Problem(422, "invalid_input", f"{where}: expected an integer")
        return value
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise Problem(422, "invalid_input", f"{where}: expected a number")
        if not math.isfinite(value):
            raise Problem(422, "invalid_input", f"{where}: expected a finite number")
        return value
    if kind == "boolean":
        if not isinstance(value, bool):
            raise Problem(422, "invalid_input", f"{where}: expected true or false")
        return value
    if kind == "datetime":
        if not isinstance(value, str):
            raise Problem(422, "invalid_input", f"{where}: expected an ISO 8601 date and time")
        return _datetime(value, where)
    if kind in ("string", "text"):
        if not isinstance(value, str):
            raise Problem(422, "invalid_input", f"{where}: expected a string")
        length = getattr(column.type, "length", None)
        if length is not None and len(value) > length:
            raise Problem(422, "invalid_input", f"{where}: at most {length} characters")
        return value
    if isinstance(value, dict | list):
        raise Problem(422, "invalid_input", f"{where}: expected a plain value")
    return value


def _parse(column: Column[Any], kind: str, text: str, where: str) -> Any:
    """A query-string value as what the column holds."""
    if kind == "integer":
        if not re.fullmatch(r"-?[0-9]{1,19}", text):
            raise Problem(422, "invalid_input", f"{where}: expected an integer")
        return _convert(column, int(text), where)
    if kind == "number":
        try:
            number = float(text)
        except ValueError:
            raise Problem(422, "invalid_input", f"{where}: expected a number") from None
        return _convert(column, number, where)
    if kind == "boolean":
        if text.lower() not in ("true", "false", "1", "0"):
            raise Problem(422, "invalid_input", f"{where}: expected true or false")
        return text.lower() in ("true", "1")
    if kind == "datetime":
        return _datetime(text, where)
    return text


def _datetime(text: str, where: str) -> datetime:
    """ISO 8601; stored as naive UTC (a time without a zone is taken as UTC)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise Problem(
            422, "invalid_input", f"{where}: expected an ISO 8601 date and time"
        ) from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def _output(table: Table, row: Any) -> dict[str, Any]:
    return {
        name: _json_value(logical_type(table.columns[name].type), value)
        for name, value in row.items()
    }


def _json_value(kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind == "boolean":
        return bool(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, date | time_of_day):
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value) if kind == "integer" else float(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode()
    return value


# Filters and sorting

_COMPARISONS: dict[str, Callable[[Column[Any], Any], ColumnElement[bool]]] = {
    "eq": lambda column, value: column == value,
    "ne": lambda column, value: column != value,
    "lt": lambda column, value: column < value,
    "le": lambda column, value: column <= value,
    "gt": lambda column, value: column > value,
    "ge": lambda column, value: column >= value,
}
FILTER_OPERATORS = (*_COMPARISONS, "like", "in", "null", "notnull")


def _condition(table: Table, text: str) -> ColumnElement[bool]:
    """`column:operator:value` (`column:null`, `column:notnull` take no value)."""
    parts = text.split(":", 2)
    where = f"filter {text[:80]!r}"
    if len(parts) < 2:
        raise Problem(422, "invalid_input", f"{where}: write column:operator:value")
    column = _column(table, parts[0], where)
    operator = parts[1]
    if operator == "null":
        return column.is_(None)
    if operator == "notnull":
        return column.is_not(None)
    if operator not in FILTER_OPERATORS:
        known = ", ".join(FILTER_OPERATORS)
        raise Problem(422, "invalid_input", f"{where}: unknown operator (known: {known})")
    if len(parts) < 3:
        raise Problem(422, "invalid_input", f"{where}: a value is missing")
    kind = logical_type(column.type)
    value = parts[2]
    if operator == "like":
        if kind not in ("string", "text"):
            raise Problem(422, "invalid_input", f"{where}: 'like' is for string columns")
        return column.like(value)
    if operator == "in":
        values = value.split(",")
        if len(values) > MAX_IN_VALUES:
            raise Problem(422, "invalid_input", f"{where}: at most {MAX_IN_VALUES} values")
        return column.in_([_parse(column, kind, v, where) for v in values])
    return _COMPARISONS[operator](column, _parse(column, kind, value, where))


def _order(table: Table, sort: Sequence[str]) -> list[Any]:
    """`column` ascending, `-column` descending; the primary key last, so pages are stable."""
    order: list[Any] = []
    used: set[str] = set()
    for term in (t.strip() for item in sort for t in item.split(",")):
        if not term:
            continue
        descending = term.startswith("-")
        column = _column(table, term.removeprefix("-"), f"sort {term[:80]!r}")
        if column.name in used:
            continue
        used.add(column.name)
        order.append(column.desc() if descending else column.asc())
    for key in table.primary_key.columns:
        if key.name not in used:
            order.append(key.asc())
    return order
