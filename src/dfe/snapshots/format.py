"""The portable form of an instance database: an engine-neutral schema and canonical rows.

A column has one of ten portable types. A row is one line of JSON, an array of
its values in column order, each written canonically for its type:

    integer   JSON integer            number    JSON float (NaN/Infinity as strings)
    decimal   string, at its scale    boolean   true/false
    datetime  "YYYY-MM-DDTHH:MM:SS.ffffff" (UTC, no zone)
    date      "YYYY-MM-DD"            time      "HH:MM:SS.ffffff"
    string    JSON string             text      JSON string
    binary    base64 string           (null is null for every type)

So the same data reads as the same bytes on SQLite, PostgreSQL and MariaDB, and
a table's checksum (SHA-256 of its lines, in primary-key order) proves a copy
equal wherever it was loaded.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, time
from decimal import Context, Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Double,
    Float,
    Integer,
    LargeBinary,
    Numeric,
    String,
    Text,
    Time,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.types import TypeEngine, _Binary

from dfe.snapshots.errors import SnapshotError

PORTABLE_TYPES = (
    "integer",
    "number",
    "decimal",
    "boolean",
    "datetime",
    "date",
    "time",
    "string",
    "text",
    "binary",
)
# Table and column names a snapshot may carry (quoted everywhere; this only keeps out oddities).
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")
_WIDE = Context(prec=200)  # decimals of any database fit
_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def portable_type(column_type: TypeEngine[Any], where: str) -> dict[str, Any]:
    """The portable type of a reflected column, with its length/precision when it has one."""
    if isinstance(column_type, Boolean) or (
        isinstance(column_type, mysql.TINYINT) and column_type.display_width == 1
    ):
        return {"type": "boolean"}
    if isinstance(column_type, Integer):
        return {"type": "integer"}
    if isinstance(column_type, Float):
        return {"type": "number"}
    if isinstance(column_type, Numeric):
        if column_type.scale is None and column_type.precision is None:
            return {"type": "decimal"}
        return {"type": "decimal", "precision": column_type.precision, "scale": column_type.scale}
    if isinstance(column_type, DateTime):
        return {"type": "datetime"}
    if isinstance(column_type, Date):
        return {"type": "date"}
    if isinstance(column_type, Time):
        return {"type": "time"}
    if isinstance(column_type, Text) or type(column_type).__name__.endswith("TEXT"):
        return {"type": "text"}
    if isinstance(column_type, String):
        length = getattr(column_type, "length", None)
        return {"type": "string", "length": length} if length else {"type": "text"}
    if isinstance(column_type, _Binary | LargeBinary):
        return {"type": "binary"}
    raise SnapshotError(f"{where}: type {column_type!r} cannot be carried by a snapshot")


def sql_type(column: dict[str, Any], *, integer_key: bool = False) -> TypeEngine[Any]:
    """The SQLAlchemy type a portable column is created with, on any of the three engines."""
    kind = column["type"]
    if kind == "integer":
        # SQLite: INTEGER PRIMARY KEY is the rowid alias (it assigns ids like the source did).
        return BigInteger().with_variant(Integer(), "sqlite") if integer_key else BigInteger()
    if kind == "number":
        return Double()
    if kind == "decimal":
        return Numeric(column.get("precision") or 38, column.get("scale") or 10)
    if kind == "boolean":
        return Boolean()
    if kind == "datetime":
        return DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
    if kind == "date":
        return Date()
    if kind == "time":
        return Time().with_variant(mysql.TIME(fsp=6), "mysql", "mariadb")
    if kind == "string":
        return String(int(column["length"]))
    if kind == "text":
        return Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
    if kind == "binary":
        return LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")
    raise SnapshotError(f"unknown column type {kind!r}")


# Canonical values (database -> JSON)


def _datetime_text(value: Any) -> str:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    text: str = value.isoformat(timespec="microseconds")
    return text


def _number(value: Any) -> Any:
    if type(value) is float and value - value == 0.0:  # finite (inf - inf and NaN are NaN)
        return value
    number = float(value)
    if math.isfinite(number):
        return number
    return "NaN" if math.isnan(number) else ("Infinity" if number > 0 else "-Infinity")


def _decimal_text(scale: int | None) -> Callable[[Any], str]:
    exponent = Decimal(1).scaleb(-scale) if scale is not None else None

    def convert(value: Any) -> str:
        if scale is not None and type(value) is Decimal:
            # Fast path: a value already at the column's scale is its own canonical form.
            text = format(value, "f")
            if scale > 0:
                dot = text.find(".")
                if dot >= 0 and len(text) - dot - 1 == scale:
                    return text
            elif text.lstrip("-").isdigit():
                return text
        number = value if isinstance(value, Decimal) else Decimal(str(value))
        if exponent is not None:
            number = number.quantize(exponent, context=_WIDE)
        elif number == number.to_integral_value():
            number = number.quantize(Decimal(1), context=_WIDE)
        else:
            number = number.normalize(_WIDE)
        return format(number, "f")

    return convert


def _time_text(value: Any) -> str:
    if isinstance(value, str):
        value = time.fromisoformat(value)
    text: str = value.isoformat(timespec="microseconds")
    return text


def _date_text(value: Any) -> str:
    if isinstance(value, datetime):
        value = value.date()
    if isinstance(value, str):
        value = date.fromisoformat(value)
    text: str = value.isoformat()
    return text


def _text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def _binary(value: Any) -> str:
    return base64.b64encode(bytes(value)).decode("ascii")


def _converter(column: dict[str, Any]) -> Callable[[Any], Any]:
    """The column's conversion of a non-null database value to its canonical JSON value."""
    kind = column["type"]
    if kind == "decimal":
        return _decimal_text(column.get("scale"))
    converters: dict[str, Callable[[Any], Any]] = {
        "integer": int,
        "number": _number,
        "boolean": bool,
        "datetime": _datetime_text,
        "date": _date_text,
        "time": _time_text,
        "string": _text,
        "text": _text,
        "binary": _binary,
    }
    return converters[kind]


def to_canonical(column: dict[str, Any]) -> Callable[[Any], Any]:
    """A function turning a database value of the column into its canonical JSON value."""
    convert = _converter(column)
    return lambda value: None if value is None else convert(value)


_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
_C_ENCODER = json.encoder.c_make_encoder  # type: ignore[attr-defined]
# One C encoder made once (JSONEncoder.encode makes one per call); the same output as _ENCODE.
_ENCODE_FAST: Callable[[Any], str] = (
    (lambda encoder: lambda values: "".join(encoder(values, 0)))(
        _C_ENCODER(None, None, json.encoder.encode_basestring, None, ":", ",", False, False, False)
    )
    if _C_ENCODER is not None
    else _ENCODE
)
# Types whose values these engines' drivers give as their canonical form already
# (SQLite stores any value in any column: every value is converted there).
_NATIVE = {
    "postgresql": frozenset({"integer", "string", "text", "boolean"}),
    "mysql": frozenset({"integer", "string", "text"}),
}


def encode_row(values: list[Any]) -> bytes:
    """One canonical line (with its newline)."""
    return (_ENCODE(values) + "\n").encode()


def lines_encoder(columns: list[dict[str, Any]], engine: str) -> Callable[[Any], bytes]:
    """A function turning a batch of database rows into their canonical lines, as one
    bytes: `b"".join(encode_row(canonical values) for each row)`, made fast with a
    function generated for these columns (no per-value type dispatch or loop)."""
    native = _NATIVE.get(engine, frozenset())
    namespace: dict[str, Any] = {"_encode": _ENCODE_FAST, "_datetime": datetime}
    # Inline fast paths for what drivers usually give (the converter handles the rest).
    inline = {
        "datetime": "x.isoformat(timespec='microseconds')"
        " if type(x) is _datetime and x.tzinfo is None else ",
        "number": "x if type(x) is float and x - x == 0.0 else ",
    }
    values = []
    for index, column in enumerate(columns):
        if column["type"] in native:
            values.append(f"r[{index}]")
        else:
            namespace[f"c{index}"] = _converter(column)
            fast = inline.get(column["type"], "")
            values.append(f"(None if (x := r[{index}]) is None else {fast}c{index}(x))")
    source = (
        "def encode(rows):\n"
        f"    lines = [_encode([{', '.join(values)}]) for r in rows]\n"
        "    lines.append('')\n"
        "    return '\\n'.join(lines).encode() if len(lines) > 1 else b''\n"
    )
    exec(source, namespace)  # noqa: S102 - generated from column indexes only
    encode: Callable[[Any], bytes] = namespace["encode"]
    return encode


def row_encoder(columns: list[dict[str, Any]], engine: str) -> Callable[[Any], bytes]:
    """`encode_row(canonical values of a database row)` for these columns."""
    encode = lines_encoder(columns, engine)
    return lambda row: encode((row,))


# JSON -> database values


def _from_number(value: Any) -> float:
    if isinstance(value, str):
        if value not in _NON_FINITE:
            raise ValueError("not a number")
        return _NON_FINITE[value]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("not a number")
    return float(value)


def _from_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("not an integer")
    return value


def _from_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("not a boolean")
    return value


def _from_str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("not a string")
    return value


def _from_converter(column: dict[str, Any]) -> Callable[[Any], Any]:
    kind = column["type"]
    converters: dict[str, Callable[[Any], Any]] = {
        "integer": _from_int,
        "number": _from_number,
        "decimal": lambda v: Decimal(_from_str(v)),
        "boolean": _from_bool,
        "datetime": lambda v: datetime.fromisoformat(_from_str(v)),
        "date": lambda v: date.fromisoformat(_from_str(v)),
        "time": lambda v: time.fromisoformat(_from_str(v)),
        "string": _from_str,
        "text": _from_str,
        "binary": lambda v: base64.b64decode(_from_str(v), validate=True),
    }
    return converters[kind]


def from_canonical(column: dict[str, Any]) -> Callable[[Any], Any]:
    """A function turning a canonical JSON value into what the column's type binds."""
    convert = _from_converter(column)
    return lambda value: None if value is None else convert(value)


def row_decoder(columns: list[dict[str, Any]], unchecked: frozenset[str]) -> Callable[[Any], Any]:
    """`[from_canonical(column)(value) ...]` for a row's JSON values, generated for these
    columns; values of the types in `unchecked` go as they are."""
    namespace: dict[str, Any] = {}
    values = []
    for index, column in enumerate(columns):
        if column["type"] in unchecked:
            values.append(f"v[{index}]")
        else:
            namespace[f"c{index}"] = _from_converter(column)
            values.append(f"(None if (x := v[{index}]) is None else c{index}(x))")
    exec(f"def decode(v):\n    return [{', '.join(values)}]\n", namespace)  # noqa: S102
    decode: Callable[[Any], Any] = namespace["decode"]
    return decode


def check_schema(tables: Any) -> list[dict[str, Any]]:
    """Validate a schema description read from an archive; SnapshotError if it is malformed."""
    if not isinstance(tables, list):
        raise SnapshotError("schema.json: expected a list of tables")
    seen: set[str] = set()
    for table in tables:
        if not isinstance(table, dict) or not isinstance(table.get("name"), str):
            raise SnapshotError("schema.json: a table without a name")
        name = table["name"]
        if not NAME.fullmatch(name) or name.lower() in seen:
            raise SnapshotError(f"schema.json: table name {name[:80]!r} is not allowed")
        seen.add(name.lower())
        columns = table.get("columns")
        if not isinstance(columns, list) or not columns:
            raise SnapshotError(f"schema.json: table {name!r} has no columns")
        column_names = set()
        for column in columns:
            if (
                not isinstance(column, dict)
                or not isinstance(column.get("name"), str)
                or not NAME.fullmatch(column["name"])
                or column.get("type") not in PORTABLE_TYPES
                or (column["type"] == "string" and not isinstance(column.get("length"), int))
            ):
                raise SnapshotError(f"schema.json: table {name!r} has a malformed column")
            column_names.add(column["name"])
        if not set(table.get("primary_key", [])) <= column_names:
            raise SnapshotError(f"schema.json: table {name!r}: key on unknown columns")
        for group in [*table.get("unique", []), *[i["columns"] for i in table.get("indexes", [])]]:
            if not isinstance(group, list) or not set(group) <= column_names or not group:
                raise SnapshotError(f"schema.json: table {name!r}: index on unknown columns")
        for foreign in table.get("foreign_keys", []):
            if (
                not isinstance(foreign, dict)
                or not set(foreign.get("columns", [])) <= column_names
                or foreign.get("table") not in seen | {t.get("name") for t in tables}
            ):
                raise SnapshotError(f"schema.json: table {name!r}: malformed foreign key")
    return tables


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
