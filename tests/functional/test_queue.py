"""The job queue for real: `python -m dfe worker` in a process of its own, on each broker.

The Console answers in process (TestClient) with `queue_eager` off, so a launch is
really sent through Celery; the worker takes it from the broker and runs it against
the same Console database. One worker per test, stopped with SIGTERM (then SIGKILL).

Brokers and Console engines are paired (one worker per broker is the cost that matters):
the SQLite broker with a SQLite Console (the embedded default), Redis with PostgreSQL,
RabbitMQ with MariaDB. A missing Redis or RabbitMQ skips on a laptop, fails in CI.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SADeprecationWarning
from sqlalchemy.orm import configure_mappers
from typer.testing import CliRunner

from dfe.cli.main import app as cli_app
from dfe.client import AppKeyAuth
from dfe.config import Settings, get_settings
from dfe.console.app import create_app
from dfe.crypto import Keyring, active_keyring, install_keyring
from dfe.db.base import Base
from dfe.db.session import Database
from dfe.enums import OwnerType
from dfe.models import ARCHIVED_TABLES
from dfe.provisioning import LocalStorage, driver_for
from dfe.provisioning.engine import launch as engine_launch
from dfe.provisioning.engine import stale_job_ids
from dfe.schemas import ServiceUserCreate, UserCreate
from dfe.services import identity, infrastructure, setup

PASSWORD = "a-long-enough-password"
OWNER = "ann@example.com"
IN_CI = os.environ.get("CI", "").lower() == "true"
BROKERS = {
    "sqlite": None,  # the default: sqla+sqlite in the data directory
    "redis": os.environ.get("DFE_TEST_REDIS_BROKER", "redis://127.0.0.1:6379/14"),
    "rabbitmq": os.environ.get("DFE_TEST_AMQP_BROKER", "amqp://guest:guest@127.0.0.1:5672//"),
}
LEASE_SECONDS = 1
JOB_DEADLINE = 120  # seconds; generous, the machine is shared

# kombu's SQLAlchemy transport (the SQLite broker) declares its models with
# lazy="noload", which SQLAlchemy 2.1 deprecates when the mappers are next configured.
pytestmark = pytest.mark.filterwarnings(
    "ignore:The ``noload`` loader strategy is deprecated:sqlalchemy.exc.SADeprecationWarning"
)


@pytest.fixture(autouse=True)
def _configure_kombu_mappers() -> Iterator[None]:
    """Configure those models here, so that the warning never lands in another test."""
    yield
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SADeprecationWarning)
        configure_mappers()


def _unavailable(what: str, reason: str) -> None:
    message = f"{what} unavailable: {reason}"
    if IN_CI:
        pytest.fail(message + " (CI=true: a missing server is a failure)")
    pytest.skip(message)


def require_broker(broker: str) -> None:
    url = BROKERS[broker]
    if url is None:
        return
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=3) as connection:
            connection.ensure_connection(max_retries=1)
    except Exception as error:
        _unavailable(f"{broker} broker at {make_url(url).host}", str(error).splitlines()[0])


def _wipe(database: Database) -> None:
    archives = {table.name for table in ARCHIVED_TABLES.values()}
    live = [t for t in reversed(Base.metadata.sorted_tables) if t.name not in archives]
    with database.engine.begin() as connection:
        for table in live:
            connection.execute(table.delete())
        for table in ARCHIVED_TABLES.values():
            connection.execute(table.delete())


@pytest.fixture
def encryption_key() -> Iterator[str]:
    """A key of our own, given to the worker too (the session's test key is restored)."""
    saved = active_keyring()
    key = Fernet.generate_key().decode()
    install_keyring(Keyring([key]))
    yield key
    install_keyring(saved)


@pytest.fixture
def console_db(
    request: pytest.FixtureRequest,
    migrated_urls: Callable[[str], str],
    tmp_path: Path,
    encryption_key: str,
) -> Iterator[Database]:
    """An empty migrated Console database on the engine the test names (like `db`)."""
    template = migrated_urls(request.param)
    if request.param == "sqlite":
        path = tmp_path / "dfe.db"
        shutil.copyfile(make_url(template).database or "", path)
        database = Database(f"sqlite:///{path}")
    else:
        database = Database(template)
        _wipe(database)
    yield database
    database.dispose()


@dataclass
class Deployment:
    database: Database
    data_dir: Path
    env: dict[str, str]
    client: TestClient

    def job(self, job_id: int) -> dict[str, Any]:
        response = self.client.get(f"/api/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return response.json()


def deploy(
    database: Database, root: Path, broker: str, key: str, *, make_data_dir: bool = True
) -> Deployment:
    """The embedded default estate and a user, a Console app that dispatches to the
    broker, and the environment a worker needs to serve it."""
    data_dir = root / "var"
    if make_data_dir:
        data_dir.mkdir(mode=0o700)  # as `dfe setup` leaves it (see the test of a missing one)
    with database.transaction(actor="test") as s:
        result = setup.run_setup(
            s, ServiceUserCreate(email="root@example.com", password=PASSWORD), force=False
        )
        setup.create_local_cluster(s, data_dir)
        identity.create_user(s, UserCreate(email=OWNER, password=PASSWORD))
    env = {
        "DFE_DATABASE_URL": database.engine.url.render_as_string(hide_password=False),
        "DFE_DATA_DIR": str(data_dir),
        "DFE_ENCRYPTION_KEYS": key,
        "DFE_QUEUE_EAGER": "false",
        "DFE_JOB_LEASE_SECONDS": str(LEASE_SECONDS),
    }
    settings = Settings(data_dir=data_dir, queue_eager=False, job_lease_seconds=LEASE_SECONDS)
    url = BROKERS.get(broker, broker)
    if url is not None:
        env["DFE_BROKER_URL"] = url
        settings = settings.model_copy(update={"broker_url": url})
    app = create_app(settings, database)
    client = TestClient(app, base_url="http://console.test")
    admin = result.keys[OwnerType.CONSOLE]
    client.auth = AppKeyAuth(admin.client_id, admin.client_secret)
    return Deployment(database, data_dir, env, client)


class Worker:
    """`python -m dfe worker` with its output in a file."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        self._output = log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dfe", "worker", "--concurrency", "2"],
            env={**os.environ, **env},
            stdout=self._output,
            stderr=subprocess.STDOUT,
        )

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self, grace: float = 5) -> int:
        """SIGTERM (Celery's warm shutdown), then SIGKILL after `grace` seconds."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=20)
        self._output.close()
        return self.process.returncode


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], Worker]]:
    workers: list[Worker] = []

    def start(env: dict[str, str]) -> Worker:
        worker = Worker(env, tmp_path / f"worker-{len(workers)}.log")
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


def wait_for(deployment: Deployment, job_id: int, worker: Worker) -> dict[str, Any]:
    """Poll the job until it ends (the worker must stay up meanwhile)."""
    deadline = time.monotonic() + JOB_DEADLINE
    while True:
        job = deployment.job(job_id)
        if job["status"] in ("succeeded", "failed"):
            return job
        assert worker.process.poll() is None, f"the worker exited:\n{worker.tail()}"
        assert time.monotonic() < deadline, (
            f"job {job_id} still {job['status']} after {JOB_DEADLINE} s; worker:\n{worker.tail()}"
        )
        time.sleep(0.2)


def launch_and_delete_through_the_api(deployment: Deployment, worker: Worker, name: str) -> None:
    client = deployment.client
    launched = client.post("/api/v1/instances", json={"name": name, "owner": OWNER})
    assert launched.status_code == 202, launched.text
    body = launched.json()
    assert body["instance"]["provision_state"] in ("created", "provisioning", "provisioned")
    job = wait_for(deployment, body["job"]["id"], worker)
    assert (job["status"], job["step"], job["message"]) == ("succeeded", "done", None), job
    shown = client.get(f"/api/v1/instances/{name}").json()
    assert shown["provision_state"] == "provisioned"

    instance_files = deployment.data_dir / "instances"
    assert len(list(instance_files.glob(f"dfe_i_{name}_*.db"))) == 1
    storage = LocalStorage(deployment.data_dir / "storage")
    assert name in {tree for _, tree in storage.list_instance_trees()}

    deleted = client.delete(f"/api/v1/instances/{name}")
    assert deleted.status_code == 202, deleted.text
    job = wait_for(deployment, deleted.json()["job"]["id"], worker)
    assert job["status"] == "succeeded", job
    assert client.get(f"/api/v1/instances/{name}").json()["archived"] is True
    assert list(instance_files.glob(f"dfe_i_{name}_*.db")) == []
    assert name not in {tree for _, tree in storage.list_instance_trees()}


def lose_a_job(deployment: Deployment) -> int:
    """A launch recorded but never sent to the queue (as if the broker had lost it),
    old enough (one lease) to be taken over by the next reconcile."""
    with deployment.database.transaction(actor="test") as s:
        user = identity.get_user(s, OWNER)
        cluster = infrastructure.get_cluster(s, "local")
        _, job = engine_launch(s, user, "lost", cluster.id)
        job_id = job.id
    settings = Settings(job_lease_seconds=LEASE_SECONDS)
    deadline = time.monotonic() + 30
    while job_id not in stale_job_ids(deployment.database, settings)[1]:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    return job_id


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[dict[str, str]], Any]]:
    """`dfe ...` in process, with the environment a deployment gives."""

    def configure(env: dict[str, str]) -> Callable[..., str]:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        get_settings.cache_clear()
        runner = CliRunner()

        def run(*args: str) -> str:
            result = runner.invoke(cli_app, list(args), catch_exceptions=False)
            assert result.exit_code == 0, result.output
            return result.output

        return run

    yield configure
    get_settings.cache_clear()


@pytest.mark.parametrize(
    ("console_db", "broker"),
    [("sqlite", "sqlite"), ("postgresql", "redis"), ("mysql", "rabbitmq")],
    indirect=["console_db"],
)
def test_a_real_worker_runs_launches_and_deletions(
    console_db, broker, tmp_path, encryption_key, start_worker, cli
):
    require_broker(broker)
    deployment = deploy(console_db, tmp_path, broker, encryption_key)
    lost = lose_a_job(deployment)
    worker = start_worker(deployment.env)

    # Through the API.
    launch_and_delete_through_the_api(deployment, worker, f"api{broker}")

    # Through the CLI: `--wait` follows the job the worker runs.
    dfe = cli(deployment.env)
    name = f"cli{broker}"
    output = dfe("instance", "provision", name, "--owner", OWNER, "--wait")
    assert re.search(r"job \d+ succeeded$", output.strip()), output
    assert '"provision_state": "provisioned"' in dfe("instance", "show", name, "--json")
    output = dfe("instance", "deprovision", name, "--yes", "--wait")
    assert re.search(r"job \d+ succeeded$", output.strip()), output
    assert '"archived": true' in dfe("instance", "show", name, "--json")

    # The worker's start-up reconcile ran the job the queue had lost.
    job = wait_for(deployment, lost, worker)
    assert (job["status"], job["attempts"]) == ("succeeded", 1), job
    assert deployment.client.get("/api/v1/instances/lost").json()["provision_state"] == (
        "provisioned"
    )
    sqlite = driver_for({"driver": "sqlite", "path": str(deployment.data_dir / "instances")})
    assert [n for n in sqlite.list_databases() if not n.startswith("dfe_i_lost_")] == []

    assert worker.process.poll() is None, worker.tail()
    worker.stop()
    assert worker.process.returncode is not None


@pytest.mark.parametrize("console_db", ["sqlite"], indirect=True)
def test_the_default_broker_needs_no_prepared_data_directory(console_db, tmp_path, encryption_key):
    """A Console whose database is elsewhere (DFE_DATABASE_URL) and whose keys come from
    DFE_ENCRYPTION_KEYS may have no data directory yet: the SQLite broker makes its file."""
    deployment = deploy(console_db, tmp_path, "sqlite", encryption_key, make_data_dir=False)
    launched = deployment.client.post("/api/v1/instances", json={"name": "first", "owner": OWNER})
    assert launched.status_code == 202, launched.text
    assert launched.json()["job"]["status"] == "queued"
    assert (deployment.data_dir / "queue.db").is_file()


@pytest.mark.parametrize("console_db", ["sqlite"], indirect=True)
def test_a_broker_that_is_down_does_not_lose_a_recorded_launch(
    console_db, tmp_path, encryption_key
):
    """The launch is committed before it is dispatched: when the broker cannot be reached
    the answer must still say so (202 with the queued job), not a bare 500 that makes the
    client retry into 409 'already exists'. The next reconcile runs the job."""
    deployment = deploy(console_db, tmp_path, "redis://127.0.0.1:1/0", encryption_key)
    launched = deployment.client.post("/api/v1/instances", json={"name": "first", "owner": OWNER})
    assert launched.status_code == 202, launched.text
    job_id = launched.json()["job"]["id"]
    assert launched.json()["job"]["status"] == "queued"

    settings = Settings(job_lease_seconds=1)
    deadline = time.monotonic() + 30
    while job_id not in stale_job_ids(deployment.database, settings)[1]:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    from dfe.provisioning.engine import reconcile

    assert reconcile(deployment.database, settings, fix=False).requeued_jobs == [job_id]
    assert deployment.job(job_id)["status"] == "succeeded"
