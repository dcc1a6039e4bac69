"""`dfe instance export|import|move` and `dfe snapshot ...` on this machine's database."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from tests.functional import snapshot_estate as estate
from typer.testing import CliRunner

from dfe.cli.main import app
from dfe.config import get_settings
from dfe.db.base import utcnow
from dfe.models import Snapshot
from dfe.provisioning import engine
from dfe.provisioning.engine import JobRunner
from dfe.services import identity, infrastructure


@pytest.fixture
def dfe(cli_env):
    runner = CliRunner()

    def run(*args: str, expect: int = 0) -> str:
        result = runner.invoke(app, list(args), catch_exceptions=False)
        assert result.exit_code == expect, result.output
        return result.output

    return run


def launch(db, name: str, cluster: str = "c-src") -> None:
    with db.transaction(actor="test") as s:
        owner = identity.get_user(s, estate.OWNER)
        _, job = engine.launch(s, owner, name, infrastructure.get_cluster(s, cluster).id)
    JobRunner(db, get_settings()).run(job.id)


def test_export_list_download_import_and_purge(dfe, db, tmp_path):
    estate.build(db, tmp_path, "sqlite", "sqlite")
    launch(db, "alpha")
    engine = estate.instance_engine(db, "alpha")
    estate.populate(engine, estate.files_root(db, "alpha"), rows=5)
    engine.dispose()

    out = dfe("instance", "export", "alpha", "--wait")
    assert "succeeded" in out
    [snapshot] = json.loads(dfe("snapshot", "list", "--json"))
    assert snapshot["instance_name"] == "alpha"
    assert (
        json.loads(dfe("snapshot", "show", str(snapshot["id"]), "--json"))["id"] == snapshot["id"]
    )

    archive = tmp_path / "copy.dfe.tar"
    dfe("snapshot", "download", str(snapshot["id"]), "-o", str(archive))
    assert archive.stat().st_size == snapshot["size"]

    out = dfe(
        "instance",
        "import",
        "beta",
        "--file",
        str(archive),
        "--owner",
        estate.OWNER,
        "--cluster",
        "c-dst",
        "--wait",
    )
    assert "succeeded" in out
    out = dfe("instance", "import", "alpha", "--snapshot", str(snapshot["id"]), "--wait")
    assert "succeeded" in out
    first = estate.instance_engine(db, "alpha")
    second = estate.instance_engine(db, "beta")
    assert estate.canonical_rows(first) == estate.canonical_rows(second)
    first.dispose()
    second.dispose()

    with db.transaction(actor="test") as s:
        for row in s.query(Snapshot):
            row.expires_at = utcnow() - timedelta(minutes=1)
    assert json.loads(dfe("snapshot", "purge", "--json"))["purged"]
    assert json.loads(dfe("snapshot", "list", "--json")) == []


def test_bad_input_is_one_error_line(dfe, db, tmp_path):
    estate.build(db, tmp_path, "sqlite", "sqlite")
    launch(db, "alpha")
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not an archive at all" * 100)
    out = dfe("instance", "import", "alpha", "--file", str(junk), "--wait", expect=1)
    assert "not a readable snapshot archive" in out
    assert "Traceback" not in out
    out = dfe("instance", "import", "alpha", expect=2)
    assert "error: name exactly one of --snapshot ID and --file ARCHIVE" in out
    assert "error:" in dfe("snapshot", "show", "999", expect=2)
    assert "error:" in dfe("instance", "move", "alpha", "--db-server", "nope", expect=2)
    assert "error:" in dfe("instance", "export", "nope", expect=2)
