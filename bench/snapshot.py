"""Benchmark: snapshot export + import of a generated instance against the raw floor.

    .venv/bin/python bench/snapshot.py [--size-mb 200] [--rounds 2] [--pg-url URL]

The instance: a PostgreSQL database (one table of integers, strings, text, floats,
booleans, timestamps and decimals, made server-side with generate_series) holding
about 70 % of `--size-mb`, and files (random bytes, 1 MB each) for the rest.

- DFE: in a child process of its own (so its peak memory, ru_maxrss, is its own):
  `write_snapshot` (the export job's work: the server writes the canonical lines,
  streamed into the archive), then `stage_snapshot` + `apply_staged` (the import job's
  work: verify every checksum, the files into a staging directory; load with
  COPY into a fresh database, read every table back and compare, move the files in).
  The import's verification alone is printed too.
- Floor, the same data in the same run: `pg_dump -Fc -Z0` of the database to a file,
  `pg_restore` into a fresh database, and the files copied twice (out and back, as an
  archive and its restore copy them).

Throughput is the instance's size (table data as pg_total_relation_size, plus the
files) over the wall time of export + import. Rounds alternate (DFE, floor, DFE, ...);
the best of each is reported. Every database and file made is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy.engine import URL, make_url

DEFAULT_PG = os.environ.get("DFE_TEST_PG_URL", "postgresql+psycopg://root@127.0.0.1:5432/test")
FILE_BYTES = 1 << 20


def admin(url: str) -> psycopg.Connection:
    parsed = make_url(url)
    return psycopg.connect(
        host=parsed.host or "127.0.0.1",
        port=parsed.port or 5432,
        user=parsed.username,
        password=parsed.password or None,
        dbname="postgres",
        autocommit=True,
    )


def database_url(url: str, name: str) -> str:
    parsed = make_url(url)
    return URL.create(
        "postgresql+psycopg",
        username=parsed.username,
        password=parsed.password,
        host=parsed.host or "127.0.0.1",
        port=parsed.port or 5432,
        database=name,
    ).render_as_string(hide_password=False)


def libpq_args(url: str, name: str) -> list[str]:
    parsed = make_url(url)
    return [
        "-h",
        parsed.host or "127.0.0.1",
        "-p",
        str(parsed.port or 5432),
        "-U",
        parsed.username or "postgres",
        "-d",
        name,
    ]


def generate(url: str, name: str, files: Path, size_mb: int) -> int:
    """Make the instance; its size in bytes (table data + files)."""
    table_bytes = int(size_mb * 0.7 * (1 << 20))
    rows = max(100, table_bytes // 560)  # about 560 bytes a row on disk
    with admin(url) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    with psycopg.connect(database_url(url, name).replace("+psycopg", ""), autocommit=True) as c:
        c.execute(
            "CREATE TABLE items (id BIGSERIAL PRIMARY KEY, title VARCHAR(255) NOT NULL,"
            " body TEXT, n BIGINT, score DOUBLE PRECISION, done BOOLEAN,"
            " at TIMESTAMP, price NUMERIC(12, 2))"
        )
        c.execute(
            "INSERT INTO items (title, body, n, score, done, at, price)"
            " SELECT 'item ' || g, repeat(md5(g::text), 12), g * 7919,"
            " g / 7.0, g %% 2 = 0, timestamp '2024-01-01' + g * interval '1 second',"
            " (g %% 100000) / 100.0 FROM generate_series(1, %s) AS g",
            (rows,),
        )
        c.execute("CREATE INDEX ix_items_n ON items (n)")
        c.execute("VACUUM ANALYZE items")
        table = c.execute("SELECT pg_total_relation_size('items')").fetchone()[0]
    files.mkdir(parents=True)
    file_bytes = int(size_mb * 0.3 * (1 << 20))
    for index in range(max(1, file_bytes // FILE_BYTES)):
        directory = files / f"d{index % 10}"
        directory.mkdir(exist_ok=True)
        (directory / f"f{index}.bin").write_bytes(os.urandom(FILE_BYTES))
    return int(table) + sum(p.stat().st_size for p in files.rglob("*") if p.is_file())


def drop(url: str, *names: str) -> None:
    with admin(url) as connection:
        for name in names:
            connection.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def create(url: str, name: str) -> None:
    with admin(url) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


# The DFE side, in a child process


def child(source_url: str, target_url: str, files: str, work: str) -> None:
    from dfe.snapshots.archive import apply_staged, stage_snapshot, write_snapshot
    from dfe.snapshots.dump import open_engine

    # A worker has its drivers imported already: do not time the first import.
    open_engine(source_url).dispose()
    directory = Path(work)
    started = time.perf_counter()
    engine = open_engine(source_url)
    written = write_snapshot(
        directory / "bench.dfe.tar", instance_name="bench", engine=engine, files_root=Path(files)
    )
    engine.dispose()
    exported = time.perf_counter()
    with open(written.path, "rb") as source:
        staged = stage_snapshot(source, directory / "staging")
    verified = time.perf_counter()
    target = open_engine(target_url)
    apply_staged(staged, target, directory / "restored")
    target.dispose()
    staged.remove()
    done = time.perf_counter()
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "export": exported - started,
                "import": done - exported,
                "verify": verified - exported,
                "archive_bytes": written.size,
                "peak_mb": peak_kb / 1024,
            }
        )
    )


def run_dfe(url: str, source: str, files: Path, work: Path) -> dict[str, float]:
    target = f"dfe_bench_t_{uuid.uuid4().hex[:8]}"
    create(url, target)
    round_dir = work / f"dfe-{uuid.uuid4().hex[:6]}"
    round_dir.mkdir()
    try:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                database_url(url, source),
                database_url(url, target),
                str(files),
                str(round_dir),
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        return dict(json.loads(out.strip().splitlines()[-1]))
    finally:
        drop(url, target)
        shutil.rmtree(round_dir, ignore_errors=True)


def run_floor(url: str, source: str, files: Path, work: Path) -> dict[str, float]:
    target = f"dfe_bench_f_{uuid.uuid4().hex[:8]}"
    create(url, target)
    round_dir = work / f"floor-{uuid.uuid4().hex[:6]}"
    round_dir.mkdir()
    dump = round_dir / "dump.pgc"
    try:
        started = time.perf_counter()
        subprocess.run(
            ["pg_dump", "-Fc", "-Z0", "-f", str(dump), *libpq_args(url, source)], check=True
        )
        shutil.copytree(files, round_dir / "files-out")
        exported = time.perf_counter()
        subprocess.run(
            ["pg_restore", "--no-owner", *libpq_args(url, target), str(dump)], check=True
        )
        shutil.copytree(round_dir / "files-out", round_dir / "files-back")
        done = time.perf_counter()
        return {"export": exported - started, "import": done - exported}
    finally:
        drop(url, target)
        shutil.rmtree(round_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--pg-url", default=DEFAULT_PG)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child:
        child(*arguments.child)
        return
    url = arguments.pg_url
    source = f"dfe_bench_s_{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="dfe-bench-snapshot-") as scratch:
        work = Path(scratch)
        try:
            size = generate(url, source, work / "files", arguments.size_mb)
            mb = size / (1 << 20)
            print(f"instance: {mb:.0f} MB (table data and indexes, and files)")
            ours: list[dict[str, float]] = []
            floor: list[dict[str, float]] = []
            for _ in range(arguments.rounds):
                ours.append(run_dfe(url, source, work / "files", work))
                floor.append(run_floor(url, source, work / "files", work))
        finally:
            drop(url, source)
    best = min(ours, key=lambda r: r["export"] + r["import"])
    best_floor = min(floor, key=lambda r: r["export"] + r["import"])
    ours_rate = mb / (best["export"] + best["import"])
    floor_rate = mb / (best_floor["export"] + best_floor["import"])
    print(
        f"DFE   export {best['export']:6.2f} s  import {best['import']:6.2f} s"
        f"  -> {ours_rate:6.1f} MB/s  (archive {best['archive_bytes'] / (1 << 20):.0f} MB,"
        f" import's verification {best['verify']:.2f} s)"
    )
    print(
        f"floor export {best_floor['export']:6.2f} s  import {best_floor['import']:6.2f} s"
        f"  -> {floor_rate:6.1f} MB/s  (pg_dump -Fc -Z0 / pg_restore, files copied twice)"
    )
    print(f"ratio DFE / floor: {ours_rate / floor_rate:.2f} (aim >= 0.5)")
    print(f"peak memory of the DFE process: {max(r['peak_mb'] for r in ours):.0f} MB (aim < 200)")


if __name__ == "__main__":
    main()
