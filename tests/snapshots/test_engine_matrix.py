"""Export on one engine, import on another: every pair of SQLite, PostgreSQL and MariaDB.

The Console's own database is SQLite here (the instance engines are what vary);
`test_snapshots.py` runs the API on all three Console engines.
"""

from __future__ import annotations

import pytest
from tests.functional import snapshot_estate as estate

from dfe.snapshots.dump import checksum_database

KINDS = ("sqlite", "postgresql", "mysql")


@pytest.mark.parametrize("target", KINDS)
@pytest.mark.parametrize("source", KINDS)
def test_round_trip_between_engines(console, db, tmp_path, source, target):
    estate.build(db, tmp_path, source, target)
    client = console.client
    name, copy = f"src{source[:2]}{target[:2]}", f"dst{source[:2]}{target[:2]}"
    launched = client.post(
        "/api/v1/instances", json={"name": name, "owner": estate.OWNER, "cluster": "c-src"}
    )
    assert launched.status_code == 202, launched.text
    source_engine = estate.instance_engine(db, name)
    estate.populate(source_engine, estate.files_root(db, name))

    exported = client.post(f"/api/v1/instances/{name}/exports")
    assert exported.status_code == 202, exported.text
    job = exported.json()["job"]
    assert (job["kind"], job["status"]) == ("export", "succeeded"), job
    listed = client.get("/api/v1/snapshots").json()["items"]
    assert [s["instance_name"] for s in listed] == [name]
    snapshot = listed[0]
    assert snapshot["source_engine"] == source
    assert snapshot["summary"]["tables"] == 2

    imported = client.post(
        f"/api/v1/instances/{copy}/imports",
        json={"snapshot_id": snapshot["id"], "cluster": "c-dst"},
    )
    assert imported.status_code == 202, imported.text
    assert imported.json()["job"]["status"] == "succeeded", imported.json()
    shown = client.get(f"/api/v1/instances/{copy}").json()
    assert (shown["cluster"], shown["db_server"]) == ("c-dst", "db-dst")

    target_engine = estate.instance_engine(db, copy)
    try:
        # Every row, value by value, in its canonical form (exact: no float rounding).
        assert estate.canonical_rows(target_engine) == estate.canonical_rows(source_engine)
        assert checksum_database(target_engine)[1] == checksum_database(source_engine)[1]
        assert estate.file_sums(estate.files_root(db, copy)) == estate.file_sums(
            estate.files_root(db, name)
        )
        # The copy assigns new ids after the largest imported one.
        from dfe.host.runtime.tables import Tables

        largest = max(
            int(line.split(b",")[0][1:]) for line in estate.canonical_rows(source_engine)["notes"]
        )
        added = Tables(target_engine).insert_rows("notes", [{"title": "after the import"}])
        assert added[0]["id"] == largest + 1
    finally:
        source_engine.dispose()
        target_engine.dispose()
    for instance in (name, copy):
        assert client.delete(f"/api/v1/instances/{instance}").status_code == 202
