"""PostgreSQL: canonical lines made by the server; plain lines loaded as CSV.

On PostgreSQL a table's canonical lines (format.py) are computed by one SELECT,
an expression per column that gives exactly what the Python encoder gives for
the value the driver would return, and streamed out in chunks of rows: no
per-value work in Python, on export and on an import's read-back alike. It is
used only where every column has one of the plain types below (and the server
is PostgreSQL 14 or later, the connection speaks UTF-8); any other table goes
through the Python encoder.

    int2/int4/int8       x::text
    float4/float8        shortest round-trip digits (extra_float_digits = 1), in Python's
                         repr form ("1.0", "-0.0", "1e-05"); a real as the driver gives it
                         (its shortest text read as a double). From 1e15 on, the forms
                         differ (Python writes 1e15 in full) and so may the digits (from
                         2**53 PostgreSQL's Ryu keeps a digit where a shorter decimal is
                         exactly half-way to the next double, Python takes it): such a
                         value comes marked, and Python writes it from its exact text
    numeric(p, s)        "x::text" (a value is stored at its column's scale)
    numeric              "trim_scale(x)::text" (an integer without decimals, else no
                         trailing zeros: Decimal.normalize)
    bool                 true / false
    timestamp[tz]        "to_char(x, 'YYYY-MM-DD"T"HH24:MI:SS.US')", timestamptz in UTC
    date, time           to_char, ISO (time with microseconds)
    varchar/bpchar/text  to_json(x): JSON's escapes, the same as Python's json module
    bytea                base64 without line breaks

A value Python cannot hold (a timestamp or date outside years 1-9999 or
infinite, time 24:00:00, an infinite numeric) makes its line NULL; the reader
sees it and fails as the Python path does, naming the table.

Loading (dump._copy_rows) goes the other way with COPY FROM STDIN: runs of plain
lines are handed to the server in its text format or as CSV, changed a whole run
at once (`plain_runs`); the others are decoded in Python.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from itertools import groupby
from typing import Any, cast

from sqlalchemy import Connection, text

from dfe.provisioning.drivers.base import describe
from dfe.snapshots.errors import SnapshotError

CHUNK_ROWS = 5000
# A float of 1e15 or more comes marked (\x01, which no canonical line holds) for Python to write.
_MARKED = re.compile(rb"\x01([-+.e0-9]+)\x01")

_DATETIME_FORMAT = "'YYYY-MM-DD\"T\"HH24:MI:SS.US'"


def _float(x: str, type_name: str) -> str:
    # A real comes to Python as its shortest text read as a double (psycopg's loader).
    value = f"{x}::text::float8" if type_name == "float4" else f"{x}::float8"
    shown = f"{value}::text"
    # Below 1e15 PostgreSQL writes a whole number without a point or exponent ("5", "-0"),
    # any other with one of them, as Python does.
    return (
        f"CASE WHEN {x} IS NULL THEN 'null'"
        f" WHEN {value} IN ('NaN', 'Infinity', '-Infinity') THEN '\"' || {shown} || '\"'"
        f" WHEN abs({value}) >= 1e15::float8 THEN chr(1) || {shown} || chr(1)"
        f" WHEN {value} = trunc({value}) THEN {shown} || '.0'"
        f" ELSE {shown} END"
    )


def _datetime(x: str, zoned: bool) -> str:
    value = f"({x} AT TIME ZONE 'UTC')" if zoned else x
    return (
        f"CASE WHEN {x} IS NULL THEN 'null'"
        f" WHEN {value} >= '0001-01-01' AND {value} < '10000-01-01'"
        f" THEN '\"' || to_char({value}, {_DATETIME_FORMAT}) || '\"' END"
    )


def _column(x: str, type_name: str, modifier: int, column: dict[str, Any]) -> str | None:
    """The SQL of one column's canonical JSON value (never NULL but for a value that cannot
    be carried), or None when this column's type has no expression here."""
    kind = column["type"]
    expected = {
        "int2": "integer",
        "int4": "integer",
        "int8": "integer",
        "float4": "number",
        "float8": "number",
        "numeric": "decimal",
        "bool": "boolean",
        "timestamp": "datetime",
        "timestamptz": "datetime",
        "date": "date",
        "time": "time",
        "varchar": ("string", "text"),
        "bpchar": ("string", "text"),
        "text": ("string", "text"),
        "bytea": "binary",
    }.get(type_name)
    if expected is None or kind not in (expected if isinstance(expected, tuple) else (expected,)):
        return None
    if kind == "integer":
        return f"coalesce({x}::text, 'null')"
    if kind == "number":
        return _float(x, type_name)
    if kind == "decimal":
        scale = column.get("scale")
        if scale is None and modifier == -1:
            # Unconstrained: may hold 'Infinity', which Python refuses too.
            return (
                f"CASE WHEN {x} IS NULL THEN 'null'"
                f" WHEN {x} NOT IN ('Infinity', '-Infinity') THEN '\"' || trim_scale({x})::text"
                " || '\"' END"
            )
        if isinstance(scale, int) and modifier >= 4 and (modifier - 4) & 0xFFFF == scale:
            return f"coalesce('\"' || {x}::text || '\"', 'null')"
        return None
    if kind == "boolean":
        return f"CASE WHEN {x} IS NULL THEN 'null' WHEN {x} THEN 'true' ELSE 'false' END"
    if kind == "datetime":
        return _datetime(x, zoned=type_name == "timestamptz")
    if kind == "date":
        return (
            f"CASE WHEN {x} IS NULL THEN 'null'"
            f" WHEN {x} >= '0001-01-01' AND {x} < '10000-01-01'"
            f" THEN '\"' || to_char({x}::timestamp, 'YYYY-MM-DD') || '\"' END"
        )
    if kind == "time":
        return (
            f"CASE WHEN {x} IS NULL THEN 'null' WHEN {x} < '24:00:00'"
            f" THEN '\"' || to_char({x}::interval, 'HH24:MI:SS.US') || '\"' END"
        )
    if kind in ("string", "text"):
        return f"coalesce(to_json({x})::text, 'null')"
    return f"coalesce('\"' || translate(encode({x}, 'base64'), E'\\n', '') || '\"', 'null')"


def lines_query(connection: Connection, description: dict[str, Any]) -> str | None:
    """The SELECT giving the table's canonical lines (without newlines) in key order, or
    None if a column's type has no expression here."""
    found = connection.execute(
        text(
            "SELECT a.attname, t.typname, a.atttypmod FROM pg_attribute a"
            " JOIN pg_type t ON t.oid = a.atttypid"
            " WHERE a.attrelid = (SELECT c.oid FROM pg_class c WHERE c.relname = :name"
            "  AND c.relnamespace = current_schema()::regnamespace)"
            " AND a.attnum > 0 AND NOT a.attisdropped"
        ),
        {"name": description["name"]},
    ).all()
    types = {name: (type_name, modifier) for name, type_name, modifier in found}
    quote = connection.dialect.identifier_preparer.quote
    values = []
    for column in description["columns"]:
        if column["name"] not in types:
            return None
        value = _column(quote(column["name"]), *types[column["name"]], column)
        if value is None:
            return None
        values.append(value)
    order = description.get("primary_key") or [c["name"] for c in description["columns"]]
    line = " || ',' || ".join(values)
    # Names are checked (format.NAME) and quoted; the rest is made here.
    return (
        f"SELECT '[' || {line} || ']' FROM {quote(description['name'])}"  # noqa: S608
        f" ORDER BY {', '.join(quote(name) for name in order)}"
    )


def server_chunks(
    connection: Connection, description: dict[str, Any]
) -> Iterator[tuple[bytes, int]] | None:
    """The table's canonical lines as `dump.dump_chunks` gives them, made by the server; None
    where the Python encoder must make them (see lines_query)."""
    # Floats as their shortest exact digits, whatever the session had (both paths read them so).
    connection.execute(text("SET LOCAL extra_float_digits = 1"))
    info = getattr(connection.connection.driver_connection, "info", None)
    # From PostgreSQL 14 (trim_scale, numeric infinity), on a UTF-8 connection.
    if getattr(info, "encoding", None) != "utf-8" or getattr(info, "server_version", 0) < 140000:
        return None
    query = lines_query(connection, description)
    if query is None:
        return None
    return _stream(connection, query, description["name"])


def _stream(connection: Connection, query: str, table: str) -> Iterator[tuple[bytes, int]]:
    import psycopg
    from psycopg.types.string import ByteaBinaryLoader

    raw = cast("psycopg.Connection[Any]", connection.connection.driver_connection)
    # libpq 17 sends rows in chunks (psycopg-binary bundles it); before, one at a time.
    size = CHUNK_ROWS if psycopg.pq.version() >= 170000 else 1
    try:
        with raw.cursor(binary=True) as cursor:
            # The lines as the server's bytes (UTF-8), not decoded to be encoded again.
            cursor.adapters.register_loader("text", ByteaBinaryLoader)
            pending: list[bytes | None] = []
            for (line,) in cursor.stream(query, size=size, binary=True):
                pending.append(line)
                if len(pending) >= CHUNK_ROWS:
                    yield _chunk(pending, table)
                    pending = []
            if pending:
                yield _chunk(pending, table)
    except psycopg.Error as error:
        raise SnapshotError(f"table {table!r}: {describe(error)}") from None


def _chunk(lines: list[bytes | None], table: str) -> tuple[bytes, int]:
    if None in lines:
        raise SnapshotError(
            f"table {table!r}: a value cannot be carried by a snapshot"
            " (a date or time outside years 1-9999, or an infinite number)"
        )
    rows = len(lines)
    data = b"\n".join([*cast("list[bytes]", lines), b""])
    if b"\x01" in data:
        data = _MARKED.sub(lambda found: repr(float(found[1])).encode(), data)
    return data, rows


# Rows in


TEXT, CSV, ROWS = "text", "csv", "rows"  # how plain_runs hands over a run of lines
_TABS = bytes.maketrans(b",", b"\t")


def plain_runs(chunks: Iterable[bytes], width: int) -> Iterator[tuple[str, bytes]]:
    """The chunks (of whole lines of `width` values) as runs of lines, each ready for the
    COPY format it is marked with:

    - a *plain* line has no backslash and no bracket but its own two: its JSON strings
      hold no quote, escape or control character, so it reads as CSV (`,` between
      values, strings in double quotes, `null` unquoted for NULL) once its brackets are
      deleted (CSV);
    - if moreover no string holds a comma (the run has `width - 1` commas a line) and
      none is "null", it also reads as COPY's text format with `,` made a tab and the
      quotes deleted (TEXT: the server parses that fastest);
    - other lines come as they are, to be decoded row by row (ROWS).

    Each is done to a whole run at once, with no work per row. Whatever the server makes
    of a line, the read-back after the load must give the archive's line again."""
    for chunk in chunks:
        converted = _converted(chunk, width)
        if converted is not None:
            yield converted
            continue
        lines = chunk.split(b"\n")
        if lines.pop():
            raise SnapshotError("a row is cut short")
        for plain, group in groupby(lines, key=_plain_line):
            run = b"\n".join(group) + b"\n"
            converted = _converted(run, width) if plain else None
            yield converted if converted is not None else (ROWS, run)


def _plain_line(line: bytes) -> bool:
    return b"\\" not in line and line.count(b"[") == 1 and line.count(b"]") == 1


def _converted(lines: bytes, width: int) -> tuple[str, bytes] | None:
    """Plain lines as TEXT or CSV; None if a line is not plain. (Lines are not parsed: a
    line that is not the JSON array it seems to be is refused by the server, or loads as
    something whose read-back differs from it.)"""
    if b"\\" in lines:
        return None
    rows = lines.count(b"\n")
    body = lines.translate(None, b"[]")
    if len(lines) - len(body) != 2 * rows:
        return None
    if body.count(b",") == rows * (width - 1) and b'"null"' not in body:
        return TEXT, body.translate(_TABS, b'"')
    return CSV, body
