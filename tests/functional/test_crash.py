"""Crash safety: a worker killed (SIGKILL) at every step of provisioning and deprovisioning.

Each job runs in a process of its own (`JobRunner` with an `on_step` hook that kills
its own process at the chosen step), all in parallel. After the job leases (1 s) have
run out, `reconcile` takes the jobs over: every instance ends fully provisioned or fully
gone, and the orphan scan finds nothing. The Console database is the `db` fixture (every
engine); the instance databases are SQLite files, so the orphan scan sees only ours.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import select
from typer.testing import CliRunner

from dfe.cli.main import app as cli_app
from dfe.config import Settings
from dfe.enums import JobStatus, ProvisionState
from dfe.models import AppKey, Instance, Job
from dfe.provisioning import LocalStorage, driver_for, instance_database_names
from dfe.provisioning.engine import (
    JobRunner,
    find_orphans,
    reconcile,
    request_deprovision,
    stale_job_ids,
)
from dfe.provisioning.engine import launch as engine_launch
from dfe.schemas import ClusterCreate, MountCreate, ServerCreate, UserCreate
from dfe.services import identity, infrastructure
from dfe.services.instances import find_instance

OWNER = "ann@example.com"
PROVISION_STEPS = ("database", "storage", "activate")
DEPROVISION_STEPS = ("database", "storage", "archive")
LEASE_SECONDS = 1

KILLED_AT = """
import os, signal, sys
from dfe.config import Settings
from dfe.db.session import open_database
from dfe.provisioning.engine import JobRunner

job_id, fatal = int(sys.argv[1]), sys.argv[2]
settings = Settings()

def on_step(step):
    if step == fatal:
        os.kill(os.getpid(), signal.SIGKILL)

JobRunner(open_database(settings), settings, on_step=on_step).run(job_id)
sys.exit(f"job {job_id} ran to its end: step {fatal!r} never came")
"""


def build_estate(db, root: Path) -> tuple[Path, Path]:
    with db.transaction(actor="test") as s:
        infrastructure.create_mount(s, MountCreate(name="disk", root_path=str(root / "storage")))
        servers = [
            ServerCreate(
                name="db-1",
                server_type="db",
                host="localhost",
                config={"driver": "sqlite", "path": str(root / "instances")},
            ),
            ServerCreate(name="web-1", server_type="web", host="localhost", mount="disk"),
            ServerCreate(name="app-1", server_type="app", host="localhost"),
        ]
        cluster = infrastructure.create_cluster(
            s, ClusterCreate(name="local", subdomain="apps.test")
        )
        for server in servers:
            infrastructure.create_server(s, server)
            infrastructure.assign_server(s, cluster.id, server.name)
        identity.create_user(s, UserCreate(email=OWNER, password="a-long-enough-password"))
    return root / "instances", root / "storage"


def launch(db, name: str) -> int:
    with db.transaction(actor="test") as s:
        user = identity.get_user(s, OWNER)
        _, job = engine_launch(s, user, name, infrastructure.get_cluster(s, "local").id)
        return job.id


def deprovision(db, name: str) -> int:
    with db.transaction(actor="test") as s:
        return request_deprovision(s, name).id


def killed_at(env: dict[str, str], job_id: int, step: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", KILLED_AT, str(job_id), step],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


class World:
    """Where an instance's parts are, to tell what exists of it."""

    def __init__(self, db, instances: Path, storage: Path) -> None:
        self.db = db
        self.sqlite = driver_for({"driver": "sqlite", "path": str(instances)})
        self.storage = LocalStorage(storage)
        with db.session() as s:
            self.owner_key = identity.get_user(s, OWNER).storage_key
        self.ids: dict[str, int] = {}

    def remember(self, name: str) -> None:
        with self.db.session() as s:
            self.ids[name] = s.scalars(select(Instance.id).where(Instance.name == name)).one()

    def parts(self, name: str) -> tuple[bool, bool]:
        """(database file, storage tree) of an instance: whether each exists."""
        database_name, user_name = instance_database_names(name, self.ids[name])
        return (
            self.sqlite.exists(database_name, user_name).complete,
            self.storage.exists(self.owner_key, name),
        )

    def live(self, name: str) -> Instance | None:
        with self.db.session() as s:
            return s.scalars(select(Instance).where(Instance.name == name)).first()

    def job(self, job_id: int) -> Job:
        with self.db.session() as s:
            return s.get_one(Job, job_id)


def test_a_worker_killed_at_any_step_is_recovered_by_reconcile(db, cli_env, tmp_path):
    instances, storage = build_estate(db, tmp_path)
    world = World(db, instances, storage)
    settings = Settings(job_lease_seconds=LEASE_SECONDS)
    env = {**os.environ, **cli_env, "DFE_JOB_LEASE_SECONDS": str(LEASE_SECONDS)}

    crashes: dict[int, tuple[str, str]] = {}  # job id -> (instance, step killed at)
    for step in PROVISION_STEPS:
        crashes[launch(db, f"p-{step}")] = (f"p-{step}", step)
    for step in DEPROVISION_STEPS:
        name = f"d-{step}"
        assert JobRunner(db, settings).run(launch(db, name)) is JobStatus.SUCCEEDED
        crashes[deprovision(db, name)] = (name, step)
    lost = launch(db, "q-lost")  # queued, but no worker ever took it
    for name in ["q-lost", *(name for name, _ in crashes.values())]:
        world.remember(name)

    workers = [killed_at(env, job_id, step) for job_id, (_, step) in crashes.items()]
    for worker in workers:
        output, _ = worker.communicate(timeout=120)
        assert worker.returncode == -signal.SIGKILL, output.decode()

    # Each died where it was told to: after the steps before, before the step itself.
    expected_parts = {
        "p-database": (False, False),
        "p-storage": (True, False),
        "p-activate": (True, True),
        "d-database": (True, True),
        "d-storage": (False, True),
        "d-archive": (False, False),
    }
    for job_id, (name, _step) in crashes.items():
        assert world.parts(name) == expected_parts[name], name
        assert world.job(job_id).status is JobStatus.RUNNING, name
        assert world.live(name) is not None, name
    assert world.live("p-activate").provision_state is ProvisionState.PROVISIONING
    assert world.live("d-archive").provision_state is ProvisionState.DEPROVISIONING

    deadline = time.monotonic() + 30
    while True:
        stale, waiting = stale_job_ids(db, settings)
        if set(stale) >= set(crashes) and lost in waiting:
            break
        assert time.monotonic() < deadline, (stale, waiting)
        time.sleep(0.1)

    report = reconcile(db, settings, fix=False)
    assert sorted(report.resumed_jobs) == sorted(crashes)
    assert report.requeued_jobs == [lost]
    assert report.orphans == []

    for job_id in [*crashes, lost]:
        job = world.job(job_id)
        assert (job.status, job.message) == (JobStatus.SUCCEEDED, None), job_id
        assert job.attempts == (2 if job_id in crashes else 1), job_id
    for name in ("q-lost", *(f"p-{step}" for step in PROVISION_STEPS)):
        instance = world.live(name)
        assert instance.provision_state is ProvisionState.PROVISIONED, name
        assert world.parts(name) == (True, True), name
        assert instance.db_name and instance.db_password, name
    for step in DEPROVISION_STEPS:
        name = f"d-{step}"
        assert world.live(name) is None, name
        assert world.parts(name) == (False, False), name
        with db.session() as s:
            assert find_instance(s, name).archived is True
            assert (
                s.scalars(select(AppKey).where(AppKey.instance_id == world.ids[name])).all() == []
            )
    assert find_orphans(db) == []

    result = CliRunner().invoke(cli_app, ["reconcile"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "nothing to do" in result.output


def test_a_killed_deprovision_is_finished_by_the_next_run_of_its_job(db, cli_env, tmp_path):
    """The queue delivers a job again when its worker died (acks_late): once the lease has
    run out, the next run after a crash at the archive step archives the instance once,
    and a run after that is a no-op."""
    instances, storage = build_estate(db, tmp_path)
    world = World(db, instances, storage)
    settings = Settings(job_lease_seconds=LEASE_SECONDS)
    env = {**os.environ, **cli_env, "DFE_JOB_LEASE_SECONDS": str(LEASE_SECONDS)}
    JobRunner(db, settings).run(launch(db, "again"))
    world.remember("again")
    job_id = deprovision(db, "again")
    worker = killed_at(env, job_id, "archive")
    output, _ = worker.communicate(timeout=120)
    assert worker.returncode == -signal.SIGKILL, output.decode()
    deadline = time.monotonic() + 30
    while job_id not in stale_job_ids(db, settings)[0]:
        assert time.monotonic() < deadline
        time.sleep(0.1)

    assert JobRunner(db, settings).run(job_id) is JobStatus.SUCCEEDED
    assert JobRunner(db, settings).run(job_id) is JobStatus.SUCCEEDED
    assert world.live("again") is None
    assert world.parts("again") == (False, False)
    with db.session() as s:
        assert find_instance(s, "again").provision_state is ProvisionState.DEPROVISIONED
    assert find_orphans(db) == []
