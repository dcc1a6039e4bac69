"""Provisioning against real database servers, through the API, on every Console engine.

The Console's own database is the `db` fixture (SQLite, PostgreSQL, MariaDB); the
instance databases live on a db server of their own kind, parametrized apart
(`instance_kind`): a SQLite directory, or the machine's PostgreSQL and MariaDB.
Every instance gets a name of its own (the servers are shared with other runs).
"""

from __future__ import annotations

import os
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pymysql
import pytest
from sqlalchemy import create_engine, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool
from tests.functional.test_provisioning_api import RecordingDispatcher

from dfe.config import Settings
from dfe.db.base import utcnow
from dfe.enums import JobStatus, ProvisionState
from dfe.models import AppKey, Instance, Job
from dfe.provisioning import (
    DriverError,
    InstanceDatabase,
    LocalStorage,
    driver_for,
    engine,
    instance_database_names,
)
from dfe.provisioning.engine import JobRunner
from dfe.schemas import ClusterCreate, MountCreate, ServerCreate, UserCreate
from dfe.services import identity, infrastructure, jobs

PASSWORD = "a-long-enough-password"
OWNER = "ann@example.com"
SERVER_URLS = {
    "postgresql": os.environ.get(
        "DFE_TEST_PG_URL", "postgresql+psycopg://root@127.0.0.1:5432/test"
    ),
    "mysql": os.environ.get("DFE_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test"),
}
DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306}
IN_CI = os.environ.get("CI", "").lower() == "true"
KINDS = ("sqlite", "postgresql", "mysql")


def unavailable(what: str, reason: str) -> None:
    message = f"{what} unavailable: {reason}"
    if IN_CI:
        pytest.fail(message + " (CI=true: a missing server is a failure)")
    pytest.skip(message)


def server_config(kind: str, root: Path, **overrides: Any) -> tuple[str, dict[str, Any]]:
    """(host, config) of a db server of `kind`: a directory under `root`, or a real server."""
    if kind == "sqlite":
        return "localhost", {"driver": "sqlite", "path": str(root / "instances"), **overrides}
    url = make_url(SERVER_URLS[kind])
    config = {
        "driver": kind,
        "port": url.port or DEFAULT_PORTS[kind],
        "admin_user": url.username,
        "admin_password": url.password or "",
        **overrides,
    }
    return url.host or "127.0.0.1", config


def driver_of(host: str, config: dict[str, Any]):
    return driver_for({"host": host, **config})


def unique_name(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


@dataclass
class Estate:
    host: str
    config: dict[str, Any]
    storage_root: Path

    @property
    def driver(self):
        return driver_of(self.host, self.config)

    @property
    def storage(self) -> LocalStorage:
        return LocalStorage(self.storage_root)


def build_estate(db, root: Path, kind: str = "sqlite", **config_overrides: Any) -> Estate:
    """One cluster `local` (the default) with a db server of `kind`, a web server with a
    local mount, an app server, and the user ann."""
    host, config = server_config(kind, root, **config_overrides)
    with db.transaction(actor="test") as s:
        infrastructure.create_mount(s, MountCreate(name="disk", root_path=str(root / "storage")))
        for name, server_type, extra in (
            ("db-1", "db", {"host": host, "config": config}),
            ("web-1", "web", {"host": "localhost", "mount": "disk"}),
            ("app-1", "app", {"host": "localhost"}),
        ):
            infrastructure.create_server(
                s, ServerCreate(name=name, server_type=server_type, **extra)
            )
        cluster = infrastructure.create_cluster(
            s, ClusterCreate(name="local", subdomain="apps.example.com")
        )
        for name in ("db-1", "web-1", "app-1"):
            infrastructure.assign_server(s, cluster.id, name)
        identity.create_user(s, UserCreate(email=OWNER, password=PASSWORD))
    return Estate(host, config, root / "storage")


def require_server(kind: str, root: Path) -> None:
    if kind == "sqlite":
        return
    try:
        driver_of(*server_config(kind, root)).check()
    except DriverError as error:
        unavailable(f"{kind} server", str(error))


@dataclass
class Row:
    id: int
    db_name: str | None
    db_user: str | None
    db_password: str | None
    owner_key: str  # the owning user's storage key (names the owner's directory)
    state: ProvisionState


def instance_row(db, name: str) -> Row | None:
    with db.session() as s:
        instance = s.scalars(select(Instance).where(Instance.name == name)).first()
        if instance is None:
            return None
        return Row(
            instance.id,
            instance.db_name,
            instance.db_user,
            instance.db_password,
            instance.user.storage_key,
            instance.provision_state,
        )


def instance_keys(db, instance_id: int) -> int:
    with db.session() as s:
        return len(list(s.scalars(select(AppKey).where(AppKey.instance_id == instance_id))))


def write_and_read(driver, row: Row) -> None:
    """Log in with the instance's own credentials, create a table, write and read a row."""
    credentials = InstanceDatabase(driver.kind, row.db_name, row.db_user, row.db_password)
    engine = create_engine(driver.url_for(credentials), poolclass=NullPool)
    try:
        with engine.begin() as connection:
            if driver.kind != "sqlite":
                user = connection.execute(
                    text("SELECT current_user" if driver.kind == "postgresql" else "SELECT USER()")
                ).scalar_one()
                assert user.split("@")[0] == row.db_user
            connection.execute(
                text("CREATE TABLE notes (id INTEGER PRIMARY KEY, body VARCHAR(40) NOT NULL)")
            )
            connection.execute(text("INSERT INTO notes (id, body) VALUES (1, 'hello')"))
        with engine.connect() as connection:
            assert connection.execute(text("SELECT body FROM notes")).scalar_one() == "hello"
    finally:
        engine.dispose()


def launch(client, name: str, **body: Any) -> dict[str, Any]:
    response = client.post("/api/v1/instances", json={"name": name, "owner": OWNER, **body})
    assert response.status_code == 202, response.text
    return response.json()


def delete(client, name: str) -> dict[str, Any]:
    response = client.delete(f"/api/v1/instances/{name}")
    assert response.status_code == 202, response.text
    return response.json()


def assert_gone(db, client, estate: Estate, name: str, row: Row) -> None:
    """Deprovisioned: archived, no database, no role/user, no storage tree, no keys."""
    shown = client.get(f"/api/v1/instances/{name}")
    assert shown.status_code == 200, shown.text
    assert shown.json()["archived"] is True
    assert shown.json()["provision_state"] == "deprovisioned"
    assert instance_row(db, name) is None
    database_name, user_name = instance_database_names(name, row.id)
    state = estate.driver.exists(database_name, user_name)
    assert (state.database, state.user) == (False, False)
    assert not estate.storage.exists(row.owner_key, name)
    assert instance_keys(db, row.id) == 0


@pytest.mark.parametrize("instance_kind", KINDS)
def test_provision_use_and_deprovision_a_real_database(console, db, tmp_path, instance_kind):
    require_server(instance_kind, tmp_path)
    estate = build_estate(db, tmp_path, instance_kind)
    client = console.client
    name = unique_name("rd")

    launched = launch(client, name)
    assert launched["job"]["kind"] == "provision"
    assert launched["job"]["status"] == "succeeded"  # queue_eager: run before the answer
    assert launched["instance"]["provision_state"] == "provisioned"
    assert launched["instance"]["host"] == f"{name}.apps.example.com"
    job = client.get(f"/api/v1/jobs/{launched['job']['id']}").json()
    assert (job["status"], job["step"], job["progress"], job["message"]) == (
        "succeeded",
        "done",
        100,
        None,
    )

    row = instance_row(db, name)
    assert row is not None and row.state is ProvisionState.PROVISIONED
    assert (row.db_name, row.db_user) == instance_database_names(name, row.id)
    assert row.db_password and len(row.db_password) >= 32
    state = estate.driver.exists(row.db_name, row.db_user)
    assert (state.database, state.user) == (True, True)
    assert estate.storage.exists(row.owner_key, name)
    paths = estate.storage.paths(row.owner_key, name)
    for directory in (paths.config, paths.logs, paths.snapshots):
        assert directory.is_dir()
    assert instance_keys(db, row.id) >= 1
    write_and_read(estate.driver, row)

    deleted = delete(client, name)
    assert deleted["job"]["kind"] == "deprovision"
    assert deleted["job"]["status"] == "succeeded"
    assert_gone(db, client, estate, name, row)
    assert not paths.instance_root.exists()
    assert paths.owner_root.is_dir()  # the owner's own area (snapshots) stays


def test_the_instance_user_reaches_only_its_own_database_on_postgresql(console, db, tmp_path):
    """CONNECT is revoked from PUBLIC: one instance's role cannot open another's database.
    (The test server trusts local logins, so only the privilege stops it.)"""
    require_server("postgresql", tmp_path)
    estate = build_estate(db, tmp_path, "postgresql")
    names = [unique_name("iso"), unique_name("iso")]
    for name in names:
        launch(console.client, name)
    first, second = (instance_row(db, name) for name in names)
    trespass = InstanceDatabase("postgresql", second.db_name, first.db_user, first.db_password)
    engine = create_engine(estate.driver.url_for(trespass), poolclass=NullPool)
    try:
        with pytest.raises(Exception, match="permission denied"), engine.connect():
            pass
    finally:
        engine.dispose()
    for name in names:
        delete(console.client, name)
    for name, row in zip(names, (first, second), strict=True):
        assert_gone(db, console.client, estate, name, row)


def test_a_job_run_twice_at_once_provisions_the_instance_once(console, db, tmp_path):
    """Two runners may take one job at the same time: two workers' start-up reconciles
    of the same stale job, or `dfe reconcile` and a worker taking a job that waited longer
    than the lease in the queue. The instance must end provisioned, its database and role
    in place, and the job succeeded, every time."""
    require_server("postgresql", tmp_path)
    estate = build_estate(db, tmp_path, "postgresql")
    console.app.state.dispatcher = RecordingDispatcher()
    settings = Settings(data_dir=tmp_path)
    outcomes, made = [], []

    def run(job_id: int, barrier: threading.Barrier) -> str:
        barrier.wait()
        try:
            return JobRunner(db, settings).run(job_id).value
        except Exception as error:  # an escape from run() is an outcome too
            return repr(error)

    try:
        for _ in range(6):
            name = unique_name("twice")
            job_id = launch(console.client, name)["job"]["id"]
            row = instance_row(db, name)
            made.append(instance_database_names(name, row.id))
            barrier = threading.Barrier(2)
            with ThreadPoolExecutor(max_workers=2) as pool:
                runs = sorted(pool.map(lambda _n, b=barrier, j=job_id: run(j, b), range(2)))
            job = console.client.get(f"/api/v1/jobs/{job_id}").json()
            state = estate.driver.exists(*made[-1])
            outcomes.append(
                (
                    job["status"],
                    instance_row(db, name).state.value,
                    state.database,
                    state.user,
                    job["message"],
                    runs,
                )
            )
    finally:
        for names in made:
            estate.driver.drop(*names)
    assert [outcome[:5] for outcome in outcomes] == [
        ("succeeded", "provisioned", True, True, None)
    ] * 6, outcomes


def failed_launch(client, name: str) -> dict[str, Any]:
    launched = launch(client, name)
    job = client.get(f"/api/v1/jobs/{launched['job']['id']}").json()
    assert job["status"] == "failed", job
    assert launched["instance"]["provision_state"] == "provisioning_error"
    return job


def relaunch_after_fix(db, console, estate: Estate, name: str, config: dict[str, Any]) -> None:
    """Fix the db server's config, delete the failed instance, launch again: it works."""
    client = console.client
    patched = client.patch("/api/v1/servers/db-1", json={"config": config})
    assert patched.status_code == 200, patched.text
    estate.config = config
    failed = instance_row(db, name)
    deleted = delete(client, name)
    assert deleted["job"]["status"] == "succeeded", deleted
    assert_gone(db, client, estate, name, failed)
    launched = launch(client, name)
    assert launched["job"]["status"] == "succeeded", launched
    row = instance_row(db, name)
    write_and_read(estate.driver, row)
    delete(client, name)
    assert_gone(db, client, estate, name, row)


def test_a_db_server_that_is_down_fails_the_job_cleanly_and_a_retry_works(console, db, tmp_path):
    require_server("postgresql", tmp_path)
    secret = "down-server-admin-secret"
    estate = build_estate(db, tmp_path, "postgresql", port=1, admin_password=secret)
    name = unique_name("down")

    job = failed_launch(console.client, name)
    assert "postgresql server 127.0.0.1:1" in job["message"]
    assert "connect" in job["message"]
    assert secret not in job["message"]
    assert job["step"] == "database"
    row = instance_row(db, name)
    assert row.state is ProvisionState.PROVISIONING_ERROR
    assert not estate.storage.exists(row.owner_key, name)
    assert estate.storage.list_instance_trees() == set()

    _, good = server_config("postgresql", tmp_path)
    state = driver_of(estate.host, good).exists(*instance_database_names(name, row.id))
    assert (state.database, state.user) == (False, False)
    relaunch_after_fix(db, console, estate, name, good)


@pytest.fixture
def mysql_admin(tmp_path):
    """A temporary MariaDB admin with a password of its own (dropped at the end)."""
    require_server("mysql", tmp_path)
    host, config = server_config("mysql", tmp_path)
    user, password = unique_name("dfe_t_adm_"), f"pw-{uuid.uuid4().hex}"
    connection = pymysql.connect(
        host=host, port=config["port"], user=config["admin_user"], password=config["admin_password"]
    )
    try:
        with connection.cursor() as cursor:
            cursor.execute("CREATE USER %s@'%%' IDENTIFIED BY %s", (user, password))
            cursor.execute(f"GRANT ALL PRIVILEGES ON *.* TO `{user}`@'%' WITH GRANT OPTION")
        yield user, password
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP USER IF EXISTS %s@'%%'", (user,))
        connection.close()


def test_refused_credentials_fail_the_job_cleanly_and_a_retry_works(
    console, db, tmp_path, mysql_admin
):
    admin, password = mysql_admin
    wrong = f"wrong-{uuid.uuid4().hex}"
    estate = build_estate(db, tmp_path, "mysql", admin_user=admin, admin_password=wrong)
    name = unique_name("cred")

    job = failed_launch(console.client, name)
    assert "mysql server 127.0.0.1:3306" in job["message"]
    assert "Access denied" in job["message"]
    assert wrong not in job["message"] and password not in job["message"]
    row = instance_row(db, name)
    assert row.state is ProvisionState.PROVISIONING_ERROR
    assert not estate.storage.exists(row.owner_key, name)

    _, good = server_config("mysql", tmp_path, admin_user=admin, admin_password=password)
    database_name, user_name = instance_database_names(name, row.id)
    state = driver_of(estate.host, good).exists(database_name, user_name)
    assert (state.database, state.user) == (False, False)
    relaunch_after_fix(db, console, estate, name, good)


def test_a_storage_failure_after_the_database_drops_the_database(console, db, tmp_path):
    """The database step succeeds, the storage step fails: the database and its role go."""
    require_server("postgresql", tmp_path)
    estate = build_estate(db, tmp_path, "postgresql")
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    patched = console.client.patch(
        "/api/v1/mounts/disk", json={"root_path": str(blocker / "storage")}
    )
    assert patched.status_code == 200, patched.text
    name = unique_name("nost")

    job = failed_launch(console.client, name)
    assert job["step"] == "storage"
    assert "mount root" in job["message"]
    row = instance_row(db, name)
    state = estate.driver.exists(*instance_database_names(name, row.id))
    assert (state.database, state.user) == (False, False)

    assert (
        console.client.patch(
            "/api/v1/mounts/disk", json={"root_path": str(estate.storage_root)}
        ).status_code
        == 200
    )
    delete(console.client, name)
    assert_gone(db, console.client, estate, name, row)


def test_a_job_claimed_with_its_launch_is_run_by_reconcile_when_its_process_died(db, tmp_path):
    """The in-process queue claims a job in the transaction that records it. A Console
    that dies before running it leaves a running job with a lease; nobody else may take
    it until the lease runs out, and then reconcile runs it."""
    estate = build_estate(db, tmp_path)
    settings = Settings(data_dir=tmp_path)
    runner = JobRunner(db, settings)
    name = unique_name("claimed")
    with db.transaction(actor="test") as s:
        cluster_id = infrastructure.get_cluster(s, "local").id
        _, job = engine.launch(s, identity.get_user(s, OWNER), name, cluster_id)
        job_id, claimed = job.id, runner.claim_in(s, job)
    assert claimed is not None and claimed.job_id == job_id
    row = instance_row(db, name)
    assert row is not None and row.state is ProvisionState.PROVISIONING
    with db.transaction(actor="test") as s:
        assert runner.claim_in(s, jobs.get_job(s, job_id)) is None  # its lease is live
    assert runner.run(job_id) is JobStatus.RUNNING  # a second runner leaves it alone
    assert engine.reconcile(db, settings, fix=False).resumed_jobs == []

    with db.transaction(actor="test") as s:  # the lease runs out
        past = utcnow() - timedelta(seconds=1)
        s.execute(update(Job).where(Job.id == job_id).values(lease_expires_at=past))
    report = engine.reconcile(db, settings, fix=False)
    assert report.resumed_jobs == [job_id] and report.orphans == []
    row = instance_row(db, name)
    assert row is not None and row.state is ProvisionState.PROVISIONED
    assert row.db_name is not None and row.db_user is not None
    assert estate.driver.exists(row.db_name, row.db_user).database
    with db.session() as s:
        finished = jobs.get_job(s, job_id)
        assert finished.status is JobStatus.SUCCEEDED and finished.attempts == 2


def test_job_states_are_recorded_and_readable(console, db, tmp_path):
    build_estate(db, tmp_path)
    launched = launch(console.client, unique_name("js"))
    listed = console.client.get("/api/v1/jobs").json()
    assert [job["id"] for job in listed["items"]] == [launched["job"]["id"]]
    job = listed["items"][0]
    assert job["attempts"] == 1
    assert job["started_at"] and job["finished_at"]
    assert JobStatus(job["status"]) is JobStatus.SUCCEEDED
    assert console.client.get("/api/v1/jobs/999999").status_code == 404
