"""PostgreSQL makes a table's canonical lines itself (postgres.py): they must be exactly the
Python encoder's, value by value, for every type it takes."""

from __future__ import annotations

import math
import random
import struct
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, text

from dfe.snapshots import SnapshotError
from dfe.snapshots.dump import (
    describe_database,
    dump_chunks,
    encoded_chunks,
    load_table,
    replace_schema,
)
from dfe.snapshots.postgres import CSV, ROWS, TEXT, lines_query, plain_runs

COLUMNS = {
    "i2": ("SMALLINT", st.integers(-(2**15), 2**15 - 1)),
    "i8": ("BIGINT", st.integers(-(2**63), 2**63 - 1)),
    "f8": ("DOUBLE PRECISION", st.floats()),
    "f4": ("REAL", st.floats(width=32)),
    "d4": (
        "NUMERIC(20, 4)",
        st.decimals(places=4, allow_nan=False, max_value=10**15, min_value=-(10**15)),
    ),
    "d0": (
        "NUMERIC(12, 0)",
        st.decimals(places=0, allow_nan=False, max_value=10**11, min_value=-(10**11)),
    ),
    "dn": (
        "NUMERIC",
        st.decimals(allow_nan=False, allow_infinity=False, max_value=10**30, min_value=-(10**30)),
    ),
    "b": ("BOOLEAN", st.booleans()),
    "ts": ("TIMESTAMP", st.datetimes()),
    "tz": (
        "TIMESTAMPTZ",
        st.datetimes(
            min_value=datetime(2, 1, 1),
            max_value=datetime(9998, 1, 1),
            timezones=st.just(UTC) | st.just(timezone(timedelta(hours=-7, minutes=-30))),
        ),
    ),
    "dt": ("DATE", st.dates()),
    "tm": ("TIME", st.times()),
    "vc": (
        "VARCHAR(300)",
        st.text(st.characters(exclude_characters="\0", codec="utf-8"), max_size=40),
    ),
    "ch": ("CHAR(5)", st.text(st.characters(exclude_characters="\0 ", codec="utf-8"), max_size=5)),
    "tx": ("TEXT", st.text(st.characters(exclude_characters="\0", codec="utf-8"))),
    "by": ("BYTEA", st.binary(max_size=200)),
}
EDGE_FLOATS = [
    0.0,
    -0.0,
    1.0,
    -1.0,
    0.1,
    1e14,
    123456789012345.6,
    1e15,
    -1e15,
    1234567890123456.7,
    9999999999999998.0,
    1e16,
    -1e16,
    1e22,
    1e-4,
    1e-5,
    1.5e-7,
    5e-324,
    2.2250738585072014e-308,
    1.7976931348623157e308,
    4.21667094190677e16,
    3.092535278770144e18,
    2.0**63,
    math.nan,
    math.inf,
    -math.inf,
    1e15 + 0.5,
    2.0**53,
    100.0,
]


@pytest.fixture(scope="module")
def table(server_database):
    engine = create_engine(server_database("postgresql").url)
    columns = ", ".join(f"{name} {kind}" for name, (kind, _) in COLUMNS.items())
    with engine.begin() as connection:
        connection.execute(text(f"CREATE TABLE t (id SERIAL PRIMARY KEY, {columns})"))
    yield engine
    engine.dispose()


def both(engine) -> tuple[bytes, bytes]:
    """The table's lines as the server makes them and as the Python encoder does."""
    with engine.connect() as connection:
        (description,) = describe_database(connection)
        assert lines_query(connection, description) is not None  # the server's path is taken
        made = list(dump_chunks(connection, description))
        encoded = list(encoded_chunks(connection, description))
    for chunks in (made, encoded):
        assert all(chunk.count(b"\n") == rows for chunk, rows in chunks)
    return b"".join(c for c, _ in made), b"".join(c for c, _ in encoded)


def insert(engine, rows: list[dict[str, object]]) -> None:
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM t"))
        if rows:
            names = ", ".join(COLUMNS)
            values = ", ".join(f":{name}" for name in COLUMNS)
            connection.execute(text(f"INSERT INTO t ({names}) VALUES ({values})"), rows)


def test_edge_values_are_written_as_the_python_encoder_writes_them(table):
    rows = [dict.fromkeys(COLUMNS) for _ in EDGE_FLOATS]
    for row, number in zip(rows, EDGE_FLOATS, strict=True):
        row["f8"] = number
        row["f4"] = (
            struct.unpack("f", struct.pack("f", number))[0] if math.isfinite(number) else number
        )
    rows[0].update(
        vc="".join(map(chr, range(1, 128))) + 'é\u2028\U0001f600\\"',
        ch="ab",
        tx="line\nbreak\ttab\\N\\\\",
        by=bytes(range(256)),
        d4=Decimal("-0.0001"),
        dn=Decimal("100.000"),
        ts=datetime(1, 1, 1),
        tz=datetime(2024, 3, 31, 1, 30, tzinfo=timezone(timedelta(hours=2))),
        dt=date(9999, 12, 31),
        tm=time(23, 59, 59, 999999),
        b=False,
        i8=-(2**63),
    )
    rows[1].update(vc="", tx="", by=b"", dn=Decimal("1.50"), d0=Decimal(0), tm=time(0), b=True)
    rows[2].update(dn=Decimal("NaN"), ts=datetime(9999, 12, 31, 23, 59, 59, 999999))
    insert(table, rows)
    made, encoded = both(table)
    assert made.count(b"\n") == len(rows)
    assert made == encoded


def test_random_floats_are_written_as_python_writes_them(table):
    """PostgreSQL's digits differ from Python's above 2**53 (one value in a few); such values
    are marked and written by Python, the others by the server."""
    generator = random.Random(8)
    numbers = [struct.unpack("d", generator.randbytes(8))[0] for _ in range(20000)]
    numbers += [float(generator.randint(-(2**62), 2**62)) for _ in range(5000)]
    numbers += [generator.uniform(-1e17, 1e17) for _ in range(5000)]
    rows = [dict.fromkeys(COLUMNS) for _ in numbers]
    for row, number in zip(rows, numbers, strict=True):
        row["f8"] = number
    insert(table, rows)
    made, encoded = both(table)
    assert made == encoded


VALUES = st.fixed_dictionaries({name: st.none() | values for name, (_, values) in COLUMNS.items()})


def test_any_values_are_written_as_the_python_encoder_writes_them(table):
    @settings(max_examples=60, deadline=None)
    @given(st.lists(VALUES, max_size=5))
    def check(rows: list[dict[str, object]]) -> None:
        insert(table, rows)
        made, encoded = both(table)
        assert made.split(b",") == encoded.split(b",")

    check()


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("ts", "infinity"),
        ("ts", "10000-01-01 00:00:00"),
        ("ts", "0044-03-15 00:00:00 BC"),
        ("dt", "-infinity"),
        ("tm", "24:00:00"),
        ("dn", "Infinity"),
    ],
)
def test_a_value_python_cannot_hold_fails_the_dump(table, column, value):
    with table.begin() as connection:
        connection.execute(text("DELETE FROM t"))
        connection.execute(text(f"INSERT INTO t ({column}) VALUES (:value)"), {"value": value})
    with table.connect() as connection:
        (description,) = describe_database(connection)
        with pytest.raises(SnapshotError, match="cannot be carried by a snapshot"):
            list(dump_chunks(connection, description))


def test_other_types_go_through_the_python_encoder(server_database):
    engine = create_engine(server_database("postgresql").url)
    try:
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE z (id INTEGER PRIMARY KEY, at TIMETZ)"))
            connection.execute(text("INSERT INTO z VALUES (1, '12:30:00+02')"))
        with engine.connect() as connection:
            (description,) = describe_database(connection)
            assert lines_query(connection, description) is None
            assert b"".join(c for c, _ in dump_chunks(connection, description)) == (
                b'[1,"12:30:00.000000+02:00"]\n'
            )
    finally:
        engine.dispose()


def test_lines_load_back_exactly_plain_or_not(table, server_database):
    """Loading takes runs of plain lines as CSV and decodes the others (escapes, binary):
    every row reads back as the line it came from, and in the same order."""
    rows = [dict.fromkeys(COLUMNS) for _ in range(12)]
    for index, row in enumerate(rows):
        row.update(i8=index, f8=EDGE_FLOATS[index], vc=f'plain, [{index}] "quoted"'[: 8 + index])
    rows[3].update(tx="a\nnew line", vc="back\\slash")
    rows[4].update(tx="null", vc="")
    rows[7].update(dn=Decimal("12.50"), ts=datetime(2024, 5, 6, 7, 8, 9, 10), tm=time(1, 2, 3))
    insert(table, rows)
    with table.connect() as connection:
        (description,) = describe_database(connection)
        lines = b"".join(chunk for chunk, _ in dump_chunks(connection, description))
    target = create_engine(server_database("postgresql").url)
    try:
        for columns in (
            description["columns"],
            [c for c in description["columns"] if c["name"] != "by"],
        ):
            kept = {**description, "columns": columns}
            with table.connect() as connection:
                lines = b"".join(chunk for chunk, _ in dump_chunks(connection, kept))
            pieces = [b"".join(line + b"\n" for line in group) for group in _groups(lines, 5)]
            assert _load_and_read_back(target, kept, pieces) == lines
    finally:
        target.dispose()


def _load_and_read_back(target, description, pieces: list[bytes]) -> bytes:
    """Load `pieces` into a fresh table of `description` on `target`; its lines read back."""
    with target.begin() as connection:
        built = replace_schema(connection, [description])
        load_table(connection, built["t"], description, pieces)
        return b"".join(chunk for chunk, _ in dump_chunks(connection, description))


def _groups(lines: bytes, size: int) -> list[list[bytes]]:
    split = lines.split(b"\n")[:-1]
    return [split[start : start + size] for start in range(0, len(split), size)]


def test_plain_runs_split_chunks_at_escapes():
    chunk = b'[1,"a"]\n[2,"b\\"c"]\n[3,"d"]\n[4,"e"]\n'
    assert list(plain_runs([chunk], 2)) == [
        (TEXT, b"1\ta\n"),
        (ROWS, b'[2,"b\\"c"]\n'),
        (TEXT, b"3\td\n4\te\n"),
    ]
    # A comma or "null" in a string: CSV, which quotes strings.
    assert list(plain_runs([b'[3,"d,e"]\n[4,null]\n'], 2)) == [(CSV, b'3,"d,e"\n4,null\n')]
    assert list(plain_runs([b'[3,"null"]\n[4,null]\n'], 2)) == [(CSV, b'3,"null"\n4,null\n')]
    assert list(plain_runs([b'[3,""]\n[4,null]\n'], 2)) == [(TEXT, b"3\t\n4\tnull\n")]
    # A bracket in a string: decoded row by row.
    assert list(plain_runs([b'[1,"a]"]\n[2,"b"]\n'], 2)) == [
        (ROWS, b'[1,"a]"]\n'),
        (TEXT, b"2\tb\n"),
    ]
    with pytest.raises(SnapshotError, match="cut short"):
        list(plain_runs([b'[1,"a"]\n[2]'], 2))


def test_text_csv_and_decoded_runs_load_back_exactly(table, server_database):
    """Runs in the server's text format, as CSV and decoded row by row, in one table."""
    rows = [dict.fromkeys(COLUMNS) for _ in range(9)]
    for index, row in enumerate(rows):
        row.update(i8=index, vc=f"word {index}", tx="", f8=index / 3, b=index % 2 == 0)
        row.update(dn=Decimal(index) / 4, ts=datetime(2024, 1, index + 1, 5), tm=time(index))
    rows[2].update(vc="with, a comma")  # CSV
    rows[3].update(tx="null")  # CSV
    rows[5].update(tx='a "quote"')  # decoded
    rows[7].update(vc=None, tx=None, f8=math.nan)  # text, NULLs and "NaN"
    insert(table, rows)
    with table.connect() as connection:
        (description,) = describe_database(connection)
        kept = {**description, "columns": [c for c in description["columns"] if c["name"] != "by"]}
        lines = b"".join(chunk for chunk, _ in dump_chunks(connection, kept))
    pieces = [b"".join(line + b"\n" for line in group) for group in _groups(lines, 2)]
    kinds = {kind for piece in pieces for kind, _ in plain_runs([piece], len(kept["columns"]))}
    assert kinds == {TEXT, CSV, ROWS}
    target = create_engine(server_database("postgresql").url)
    try:
        assert _load_and_read_back(target, kept, pieces) == lines
    finally:
        target.dispose()
