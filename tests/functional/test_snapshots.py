"""Snapshots through the API, on every Console engine: ownership, links, uploads, refusals
that change nothing, purge and move (instance databases on SQLite files here; the engine
pairs are in tests/snapshots)."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import time
from datetime import timedelta

from sqlalchemy import select
from tests.functional import snapshot_estate as estate

from dfe.db.base import utcnow
from dfe.jobs import daily
from dfe.models import AuditEntry, DailyRun, Instance, Snapshot
from dfe.provisioning import instance_database_names
from dfe.services import snapshots
from dfe.snapshots.dump import checksum_database


def setup_instance(console, db, tmp_path, name="alpha"):
    estate.build(db, tmp_path, "sqlite", "sqlite")
    launched = console.client.post(
        "/api/v1/instances", json={"name": name, "owner": estate.OWNER, "cluster": "c-src"}
    )
    assert launched.status_code == 202, launched.text
    engine = estate.instance_engine(db, name)
    estate.populate(engine, estate.files_root(db, name), rows=10)
    engine.dispose()
    return console.as_(console.login(estate.OWNER, estate.PASSWORD))


def export(client, name="alpha") -> dict:
    response = client.post(f"/api/v1/instances/{name}/exports")
    assert response.status_code == 202, response.text
    assert response.json()["job"]["status"] == "succeeded", response.json()
    return client.get("/api/v1/snapshots").json()["items"][0]


def state_of(db, name):
    engine = estate.instance_engine(db, name)
    try:
        return checksum_database(engine)[1], estate.file_sums(estate.files_root(db, name))
    finally:
        engine.dispose()


def test_owner_exports_lists_links_and_downloads(console, db, tmp_path):
    ann = setup_instance(console, db, tmp_path)
    snapshot = export(ann)
    assert snapshot["instance_name"] == "alpha"
    assert snapshot["origin"] == "export"
    assert snapshot["summary"]["rows"] == 9
    assert ann.get(f"/api/v1/snapshots/{snapshot['id']}").json()["sha256"] == snapshot["sha256"]

    link = ann.post(f"/api/v1/snapshots/{snapshot['id']}/links").json()
    assert link["expires"] > time.time() + 29 * 86400
    downloaded = ann.get("/api/v1" + link["url"])
    assert downloaded.status_code == 200, downloaded.text
    assert hashlib.sha256(downloaded.content).hexdigest() == snapshot["sha256"]
    assert len(downloaded.content) == snapshot["size"]

    # A signature for another time, or for another snapshot, is refused.
    forged = link["url"].replace(f"expires={link['expires']}", f"expires={link['expires'] + 1}")
    assert ann.get("/api/v1" + forged).status_code == 403
    # Expired: refused with 410 and a clear message.
    past = int(time.time()) - 10
    expired = ann.get(
        f"/api/v1/snapshots/{snapshot['id']}/download",
        params={"expires": past, "sig": snapshots.link_signature(snapshot["id"], past)},
    )
    assert expired.status_code == 410
    assert "expired" in expired.json()["detail"]


def test_another_users_snapshot_is_invisible(console, db, tmp_path):
    ann = setup_instance(console, db, tmp_path)
    snapshot = export(ann)
    link = ann.post(f"/api/v1/snapshots/{snapshot['id']}/links").json()
    bob = console.as_(console.login(estate.OTHER, estate.PASSWORD))
    assert bob.get("/api/v1/snapshots").json()["items"] == []
    sid = snapshot["id"]
    for response in (
        bob.get(f"/api/v1/snapshots/{sid}"),
        bob.delete(f"/api/v1/snapshots/{sid}"),
        bob.post(f"/api/v1/snapshots/{sid}/links"),
        bob.get("/api/v1" + link["url"]),  # a valid link is not enough
        bob.post("/api/v1/instances/bobs/imports", json={"snapshot_id": sid}),
        bob.post("/api/v1/instances/alpha/exports"),
    ):
        assert response.status_code == 404, response.text
    with db.session() as s:
        assert s.scalar(select(Instance.id).where(Instance.name == "bobs")) is None
    assert ann.get(f"/api/v1/snapshots/{sid}").status_code == 200


def test_import_over_an_existing_instance_and_into_a_new_one(console, db, tmp_path):
    ann = setup_instance(console, db, tmp_path)
    snapshot = export(ann)
    original = state_of(db, "alpha")
    engine = estate.instance_engine(db, "alpha")
    from dfe.host.runtime.tables import Tables

    Tables(engine).insert_rows("notes", [{"title": "written after the export"}])
    engine.dispose()
    (estate.files_root(db, "alpha") / "later.txt").write_text("later")
    assert state_of(db, "alpha") != original

    back = ann.post("/api/v1/instances/alpha/imports", json={"snapshot_id": snapshot["id"]})
    assert back.status_code == 202, back.text
    assert back.json()["job"]["status"] == "succeeded", back.json()
    assert state_of(db, "alpha") == original

    fresh = ann.post(
        "/api/v1/instances/beta/imports", json={"snapshot_id": snapshot["id"], "cluster": "c-dst"}
    )
    assert fresh.json()["job"]["status"] == "succeeded", fresh.json()
    assert state_of(db, "beta") == original


def tampered(data: bytes) -> bytes:
    """The archive with one row changed (and its manifest left as it was)."""
    out = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(data)) as source,
        tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as target,
    ):
        for member in source.getmembers():
            content = source.extractfile(member).read()
            if member.name == "tables/0002.jsonl":
                content = content.replace(b"note 1", b"note X")
            member.size = len(content)
            member.pax_headers.pop("size", None)  # tables carry their size in a PAX record too
            target.addfile(member, io.BytesIO(content))
    return out.getvalue()


def test_a_tampered_upload_is_refused_and_changes_nothing(console, db, tmp_path):
    ann = setup_instance(console, db, tmp_path)
    snapshot = export(ann)
    link = ann.post(f"/api/v1/snapshots/{snapshot['id']}/links").json()
    archive = ann.get("/api/v1" + link["url"]).content
    before = state_of(db, "alpha")

    refused = ann.post(
        "/api/v1/instances/alpha/imports/archive",
        content=tampered(archive),
        headers={"content-type": "application/x-tar"},
    )
    assert refused.status_code == 202, refused.text
    job = refused.json()["job"]
    assert job["status"] == "failed"
    assert "row count or checksum does not match the manifest" in job["message"]
    assert state_of(db, "alpha") == before

    # The genuine archive, uploaded, imports.
    accepted = ann.post(
        "/api/v1/instances/gamma/imports/archive",
        content=archive,
        params={"cluster": "c-dst"},
        headers={"content-type": "application/x-tar"},
    )
    assert accepted.json()["job"]["status"] == "succeeded", accepted.json()
    assert state_of(db, "gamma") == before


def test_uploads_over_the_limit_are_refused(console, db, tmp_path):
    ann = setup_instance(console, db, tmp_path)
    limit = console.app.state.settings.snapshot_max_upload_bytes
    response = ann.post(
        "/api/v1/instances/alpha/imports/archive",
        headers={"content-type": "application/x-tar", "content-length": str(limit + 1)},
        content=b"x" * 10,
    )
    assert response.status_code in (400, 413)


def test_purge_removes_expired_snapshots_and_audits(console, db, tmp_path):
    ann = setup_instance(console, db, tmp_path)
    old, kept = export(ann), None
    with db.transaction(actor="test") as s:
        row = s.get(Snapshot, old["id"])
        path = snapshots.snapshot_path(s, row)
        row.expires_at = utcnow() - timedelta(days=1)
    assert path.is_file()
    kept = export(ann)
    # The worker's daily tasks run the purge (once a day, whichever worker claims it).
    assert "snapshots.purge" in daily.run_due(db, console.app.state.settings)
    assert not path.exists()
    assert [s["id"] for s in ann.get("/api/v1/snapshots").json()["items"]] == [kept["id"]]
    with db.session() as s:
        actions = list(
            s.scalars(select(AuditEntry.action).where(AuditEntry.target_type == "snapshot"))
        )
        run = s.scalars(select(DailyRun).where(DailyRun.task == "snapshots.purge")).one()
    assert "snapshot.purge" in actions
    assert (run.succeeded, run.message) == (True, "1 expired snapshot(s) purged")


def test_move_to_another_db_server(console, db, tmp_path, monkeypatch):
    monkeypatch.setattr("dfe.snapshots.jobs.time.sleep", lambda _s: None)
    setup_instance(console, db, tmp_path)
    before = state_of(db, "alpha")
    with db.session() as s:
        instance = s.scalars(select(Instance).where(Instance.name == "alpha")).one()
        old_file = tmp_path / "c-src" / "instances" / f"{instance.db_name}.db"
        names = instance_database_names("alpha", instance.id)
    assert old_file.is_file()
    moved = console.client.post("/api/v1/instances/alpha/moves", json={"db_server": "db-dst"})
    assert moved.status_code == 202, moved.text
    assert moved.json()["job"]["status"] == "succeeded", moved.json()
    shown = console.client.get("/api/v1/instances/alpha").json()
    assert shown["db_server"] == "db-dst"
    assert state_of(db, "alpha") == before
    assert not old_file.exists()
    assert (tmp_path / "c-dst" / "instances" / f"{names[0]}.db").is_file()
    with db.session() as s:
        instance = s.scalars(select(Instance).where(Instance.name == "alpha")).one()
        assert "read_only" not in instance.data
    # Users may not move instances.
    ann = console.as_(console.login(estate.OWNER, estate.PASSWORD))
    denied = ann.post("/api/v1/instances/alpha/moves", json={"db_server": "db-src"})
    assert denied.status_code == 403


def test_a_failed_move_leaves_the_instance_where_it_was(console, db, tmp_path, monkeypatch):
    monkeypatch.setattr("dfe.snapshots.jobs.time.sleep", lambda _s: None)
    setup_instance(console, db, tmp_path)
    before = state_of(db, "alpha")

    def broken(*_args, **_kwargs):
        raise RuntimeError("the target server went away")

    monkeypatch.setattr("dfe.snapshots.jobs.copy_database", broken)
    moved = console.client.post("/api/v1/instances/alpha/moves", json={"db_server": "db-dst"})
    assert moved.json()["job"]["status"] == "failed"
    assert console.client.get("/api/v1/instances/alpha").json()["db_server"] == "db-src"
    assert state_of(db, "alpha") == before
    assert list((tmp_path / "c-dst" / "instances").glob("*.db")) == []
    with db.session() as s:
        instance = s.scalars(select(Instance).where(Instance.name == "alpha")).one()
        assert "read_only" not in instance.data


def test_manifest_lists_every_table_and_file(console, db, tmp_path):
    ann = setup_instance(console, db, tmp_path)
    snapshot = export(ann)
    link = ann.post(f"/api/v1/snapshots/{snapshot['id']}/links").json()
    archive = ann.get("/api/v1" + link["url"]).content
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        names = tar.getnames()
        manifest = json.loads(tar.extractfile("manifest.json").read())
    assert names[0] == "schema.json" and names[-1] == "manifest.json"
    assert manifest["format"] == "dfe-snapshot" and manifest["format_version"] == 1
    assert [t["name"] for t in manifest["tables"]] == ["empty_one", "notes"]
    assert {f["path"] for f in manifest["files"]} >= {"docs/deep/a.txt", "blob.bin", "empty.txt"}
