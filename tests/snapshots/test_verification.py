"""Archives that must be refused before anything is touched: tampered, truncated, foreign,
or with entries that would leave the staging directory."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections.abc import Callable
from datetime import UTC, date, datetime, time
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, text

from dfe.snapshots import SnapshotError
from dfe.snapshots.archive import apply_staged, stage_snapshot, write_snapshot
from dfe.snapshots.dump import checksum_database, describe_database
from dfe.snapshots.format import encode_row, from_canonical, lines_encoder, to_canonical

Members = list[tuple[tarfile.TarInfo, bytes]]


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    engine = create_engine(f"sqlite:///{tmp_path / 'source.db'}")
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, name VARCHAR(20))"))
        connection.execute(text("INSERT INTO t VALUES (1, 'one'), (2, 'two')"))
    files = tmp_path / "files"
    (files / "sub").mkdir(parents=True)
    (files / "sub" / "a.txt").write_text("hello")
    written = write_snapshot(
        tmp_path / "good.dfe.tar", instance_name="demo", engine=engine, files_root=files
    )
    engine.dispose()
    return written.path


def members(path: Path) -> Members:
    with tarfile.open(path) as tar:
        return [(m, tar.extractfile(m).read() if m.isreg() else b"") for m in tar.getmembers()]


def rewrite(path: Path, target: Path, change: Callable[[Members], Members]) -> Path:
    with tarfile.open(target, "w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in change(members(path)):
            info.size = len(data)
            info.pax_headers.pop("size", None)  # tables carry their size in a PAX record too
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return target


def replace(name: str, edit: Callable[[bytes], bytes]) -> Callable[[Members], Members]:
    return lambda found: [(i, edit(d) if i.name == name else d) for i, d in found]


def add(info: tarfile.TarInfo, data: bytes = b"x") -> Callable[[Members], Members]:
    return lambda found: [(info, data), *found]


def link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def manifest_edit(edit: Callable[[dict], None]) -> Callable[[bytes], bytes]:
    def change(data: bytes) -> bytes:
        document = json.loads(data)
        edit(document)
        return json.dumps(document).encode()

    return change


def staged_or_error(path: Path, staging: Path) -> str:
    with open(path, "rb") as source, pytest.raises(SnapshotError) as refused:
        stage_snapshot(source, staging)
    assert not staging.exists()  # nothing left behind
    return str(refused.value)


def test_a_good_archive_is_staged(archive, tmp_path):
    with open(archive, "rb") as source:
        staged = stage_snapshot(source, tmp_path / "stage")
    assert staged.manifest["instance"] == "demo"
    assert (staged.files_directory / "sub" / "a.txt").read_text() == "hello"
    staged.remove()


CASES = {
    "changed row": (
        replace("tables/0001.jsonl", lambda d: d.replace(b'"two"', b'"TWO"')),
        "row count or checksum does not match",
    ),
    "removed row": (
        replace("tables/0001.jsonl", lambda d: d.split(b"\n", 1)[1]),
        "row count or checksum does not match",
    ),
    "changed file": (
        replace("files/sub/a.txt", lambda d: b"HELLO"),
        "size or checksum does not match",
    ),
    "wrong format version": (
        replace("manifest.json", manifest_edit(lambda m: m.update(format_version=99))),
        "format version '99' is not supported",
    ),
    "foreign manifest": (
        replace("manifest.json", lambda d: b'{"hello": "world"}'),
        "does not describe a DFE snapshot",
    ),
    "changed schema": (
        replace("schema.json", lambda d: d.replace(b'"length": 20', b'"length": 21')),
        "schema.json does not match",
    ),
    "parent traversal": (add(tarfile.TarInfo("../../etc/passwd")), "leaves its folder"),
    "traversal inside files": (
        add(tarfile.TarInfo("files/../../../etc/passwd")),
        "leaves its folder",
    ),
    "absolute path": (add(tarfile.TarInfo("/etc/passwd")), "absolute path"),
    "symbolic link": (add(link("files/passwd", "/etc/passwd")), "holds a link"),
    "hard link": (add(link("files/passwd", "/etc/passwd", tarfile.LNKTYPE)), "holds a link"),
    "unexpected entry": (add(tarfile.TarInfo("evil.sh")), "unexpected entry"),
    "extra file": (add(tarfile.TarInfo("files/extra.txt")), "not in its manifest"),
    "missing manifest": (
        lambda found: [(i, d) for i, d in found if i.name != "manifest.json"],
        "no manifest.json",
    ),
    "duplicate entry": (
        lambda found: [*found, *[(i, d) for i, d in found if i.name == "files/sub/a.txt"]],
        "twice",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_tampered_archives_are_refused(archive, tmp_path, case):
    change, message = CASES[case]
    bad = rewrite(archive, tmp_path / "bad.tar", change)
    assert message in staged_or_error(bad, tmp_path / "stage")


@pytest.mark.parametrize("keep", [0.3, 0.6, 0.95])
def test_truncated_archives_are_refused(archive, tmp_path, keep):
    with tarfile.open(archive) as tar:
        tar.getmembers()
        content = tar.offset  # where the members end (zero padding follows)
    cut = tmp_path / "cut.tar"
    cut.write_bytes(archive.read_bytes()[: int(content * keep)])
    message = staged_or_error(cut, tmp_path / "stage")
    assert "truncated" in message or "no manifest.json" in message


def test_not_an_archive_is_refused(tmp_path):
    junk = tmp_path / "junk.tar"
    junk.write_bytes(os.urandom(5000))
    assert "not a readable snapshot archive" in staged_or_error(junk, tmp_path / "stage")


def test_tables_are_loaded_from_the_verified_archive_itself(archive, tmp_path):
    """From a file, staging copies only the files; a table changed in the archive after its
    verification does not load."""
    with open(archive, "rb") as source:
        staged = stage_snapshot(source, tmp_path / "stage")
    try:
        assert not (staged.directory / "tables").exists()
        assert (staged.directory / "files" / "sub" / "a.txt").exists()
        assert b"".join(staged.table_chunks("tables/0001.jsonl")) == b'[1,"one"]\n[2,"two"]\n'
        data = archive.read_bytes()
        archive.write_bytes(data.replace(b'"two"', b'"TWO"'))
        target = create_engine(f"sqlite:///{tmp_path / 'target.db'}")
        with pytest.raises(SnapshotError, match="does not read back as the snapshot holds it"):
            apply_staged(staged, target, None)
        target.dispose()
    finally:
        staged.remove()


def test_a_failed_export_leaves_nothing_behind(tmp_path):
    """A table that cannot be exported (its archive's hash already under way in a thread)
    removes the partial archive."""
    engine = create_engine(f"sqlite:///{tmp_path / 'source.db'}")
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, at DATETIME)"))
        connection.execute(text("INSERT INTO t VALUES (1, 'not a time')"))
    files = tmp_path / "files"
    files.mkdir()
    (files / "big.bin").write_bytes(os.urandom(3 << 20))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(SnapshotError, match="cannot export table 't': a value in it"):
        write_snapshot(out / "x.dfe.tar", instance_name="demo", engine=engine, files_root=files)
    assert os.listdir(out) == []
    engine.dispose()


def test_a_refused_archive_changes_nothing(archive, tmp_path):
    """The target's tables and files stay as they were when verification fails."""
    target = create_engine(f"sqlite:///{tmp_path / 'target.db'}")
    with target.begin() as connection:
        connection.execute(text("CREATE TABLE keep (id INTEGER PRIMARY KEY)"))
        connection.execute(text("INSERT INTO keep VALUES (7)"))
    files = tmp_path / "target-files"
    files.mkdir()
    (files / "mine.txt").write_text("mine")
    before = checksum_database(target)[1]
    bad = rewrite(archive, tmp_path / "bad.tar", replace("files/sub/a.txt", lambda d: b"x"))
    with open(bad, "rb") as source, pytest.raises(SnapshotError):
        stage_snapshot(source, tmp_path / "stage")
    assert checksum_database(target)[1] == before
    assert sorted(os.listdir(files)) == ["mine.txt"]
    target.dispose()


# Canonical values: what is written reads back as the same value, and writes the same line.

VALUES = {
    "integer": st.integers(min_value=-(2**63), max_value=2**63 - 1),
    "number": st.floats(allow_nan=True, allow_infinity=True),
    "decimal": st.decimals(allow_nan=False, allow_infinity=False, places=4, max_value=10**20),
    "boolean": st.booleans(),
    "datetime": st.datetimes(timezones=st.none() | st.just(UTC)),
    "date": st.dates(),
    "time": st.times(),
    "string": st.text(max_size=40),
    "text": st.text(),
    "binary": st.binary(),
}


@pytest.mark.parametrize("kind", sorted(VALUES))
def test_canonical_values_round_trip(kind):
    column = {"type": kind, "scale": 4} if kind == "decimal" else {"type": kind}
    out, back = to_canonical(column), from_canonical(column)

    @settings(max_examples=60, deadline=None)
    @given(st.none() | VALUES[kind])
    def check(value: object) -> None:
        canonical = out(value)
        line = encode_row([canonical])
        assert out(back(json.loads(line)[0])) == canonical
        if value is None:
            assert canonical is None
        elif kind == "datetime":
            assert isinstance(value, datetime)
            naive = value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value
            assert back(canonical) == naive
        elif kind in ("date", "time", "binary", "string", "text", "integer", "boolean"):
            assert back(canonical) == value
        elif kind == "decimal":
            assert isinstance(value, Decimal) and back(canonical) == value

    check()


def test_canonical_forms_are_fixed():
    assert to_canonical({"type": "datetime"})("2024-01-02 03:04:05") == "2024-01-02T03:04:05.000000"
    assert to_canonical({"type": "time"})(time(1, 2)) == "01:02:00.000000"
    assert to_canonical({"type": "date"})(datetime(2024, 1, 2, 3)) == "2024-01-02"
    assert to_canonical({"type": "date"})(date(2024, 1, 2)) == "2024-01-02"
    assert to_canonical({"type": "decimal", "scale": 2})(Decimal("1.5")) == "1.50"
    assert to_canonical({"type": "boolean"})(1) is True
    assert to_canonical({"type": "number"})(float("nan")) == "NaN"


# Loading: the tables are read back in the load's transaction.


def _decimal_archive(tmp_path: Path, line: bytes) -> Path:
    """An archive of one table (id, price NUMERIC(12, 2)) whose single row is `line`, with a
    manifest that matches it (as a forger would make it)."""
    engine = create_engine(f"sqlite:///{tmp_path / 'decimal.db'}")
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, price NUMERIC(12, 2))"))
        connection.execute(text("INSERT INTO t VALUES (1, 1.5)"))
    written = write_snapshot(
        tmp_path / "decimal.dfe.tar", instance_name="demo", engine=engine, files_root=None
    )
    engine.dispose()
    sha = hashlib.sha256(line).hexdigest()
    return rewrite(
        written.path,
        tmp_path / "forged.tar",
        lambda found: replace(
            "manifest.json", manifest_edit(lambda m: m["tables"][0].update(sha256=sha, rows=1))
        )(replace("tables/0001.jsonl", lambda d: line)(found)),
    )


@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
@pytest.mark.parametrize(
    ("line", "message"),
    [
        # The server takes it (rounding to the column's scale): the read-back differs.
        (b'[1,"1.234"]\n', "does not read back as the snapshot holds it"),
        # The server (or the decoder) refuses it.
        (b'[1,"lots"]\n', "table 't'"),
    ],
)
def test_a_row_that_does_not_load_exactly_changes_nothing(
    server_database, tmp_path, line, message, kind
):
    """PostgreSQL rolls the transaction back; MariaDB drops the tables it loaded beside
    the instance's."""
    forged = _decimal_archive(tmp_path, line)
    with open(forged, "rb") as source:
        staged = stage_snapshot(source, tmp_path / "stage")  # every checksum matches
    target = create_engine(server_database(kind).url)
    try:
        with target.begin() as connection:
            connection.execute(text("CREATE TABLE keep (id INTEGER PRIMARY KEY)"))
            connection.execute(text("INSERT INTO keep VALUES (7)"))
        before = checksum_database(target)
        with pytest.raises(SnapshotError, match=message):
            apply_staged(staged, target, None)
        assert checksum_database(target) == before  # still only `keep`
    finally:
        staged.remove()
        target.dispose()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "mysql"])
@pytest.mark.parametrize(
    "line",
    [
        b"[1]\n",  # too few values
        b'[1,"one","two"]\n',  # too many
        b"not json\n",
        b'[1,"one"\n',  # no closing bracket
        b'[1,"o\tne"]\n',  # a raw tab: not JSON (and a column too many in COPY's text)
        b'{"id":1}\n',
        b'[1, "one"]\n',  # valid JSON, but not the canonical line: loads, reads back otherwise
    ],
)
def test_a_malformed_row_with_a_matching_manifest_changes_nothing(
    archive, server_database, tmp_path, line, kind
):
    """Verification sums rows without parsing them: a forged row whose checksum matches
    passes it, and the load refuses it (parsed, refused by the server, or read back
    otherwise) before anything of the instance changes."""
    sha = hashlib.sha256(line).hexdigest()
    forged = rewrite(
        archive,
        tmp_path / "forged.tar",
        lambda found: replace(
            "manifest.json", manifest_edit(lambda m: m["tables"][0].update(sha256=sha, rows=1))
        )(replace("tables/0001.jsonl", lambda d: line)(found)),
    )
    with open(forged, "rb") as source:
        staged = stage_snapshot(source, tmp_path / "stage")  # every checksum matches
    url = f"sqlite:///{tmp_path / 'target.db'}" if kind == "sqlite" else server_database(kind).url
    target = create_engine(url)
    files = tmp_path / "target-files"
    files.mkdir()
    (files / "mine.txt").write_text("mine")
    try:
        with target.begin() as connection:
            connection.execute(text("CREATE TABLE keep (id INTEGER PRIMARY KEY)"))
            connection.execute(text("INSERT INTO keep VALUES (7)"))
        before = checksum_database(target)
        with pytest.raises(SnapshotError, match="table 't'"):
            apply_staged(staged, target, files)
        assert checksum_database(target) == before  # still only `keep`
        assert sorted(os.listdir(files)) == ["mine.txt"]
    finally:
        staged.remove()
        target.dispose()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_indexes_are_made_after_the_rows_and_kept(server_database, tmp_path, kind):
    engine = create_engine(f"sqlite:///{tmp_path / 'indexed.db'}")
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER, u INTEGER)"))
        connection.execute(text("CREATE INDEX ix_t_n ON t (n)"))
        connection.execute(text("CREATE UNIQUE INDEX ux_t_u ON t (u)"))
        connection.execute(text("INSERT INTO t VALUES (1, 5, 1), (2, 5, 2)"))
    written = write_snapshot(
        tmp_path / "indexed.dfe.tar", instance_name="demo", engine=engine, files_root=None
    )
    with open(written.path, "rb") as source:
        staged = stage_snapshot(source, tmp_path / "stage")
    url = (
        f"sqlite:///{tmp_path / 'target.db'}"
        if kind == "sqlite"
        else server_database("postgresql").url
    )
    target = create_engine(url)
    try:
        apply_staged(staged, target, None)
        with engine.connect() as before, target.connect() as after:
            kept = ("primary_key", "unique", "indexes")
            assert [{k: t[k] for k in kept} for t in describe_database(after)] == [
                {k: t[k] for k in kept} for t in describe_database(before)
            ]
            assert describe_database(after)[0]["indexes"] == [{"columns": ["n"]}]
        assert checksum_database(target)[1] == checksum_database(engine)[1]
    finally:
        staged.remove()
        target.dispose()
        engine.dispose()


@pytest.mark.parametrize("engine", ["sqlite", "postgresql", "mysql"])
def test_the_generated_encoder_writes_the_canonical_lines(engine):
    """lines_encoder (with its fast paths) gives encode_row of to_canonical, value by value."""
    kinds = sorted(VALUES)
    columns = [{"type": k, "scale": 4} if k == "decimal" else {"type": k} for k in kinds]
    encode = lines_encoder(columns, engine)
    native = {
        "postgresql": {"integer", "string", "text", "boolean"},
        "mysql": {"integer", "string", "text"},
    }.get(engine, set())

    @settings(max_examples=80, deadline=None)
    @given(st.lists(st.tuples(*[st.none() | VALUES[k] for k in kinds]), max_size=4))
    def check(rows: list[tuple[object, ...]]) -> None:
        expected = b"".join(
            encode_row(
                [
                    v if k in native else to_canonical(c)(v)
                    for k, c, v in zip(kinds, columns, row, strict=True)
                ]
            )
            for row in rows
        )
        assert encode(rows) == expected

    check()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_rows_longer_than_a_read_block_load(server_database, tmp_path, kind):
    """Archives are read a block (1 MB) at a time: a row may span several blocks."""
    engine = create_engine(f"sqlite:///{tmp_path / 'long.db'}")
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)"))
        rows = [{"id": i, "body": f"{i}" * (i * 700_000 + 1)} for i in range(5)]
        connection.execute(text("INSERT INTO t VALUES (:id, :body)"), rows)
    written = write_snapshot(
        tmp_path / "long.dfe.tar", instance_name="demo", engine=engine, files_root=None
    )
    with open(written.path, "rb") as source:
        staged = stage_snapshot(source, tmp_path / "stage")
    assert staged.manifest["tables"][0]["rows"] == 5
    url = f"sqlite:///{tmp_path / 'target.db'}" if kind == "sqlite" else server_database(kind).url
    target = create_engine(url)
    try:
        apply_staged(staged, target, None)
        assert checksum_database(target)[1] == checksum_database(engine)[1]
    finally:
        staged.remove()
        target.dispose()
        engine.dispose()


def test_an_archive_from_a_stream_is_staged_whole(archive, tmp_path):
    """Not from a file: tables are copied too, and a cut stream is refused."""
    data = archive.read_bytes()
    staged = stage_snapshot(io.BytesIO(data), tmp_path / "stage")
    try:
        assert (staged.directory / "tables" / "0001.jsonl").read_bytes() == (
            b'[1,"one"]\n[2,"two"]\n'
        )
        target = create_engine(f"sqlite:///{tmp_path / 'target.db'}")
        apply_staged(staged, target, tmp_path / "files")
        assert checksum_database(target)[1]["t"].rows == 2
        target.dispose()
    finally:
        staged.remove()
    with pytest.raises(SnapshotError, match=r"truncated|no manifest\.json"):
        stage_snapshot(io.BytesIO(data[: len(data) // 3]), tmp_path / "stage2")
    assert not (tmp_path / "stage2").exists()
