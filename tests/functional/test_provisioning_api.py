"""Launching and deleting instances through the API and the CLI: answers, rules, scoping,
progress, exit codes, and `dfe reconcile` (on every Console engine; SQLite instance dbs)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from dfe.cli.main import app as cli_app
from dfe.config import Settings
from dfe.enums import JobStatus
from dfe.models import Instance
from dfe.provisioning import LocalStorage, driver_for, instance_database_names
from dfe.provisioning.engine import JobRunner
from dfe.schemas import ClusterCreate, MountCreate, ServerCreate, UserCreate
from dfe.services import identity, infrastructure

PASSWORD = "a-long-enough-password"
ANN, BOB = "ann@example.com", "bob@example.com"


def build_estate(db, root: Path) -> dict[str, Path]:
    """Cluster `local` (SQLite instance dbs, a local mount) and cluster `broken`, whose
    db server is a PostgreSQL nobody listens on; users ann and bob."""
    with db.transaction(actor="test") as s:
        infrastructure.create_mount(s, MountCreate(name="disk", root_path=str(root / "storage")))
        servers = [
            ServerCreate(
                name="db-1",
                server_type="db",
                host="localhost",
                config={"driver": "sqlite", "path": str(root / "instances")},
            ),
            ServerCreate(
                name="db-down",
                server_type="db",
                host="127.0.0.1",
                config={"driver": "postgresql", "port": 1, "admin_user": "root"},
            ),
            ServerCreate(name="web-1", server_type="web", host="localhost", mount="disk"),
            ServerCreate(name="app-1", server_type="app", host="localhost"),
        ]
        for server in servers:
            infrastructure.create_server(s, server)
        for cluster, members in (
            ("local", ("db-1", "web-1", "app-1")),
            ("broken", ("db-down", "web-1", "app-1")),
        ):
            created = infrastructure.create_cluster(
                s, ClusterCreate(name=cluster, subdomain=f"{cluster}.example.com")
            )
            for name in members:
                infrastructure.assign_server(s, created.id, name)
        for email in (ANN, BOB):
            identity.create_user(s, UserCreate(email=email, password=PASSWORD))
    return {"storage": root / "storage", "instances": root / "instances"}


class RecordingDispatcher:
    """Keeps the jobs instead of running them (the test runs them when it wants)."""

    def __init__(self) -> None:
        self.jobs: list[int] = []

    def claim(self, session: Any, job: Any) -> None:
        return None  # as a queue does: the worker claims the job

    def dispatch(self, job_id: int, claimed: Any = None) -> None:
        self.jobs.append(job_id)


def launch(client, name: str, **body: Any):
    return client.post("/api/v1/instances", json={"name": name, **body})


NAME_RULES = [
    ("ab", "must be 3 to 63 characters long"),
    ("a" * 64, "at most 63 characters"),
    ("Upper", "must be lower case"),
    ("1abc", "must start with a letter"),
    ("www", "'www' is reserved"),
    ("console", "'console' is reserved"),
    ("bad_name", "may contain only letters a-z, digits and hyphens"),
    ("ends-", "must not end with a hyphen"),
]


def test_a_name_breaking_a_rule_gets_422_naming_the_rule(console, db, tmp_path):
    build_estate(db, tmp_path)
    for name, rule in NAME_RULES:
        response = launch(console.client, name, owner=ANN)
        assert response.status_code == 422, (name, response.text)
        assert response.json()["code"] == "invalid_input"
        assert rule in response.text, (name, response.text)
    assert console.client.get("/api/v1/jobs").json()["total"] == 0
    assert console.client.get("/api/v1/instances").json()["total"] == 0


def test_launch_is_202_with_the_job_and_duplicates_and_full_clusters_are_409(console, db, tmp_path):
    paths = build_estate(db, tmp_path)
    client = console.client
    response = launch(client, "first", owner=ANN)
    assert response.status_code == 202, response.text
    body = response.json()
    assert set(body) == {"instance", "job"}
    assert body["instance"]["name"] == "first"
    assert body["instance"]["owner"] == ANN
    assert body["instance"]["cluster"] == "local"
    assert body["instance"]["host"] == "first.local.example.com"
    assert (body["instance"]["db_server"], body["instance"]["web_server"]) == ("db-1", "web-1")
    assert body["job"]["kind"] == "provision" and body["job"]["instance_name"] == "first"
    assert client.get(f"/api/v1/jobs/{body['job']['id']}").json()["status"] == "succeeded"
    assert "password" not in json.dumps(body)
    assert not {"db_name", "db_user", "db_password", "storage_key"} & set(body["instance"])

    duplicate = launch(client, "first", owner=BOB)
    assert duplicate.status_code == 409
    assert duplicate.json()["code"] == "conflict"
    assert "already exists" in duplicate.json()["detail"]

    assert client.patch("/api/v1/clusters/local", json={"max_instances": 1}).status_code == 200
    full = launch(client, "second", owner=ANN)
    assert full.status_code == 409, full.text
    assert full.headers["content-type"] == "application/problem+json"
    assert full.json()["code"] == "insufficient_capacity"
    assert "full" in full.json()["detail"]

    assert client.patch("/api/v1/clusters/local", json={"max_instances": 10}).status_code == 200
    assert client.patch("/api/v1/servers/db-1", json={"max_instances": 1}).status_code == 200
    no_server = launch(client, "third", owner=ANN)
    assert no_server.status_code == 409
    assert no_server.json()["code"] == "insufficient_capacity"
    assert "no enabled db server with room" in no_server.json()["detail"]

    # Refused launches left no instance, no job, no database file and no tree behind.
    assert [i["name"] for i in client.get("/api/v1/instances").json()["items"]] == ["first"]
    assert client.get("/api/v1/jobs").json()["total"] == 1
    assert len(list(paths["instances"].glob("*.db"))) == 1
    assert {name for _, name in LocalStorage(paths["storage"]).list_instance_trees()} == {"first"}


def test_unknown_cluster_or_owner_is_404_and_an_admin_must_name_an_owner(console, db, tmp_path):
    build_estate(db, tmp_path)
    assert launch(console.client, "nowhere", owner=ANN, cluster="mars").status_code == 404
    assert launch(console.client, "nobody", owner="eve@example.com").status_code == 404
    ownerless = launch(console.client, "ownerless")
    assert ownerless.status_code == 422
    assert "owner" in ownerless.json()["detail"]


def test_users_launch_for_themselves_and_touch_only_their_own(console, db, tmp_path):
    build_estate(db, tmp_path)
    ann = console.as_(console.login(ANN, PASSWORD))
    bob = console.as_(console.login(BOB, PASSWORD))

    mine = launch(ann, "annsapp")
    assert mine.status_code == 202, mine.text
    assert mine.json()["instance"]["owner"] == ANN
    job_id = mine.json()["job"]["id"]
    for owner in (BOB, ANN):
        refused = launch(ann, "forbob", owner=owner)
        assert refused.status_code == 403, refused.text
        assert refused.json()["code"] == "forbidden"
    assert console.client.get("/api/v1/instances/forbob").status_code == 404

    assert bob.get("/api/v1/instances/annsapp").status_code == 404
    assert bob.delete("/api/v1/instances/annsapp").status_code == 404
    assert bob.get(f"/api/v1/jobs/{job_id}").status_code == 404
    assert bob.get("/api/v1/jobs").json()["total"] == 0
    assert bob.get("/api/v1/instances").json()["total"] == 0
    assert ann.get(f"/api/v1/jobs/{job_id}").json()["status"] == "succeeded"
    assert console.client.get("/api/v1/instances/annsapp").json()["provision_state"] == (
        "provisioned"
    )

    deleted = ann.delete("/api/v1/instances/annsapp")
    assert deleted.status_code == 202, deleted.text
    assert deleted.json()["job"]["status"] == "succeeded"
    assert ann.get("/api/v1/instances/annsapp").json()["archived"] is True
    assert bob.get("/api/v1/instances/annsapp").status_code == 404
    assert ann.delete("/api/v1/instances/annsapp").status_code == 404


def test_jobs_are_listed_by_status_and_kind(console, db, tmp_path):
    build_estate(db, tmp_path)
    ann = console.as_(console.login(ANN, PASSWORD))
    bob = console.as_(console.login(BOB, PASSWORD))
    assert launch(ann, "annsapp").status_code == 202
    assert ann.delete("/api/v1/instances/annsapp").status_code == 202
    console.app.state.dispatcher = RecordingDispatcher()  # nobody runs the next job
    assert launch(ann, "waiting").status_code == 202

    def listed(client, **params):
        answer = client.get("/api/v1/jobs", params=params)
        assert answer.status_code == 200, answer.text
        assert answer.json()["total"] == len(answer.json()["items"])
        return sorted((j["instance_name"], j["kind"], j["status"]) for j in answer.json()["items"])

    assert listed(ann, kind="deprovision") == [("annsapp", "deprovision", "succeeded")]
    assert listed(ann, status="queued") == [("waiting", "provision", "queued")]
    assert listed(ann, status="succeeded", kind="provision") == [
        ("annsapp", "provision", "succeeded")
    ]
    assert listed(ann, status="failed") == []
    assert listed(bob, status="queued") == []  # a user still sees only their own
    assert listed(console.client, status="queued") == [("waiting", "provision", "queued")]
    refused = ann.get("/api/v1/jobs", params={"status": "stuck"})
    assert refused.status_code == 422
    assert "status" in refused.text


def test_a_second_delete_while_deprovisioning_returns_the_same_job(console, db, tmp_path):
    paths = build_estate(db, tmp_path)
    dispatcher = RecordingDispatcher()
    console.app.state.dispatcher = dispatcher
    runner = JobRunner(db, Settings(data_dir=tmp_path))
    client = console.client

    launched = launch(client, "pending", owner=ANN).json()
    assert launched["job"]["status"] == "queued"
    assert launched["instance"]["provision_state"] == "created"
    assert dispatcher.jobs == [launched["job"]["id"]]
    early = client.delete("/api/v1/instances/pending")
    assert early.status_code == 409
    assert "still being provisioned" in early.json()["detail"]
    assert runner.run(launched["job"]["id"]) is JobStatus.SUCCEEDED

    first = client.delete("/api/v1/instances/pending")
    assert first.status_code == 202, first.text
    assert first.json()["instance"]["provision_state"] == "deprovisioning"
    second = client.delete("/api/v1/instances/pending")
    assert second.status_code == 202, second.text
    assert second.json()["job"]["id"] == first.json()["job"]["id"]
    assert second.json()["job"]["status"] == "queued"
    assert client.get("/api/v1/jobs").json()["total"] == 2

    assert runner.run(first.json()["job"]["id"]) is JobStatus.SUCCEEDED
    assert runner.run(first.json()["job"]["id"]) is JobStatus.SUCCEEDED  # a redelivery: no-op
    shown = client.get("/api/v1/instances/pending").json()
    assert shown["archived"] is True
    assert client.delete("/api/v1/instances/pending").status_code == 404
    assert list(paths["instances"].glob("*.db")) == []
    assert LocalStorage(paths["storage"]).list_instance_trees() == set()


# The CLI


@pytest.fixture
def dfe(cli_env):
    runner = CliRunner()

    def run(*args: str, expect: int = 0) -> str:
        result = runner.invoke(cli_app, list(args), catch_exceptions=False)
        assert result.exit_code == expect, result.output
        return result.output

    return run


def test_cli_provisions_with_progress_lists_shows_and_deprovisions(dfe, db, tmp_path):
    paths = build_estate(db, tmp_path)
    output = dfe("instance", "provision", "cliapp", "--owner", ANN, "--wait")
    job_id = int(re.search(r"queued as job (\d+)", output).group(1))
    assert "cliapp.local.example.com" in output
    assert re.search(rf"^job {job_id} ━+ done$", output, re.MULTILINE), output  # the progress bar
    assert output.rstrip().endswith(f"job {job_id} succeeded")

    listed = json.loads(dfe("instance", "list", "--json"))
    assert [(i["name"], i["provision_state"]) for i in listed] == [("cliapp", "provisioned")]
    assert json.loads(dfe("instance", "show", "cliapp", "--json"))["owner"] == ANN
    jobs = json.loads(dfe("job", "list", "--json"))
    assert [(j["id"], j["kind"], j["status"]) for j in jobs] == [(job_id, "provision", "succeeded")]
    shown = json.loads(dfe("job", "show", str(job_id), "--json"))
    assert (shown["progress"], shown["step"]) == (100, "done")
    assert "succeeded" in dfe("job", "list")

    output = dfe("instance", "deprovision", "cliapp", "--yes", "--wait")
    assert re.search(r"job \d+ succeeded", output)
    assert json.loads(dfe("instance", "show", "cliapp", "--json"))["archived"] is True
    assert json.loads(dfe("instance", "list", "--json")) == []
    assert list(paths["instances"].glob("*.db")) == []
    assert "nothing to do" in dfe("reconcile")


def test_cli_a_failing_job_exits_1_with_its_message(dfe, db, tmp_path):
    build_estate(db, tmp_path)
    output = dfe(
        "instance", "provision", "doomed", "--owner", ANN, "--cluster", "broken", "--wait", expect=1
    )
    assert re.search(r"job \d+ failed: postgresql server 127\.0\.0\.1:1: ", output), output
    assert "Traceback" not in output
    shown = json.loads(dfe("instance", "show", "doomed", "--json"))
    assert shown["provision_state"] == "provisioning_error"
    failed = json.loads(dfe("job", "list", "--status", "failed", "--json"))
    assert [j["instance_name"] for j in failed] == ["doomed"]
    assert "postgresql server 127.0.0.1:1" in failed[0]["message"]
    # Names are checked before anything is written.
    error = dfe("instance", "provision", "Doomed", "--owner", ANN, expect=2)
    assert "must be lower case" in error


def test_cli_reconcile_reports_orphans_and_fix_removes_them(dfe, db, tmp_path):
    paths = build_estate(db, tmp_path)
    dfe("instance", "provision", "keeper", "--owner", ANN, "--wait")
    assert "nothing to do" in dfe("reconcile")

    # Left by hand with the engine's naming: a database file and a storage tree.
    ghost_db, _ = instance_database_names("ghost", 999_999)
    sqlite = driver_for({"driver": "sqlite", "path": str(paths["instances"])})
    sqlite.create(ghost_db, ghost_db, "unused")
    storage = LocalStorage(paths["storage"])
    storage.create_instance_tree("someone-elses-storage-key", "ghost")

    report = dfe("reconcile")
    assert f"found orphan database {ghost_db} on db-1" in report
    assert re.search(r"found orphan storage [0-9a-f]{64}/ghost on web-1", report)
    assert "--fix" in report
    assert sqlite.exists(ghost_db, ghost_db).database  # only reported

    as_json = json.loads(dfe("reconcile", "--json"))
    assert sorted(o["kind"] for o in as_json["orphans"]) == ["database", "storage"]
    assert as_json["removed"] == []

    fixed = dfe("reconcile", "--fix")
    assert f"removed orphan database {ghost_db}" in fixed
    assert "removed orphan storage" in fixed
    assert not sqlite.exists(ghost_db, ghost_db).database
    assert not storage.exists("someone-elses-storage-key", "ghost")
    assert "nothing to do" in dfe("reconcile")

    # The live instance was left alone.
    with db.session() as s:
        keeper = s.scalars(select(Instance).where(Instance.name == "keeper")).one()
        owner_key = keeper.user.storage_key
        state = sqlite.exists(keeper.db_name, keeper.db_user)
    assert state.complete
    assert storage.exists(owner_key, "keeper")
