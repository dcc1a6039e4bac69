"""Importing over an existing MariaDB instance: DDL commits there, so the snapshot's tables
are loaded under temporary names and swapped in only once they read back exactly."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, inspect, text
from sqlalchemy.exc import IntegrityError

from dfe.snapshots import SnapshotError
from dfe.snapshots.archive import StagedSnapshot, apply_staged, stage_snapshot, write_snapshot
from dfe.snapshots.dump import checksum_database, describe_database

COLOURS = "colours_" + "x" * 55  # 63 characters: no room to prefix it


def _staged(tmp_path: Path, *rows: str) -> tuple[StagedSnapshot, Engine]:
    """A SQLite instance's snapshot (people, and pets that refer to them), staged."""
    tmp_path.mkdir(exist_ok=True)
    source = create_engine(f"sqlite:///{tmp_path / 'source.db'}")
    with source.begin() as connection:
        connection.execute(text(f"CREATE TABLE {COLOURS} (id INTEGER PRIMARY KEY, name TEXT)"))
        connection.execute(text(f"INSERT INTO {COLOURS} VALUES (1, 'red'), (2, 'blue')"))
        connection.execute(text("CREATE TABLE people (id INTEGER PRIMARY KEY, name VARCHAR(20))"))
        connection.execute(text("CREATE UNIQUE INDEX ux_people_name ON people (name)"))
        connection.execute(text(f"INSERT INTO people VALUES {', '.join(rows)}"))
        connection.execute(
            text(
                "CREATE TABLE pets (id INTEGER PRIMARY KEY,"
                " owner INTEGER NOT NULL REFERENCES people (id))"
            )
        )
        connection.execute(text("INSERT INTO pets VALUES (10, 1)"))
    written = write_snapshot(
        tmp_path / "source.dfe.tar", instance_name="demo", engine=source, files_root=None
    )
    with open(written.path, "rb") as archive:
        return stage_snapshot(archive, tmp_path / "stage"), source


@pytest.fixture
def instance(server_database) -> Iterator[Engine]:
    """A MariaDB instance with data of its own: `people` (a name the snapshot has too),
    `notes` referring to it and `extra` (names the snapshot lacks)."""
    engine = create_engine(server_database("mysql").url)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE people (id INTEGER PRIMARY KEY, nick TEXT)"))
        connection.execute(text("INSERT INTO people VALUES (1, 'mine'), (2, 'also mine')"))
        connection.execute(
            text(
                "CREATE TABLE notes (id INTEGER PRIMARY KEY, person INTEGER,"
                " FOREIGN KEY (person) REFERENCES people (id))"
            )
        )
        connection.execute(text("INSERT INTO notes VALUES (5, 2)"))
        connection.execute(text("CREATE TABLE extra (id INTEGER PRIMARY KEY)"))
        connection.execute(text("INSERT INTO extra VALUES (9)"))
    yield engine
    engine.dispose()


def _names(engine: Engine) -> list[str]:
    with engine.connect() as connection:
        return sorted(inspect(connection).get_table_names())


def test_a_refused_row_leaves_the_instance_as_it_was(instance, tmp_path):
    """'Ann' and 'ann' are distinct in SQLite; MariaDB's unique index refuses the second,
    after the colours were loaded and while `pets` waits with its foreign key."""
    staged, source = _staged(tmp_path, "(1, 'Ann')", "(2, 'ann')")
    before = checksum_database(instance)
    try:
        with pytest.raises(SnapshotError, match="Duplicate entry"):
            apply_staged(staged, instance, None)
    finally:
        staged.remove()
        source.dispose()
    assert checksum_database(instance) == before  # every table, row and foreign key
    assert _names(instance) == ["extra", "notes", "people"]  # no temporary table behind


def test_a_read_back_difference_leaves_the_instance_as_it_was(instance, tmp_path, monkeypatch):
    """The tables load, but one reads back differently (injected here; test_verification
    has a real one: a decimal MariaDB rounds)."""
    staged, source = _staged(tmp_path, "(1, 'Ann')")
    before = checksum_database(instance)
    entry = staged.manifest["tables"][1]
    monkeypatch.setitem(entry, "sha256", "0" * 64)
    try:
        with pytest.raises(SnapshotError, match="'people' does not read back"):
            apply_staged(staged, instance, None)
    finally:
        staged.remove()
        source.dispose()
    assert checksum_database(instance) == before
    assert _names(instance) == ["extra", "notes", "people"]


def test_an_import_replaces_the_tables_and_keeps_foreign_keys(instance, tmp_path):
    for attempt in range(2):  # the second over tables (and constraints) the first made
        staged, source = _staged(tmp_path / str(attempt), "(1, 'Ann')", "(2, 'Bob')")
        try:
            apply_staged(staged, instance, None)
        finally:
            staged.remove()
        assert _names(instance) == [COLOURS, "people", "pets"]  # notes and extra are gone
        assert checksum_database(instance)[1] == checksum_database(source)[1]
        with instance.connect() as connection:
            pets = next(t for t in describe_database(connection) if t["name"] == "pets")
        assert pets["foreign_keys"] == [
            {"columns": ["owner"], "table": "people", "ref_columns": ["id"]}
        ]
        source.dispose()
    with instance.begin() as connection:
        connection.execute(text("INSERT INTO pets VALUES (11, 2)"))
    with pytest.raises(IntegrityError), instance.begin() as connection:
        connection.execute(text("INSERT INTO pets VALUES (12, 3)"))  # no person 3
