"""Benchmark: provisioning end to end against the raw work it does, and placement.

    .venv/bin/python bench/provision.py [--instances 150] [--pg-instances 30]
                                        [--placements 300] [--rounds 5] [--threads 2]
                                        [--workers 1,2] [--skip-embedded]
                                        [--skip-postgresql] [--skip-placement]

1. Embedded default (SQLite Console database, SQLite instance databases, local storage,
   DFE_QUEUE_EAGER so each job runs inside its request): instances launched through
   the signed API, POST /api/v1/instances over HTTP (httpx2 + dfe.client.AppKeyAuth,
   `--threads` keep-alive connections) to a uvicorn server (bench/_console_server.py,
   with each of `--workers` Console processes in turn, as `dfe serve console --workers`
   runs them), each answer checked to be 202 with a succeeded job; against the raw
   floor: the same file, directory and row work in a plain loop in this process (the
   rows through the service functions in one transaction, the SQLite file with os.open,
   the tree with LocalStorage, the owner's "instance ready" mail into the outbox with
   the engine's own notification function).
   For scale, the same server then answers signed GET /api/v1/jobs/1: what any
   signed request costs, the launch's included.
   Then as `dfe up` runs it: one Console process queueing each job on the SQLite queue
   in the data directory, one `dfe worker` running them; a round lasts until the worker
   has ended every job of it.
   Each also prints the CPU a launch cost the Console, the worker and this benchmark's
   own client (from /proc, over the API rounds): the rates swing with the machine's
   filesystem from hour to hour, these much less.
2. PostgreSQL: a provision + deprovision cycle through the engine (launch, JobRunner,
   request_deprovision, JobRunner; SQLite Console database; each job claimed in the
   transaction that records it, as the Console's in-process queue does) against a loop of bare
   CREATE ROLE + CREATE DATABASE + DROP DATABASE + DROP ROLE on one admin connection;
   and the engine's own CPU per cycle.
3. Placement: time per `place()` decision with 1,000 servers in one cluster carrying
   100,000 instances. The counters (instance_count) are set with UPDATEs, not by
   inserting 100,000 instance rows; placement reads only the counters. The tables are
   then ANALYZEd, as a live database's are. Each decision runs in a transaction that
   has begun (as a launch's has when it places), which is rolled back after it. On
   the SQLite Console database, on PostgreSQL unless skipped, and on MariaDB when it
   answers (DFE_BENCH_MYSQL_URL).

The machine is shared, so each measure runs beside its floor: embedded rounds alternate
(API round, floor round, ...; the best round of each is reported), PostgreSQL cycles
alternate one by one (engine, bare, engine, ...; total time of each). Every database,
role and file made is removed, also when a step fails.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import httpx2
import psycopg
import pymysql
import structlog
from _threads import timed_threads
from psycopg import sql
from sqlalchemy import select, text, update
from sqlalchemy.engine import make_url

from dfe.client import AppKeyAuth
from dfe.config import Settings
from dfe.db.migrate import upgrade
from dfe.db.session import Database, open_database
from dfe.enums import JobKind, JobStatus, OwnerType, ProvisionState, ServerType
from dfe.models import Cluster, ClusterServer, Job, Server
from dfe.provisioning import LocalStorage, generate_password, instance_database_names
from dfe.provisioning.drivers.sqlite import SUFFIX
from dfe.provisioning.engine import JobRunner, launch, request_deprovision
from dfe.provisioning.placement import place
from dfe.schemas import ClusterCreate, ServerCreate, ServiceUserCreate, UserCreate
from dfe.services import identity, infrastructure, jobs, notifications, setup
from dfe.services.instances import create_instance_record, instance_host

PASSWORD = "bench-password-1"
OWNER = "owner@example.com"
PG_ADMIN_URL = os.environ.get("DFE_BENCH_PG_URL", "postgresql://root@127.0.0.1:5432/postgres")
MYSQL_ADMIN_URL = os.environ.get("DFE_BENCH_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prepare_embedded(data_dir: Path) -> tuple[Settings, str, str]:
    """`dfe setup` with the local cluster, and a user to own the instances."""
    settings = Settings(data_dir=data_dir, queue_eager=True)
    database = open_database(settings)
    upgrade(database)
    with database.transaction(actor="bench") as session:
        result = setup.run_setup(
            session, ServiceUserCreate(email="admin@example.com", password=PASSWORD), force=False
        )
        setup.create_local_cluster(session, data_dir)
        identity.create_user(session, UserCreate(email=OWNER, password=PASSWORD))
    database.dispose()
    key = result.keys[OwnerType.CONSOLE]
    return settings, key.client_id, key.client_secret


def process_env(data_dir: Path, *, eager: bool) -> dict[str, str]:
    env = {**os.environ, "DFE_DATA_DIR": str(data_dir)}
    for name in ("DFE_DATABASE_URL", "DFE_BROKER_URL", "DFE_ENCRYPTION_KEYS", "DFE_QUEUE_EAGER"):
        env.pop(name, None)
    if eager:
        env["DFE_QUEUE_EAGER"] = "true"
    return env


def start_server(
    port: int, data_dir: Path, workers: int, *, eager: bool
) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        str(Path(__file__).with_name("_console_server.py")),
        str(port),
        f"--workers={workers}",
    ]
    process = subprocess.Popen(
        command,
        env=process_env(data_dir, eager=eager),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120  # a loaded machine starts it slowly
    while time.monotonic() < deadline:
        try:
            httpx2.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=1)
            return process
        except httpx2.TransportError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("the benchmark server did not start")


def start_worker(data_dir: Path) -> subprocess.Popen[bytes]:
    """`dfe worker` on the data directory's SQLite queue, as `dfe up` runs it."""
    return subprocess.Popen(
        [sys.executable, "-m", "dfe", "worker"],
        env=process_env(data_dir, eager=False),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def tree_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) used so far by process `pid` and its live descendants,
    from /proc (Linux): with `--workers N` the Console's work is done by uvicorn's
    children."""
    ticks = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}  # pid: (parent, seconds)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with suppress(OSError):
                # After the ")" that ends the command name: state, ppid, ..., utime, stime.
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
                stats[int(entry.name)] = (
                    int(fields[1]),
                    (int(fields[11]) + int(fields[12])) / ticks,
                )
    tree, total = [pid], 0.0
    while tree:
        current = tree.pop()
        total += stats.get(current, (0, 0.0))[1]
        tree.extend(child for child, (parent, _) in stats.items() if parent == current)
    return total


def cpu_seconds(
    server: subprocess.Popen[bytes], worker: subprocess.Popen[bytes] | None
) -> tuple[float, float, float]:
    """CPU seconds used so far by the Console, the worker and this process."""
    worker_cpu = tree_cpu_seconds(worker.pid) if worker is not None else 0.0
    return tree_cpu_seconds(server.pid), worker_cpu, time.process_time()


@dataclass
class CpuPerLaunch:
    """Milliseconds of CPU per launch of the API rounds: Console, worker, this client."""

    console: float = 0.0
    worker: float = 0.0
    client: float = 0.0

    def __str__(self) -> str:
        worker = f", worker {self.worker:.1f}" if self.worker else " (the jobs included)"
        return f"Console {self.console:.1f}{worker}, this client {self.client:.1f}"


def api_round(
    base: str, auth: AppKeyAuth, names: list[str], threads: int, queue: Database | None
) -> float:
    """Launch every name through the API from `threads` connections; instances/s until
    all are provisioned: each answer's job succeeded (jobs inline), or, with the `queue`
    (the Console's database) of a worker, until that worker has ended every job."""
    chunks = [names[i::threads] for i in range(threads)]
    errors: list[str] = []
    started = time.perf_counter()

    def worker(chunk: list[str]) -> None:
        with httpx2.Client(base_url=base, auth=auth, timeout=60) as client:
            for name in chunk:
                response = client.post("/api/v1/instances", json={"name": name, "owner": OWNER})
                status = response.json()["job"]["status"] if response.status_code == 202 else ""
                # A worker may have taken the job, or ended it, before the answer.
                if status != "succeeded" and (queue is None or status not in ("queued", "running")):
                    errors.append(f"{response.status_code} {response.text[:300]}")

    elapsed = timed_threads(worker, chunks)
    if queue is not None:
        elapsed = wait_for_jobs(queue, names) - started
    if errors:
        raise SystemExit(f"{len(errors)} launches failed, first: {errors[0]}")
    return len(names) / elapsed


def wait_for_jobs(database: Database, names: list[str]) -> float:
    """Wait until the worker has ended the provisioning of every name; when it did."""
    ended = [JobStatus.SUCCEEDED, JobStatus.FAILED]
    query = select(Job.status).where(Job.instance_name.in_(names), Job.status.in_(ended))
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        with database.session() as session:
            statuses = list(session.scalars(query))
        if len(statuses) == len(names):
            if JobStatus.FAILED in statuses:
                raise SystemExit(f"{statuses.count(JobStatus.FAILED)} provisionings failed")
            return time.perf_counter()
        time.sleep(0.005)
    raise SystemExit("the worker did not end the jobs within 5 minutes")


def floor_round(settings: Settings, names: list[str]) -> float:
    """The same rows, file, tree and mail, in a plain loop; instances/s."""
    database = open_database(settings)
    with database.session() as session:
        user = identity.get_user(session, OWNER)
        cluster = infrastructure.get_cluster(session, setup.LOCAL_CLUSTER)
        servers = {kind: infrastructure.get_server(session, f"local-{kind}") for kind in ServerType}
        directory = Path(servers[ServerType.DB].config["path"])
        storage = LocalStorage(servers[ServerType.WEB].mount.root_path)
        owner_key = user.storage_key
    directory.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for name in names:
        with database.transaction(actor="bench") as session:
            instance = create_instance_record(session, name, user, cluster, servers)
            job = jobs.create_job(session, JobKind.PROVISION, instance)
            database_name, user_name = instance_database_names(name, instance.id)
            instance.db_name, instance.db_user = database_name, user_name
            instance.provision_state = ProvisionState.PROVISIONED
            jobs.finish(session, job.id, JobStatus.SUCCEEDED)
        os.close(os.open(directory / f"{database_name}{SUFFIX}", os.O_WRONLY | os.O_CREAT, 0o640))
        storage.create_instance_tree(owner_key, name)
        notifications.instance_finished(
            settings, to=OWNER, name=name, host=instance_host(name, cluster.subdomain), error=None
        )
    elapsed = time.perf_counter() - started
    database.dispose()
    return len(names) / elapsed


def signed_get_round(base: str, auth: AppKeyAuth, count: int, threads: int) -> float:
    """Signed GET /api/v1/jobs/1 from `threads` connections, `count` in all; requests/s:
    the price of any signed request, for reading the launch's."""

    def worker(times: int) -> None:
        with httpx2.Client(base_url=base, auth=auth, timeout=60) as client:
            for _ in range(times):
                response = client.get("/api/v1/jobs/1")
                if response.status_code != 200:
                    raise SystemExit(f"GET /api/v1/jobs/1: {response.status_code}")

    return (count // threads) * threads / timed_threads(worker, [count // threads] * threads)


def bench_embedded(
    count: int, rounds: int, threads: int, workers: int, *, eager: bool
) -> tuple[float, float, float | None, CpuPerLaunch]:
    """(API rate, floor rate, signed GETs/s, CPU per launch); jobs inline (`eager`) or
    run by a worker."""
    with (
        tempfile.TemporaryDirectory(prefix="dfe-bench-api-") as api_dir,
        tempfile.TemporaryDirectory(prefix="dfe-bench-floor-") as floor_dir,
    ):
        api_settings, client_id, secret = prepare_embedded(Path(api_dir))
        floor_settings, _, _ = prepare_embedded(Path(floor_dir))
        port = free_port()
        server = start_server(port, Path(api_dir), workers, eager=eager)
        worker = None if eager else start_worker(Path(api_dir))
        queue = None if eager else open_database(api_settings)
        base, auth = f"http://127.0.0.1:{port}", AppKeyAuth(client_id, secret)
        api_rates, floor_rates, spent = [], [], [0.0, 0.0, 0.0]
        try:
            api_round(base, auth, [f"warm{n}" for n in range(20)], threads, queue)
            floor_round(floor_settings, [f"warm{n}" for n in range(20)])
            for r in range(rounds):
                names = [f"r{r}i{n:05d}" for n in range(count)]
                before = cpu_seconds(server, worker)
                api_rates.append(api_round(base, auth, names, threads, queue))
                after = cpu_seconds(server, worker)
                spent = [total + b - a for total, a, b in zip(spent, before, after, strict=True)]
                floor_rates.append(floor_round(floor_settings, names))
            signed = (
                max(signed_get_round(base, auth, count, threads) for _ in range(2))
                if eager
                else None
            )
        finally:
            for process in (server, worker):
                if process is not None:
                    process.terminate()
                    process.wait()
            if queue is not None:
                queue.dispose()
    cpu = CpuPerLaunch(*(seconds * 1000 / (count * rounds) for seconds in spent))
    return max(api_rates), max(floor_rates), signed, cpu


# PostgreSQL


def pg_available() -> str | None:
    try:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3) as connection:
            connection.execute("SELECT 1")
    except psycopg.Error as error:
        return str(error).splitlines()[0]
    return None


def pg_server_config() -> tuple[str, dict[str, object]]:
    url = make_url(PG_ADMIN_URL)
    return url.host or "127.0.0.1", {
        "driver": "postgresql",
        "port": url.port or 5432,
        "admin_user": url.username,
        "admin_password": url.password or "",
    }


def engine_cycle(database: Database, runner: JobRunner, name: str) -> float:
    """Provision and deprovision one instance through the engine as the Console with
    the in-process queue runs it (each job claimed in the transaction that records it,
    then run); seconds."""
    started = time.perf_counter()
    with database.transaction(actor="bench") as session:
        user = identity.get_user(session, OWNER)
        _, job = launch(session, user, name, infrastructure.get_cluster(session, "pg").id)
        job_id, claimed = job.id, runner.claim_in(session, job)
    if runner.run(job_id, claimed) is not JobStatus.SUCCEEDED:
        raise SystemExit(f"provisioning {name} failed: {jobs_message(database, job_id)}")
    with database.transaction(actor="bench") as session:
        job = request_deprovision(session, name)
        job_id, claimed = job.id, runner.claim_in(session, job)
    if runner.run(job_id, claimed) is not JobStatus.SUCCEEDED:
        raise SystemExit(f"deprovisioning {name} failed: {jobs_message(database, job_id)}")
    return time.perf_counter() - started


def jobs_message(database: Database, job_id: int) -> str | None:
    with database.session() as session:
        return jobs.get_job(session, job_id).message


def bare_cycle(connection: psycopg.Connection, name: str) -> float:
    """CREATE ROLE + CREATE DATABASE + DROP DATABASE + DROP ROLE; seconds."""
    ident = sql.Identifier(name)
    started = time.perf_counter()
    connection.execute(
        sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(ident, sql.Literal(generate_password()))
    )
    connection.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(ident, ident))
    connection.execute(sql.SQL("DROP DATABASE {}").format(ident))
    connection.execute(sql.SQL("DROP ROLE {}").format(ident))
    return time.perf_counter() - started


def drop_everything(names: list[str]) -> None:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as connection:
        for name in names:
            with suppress(psycopg.Error):
                connection.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )
            with suppress(psycopg.Error):
                connection.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def bench_postgresql(count: int) -> tuple[float, float, float]:
    """(engine cycles/s, bare cycles/s, this process's CPU milliseconds per engine cycle)."""
    tag = uuid.uuid4().hex[:6]
    host, config = pg_server_config()
    made: list[str] = []
    with tempfile.TemporaryDirectory(prefix="dfe-bench-pg-") as data_dir:
        settings, _, _ = prepare_embedded(Path(data_dir))
        database = open_database(settings)
        with database.transaction(actor="bench") as session:
            infrastructure.create_server(
                session, ServerCreate(name="pg-db", server_type="db", host=host, config=config)
            )
            cluster = infrastructure.create_cluster(
                session, ClusterCreate(name="pg", subdomain="pg.localhost")
            )
            for server in ("pg-db", "local-web", "local-app"):
                infrastructure.assign_server(session, cluster.id, server)
        runner = JobRunner(database, settings)
        engine_time = bare_time = engine_cpu = 0.0
        try:
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as connection:
                # One engine cycle, then one bare cycle, and so on: both see the same
                # load on a shared server. The first pair warms up.
                for n in range(count + 1):
                    name = f"pg{tag}i{n}"
                    with database.session() as session:
                        next_id = 1 + (session.scalar(text("SELECT max(id) FROM instance_t")) or 0)
                    made.append(instance_database_names(name, next_id)[0])
                    cpu_started = time.process_time()
                    seconds = engine_cycle(database, runner, name)
                    cycle_cpu = time.process_time() - cpu_started
                    made.append(f"dfe_bench_{tag}_{n}")
                    bare_seconds = bare_cycle(connection, made[-1])
                    if n:
                        engine_time += seconds
                        engine_cpu += cycle_cpu
                        bare_time += bare_seconds
        finally:
            database.dispose()
            drop_everything(made)
    return count / engine_time, count / bare_time, engine_cpu * 1000 / count


# Placement


def build_placement_estate(database: Database, servers: int, instances: int) -> int:
    """One cluster of `servers` servers (a third of each type, random capacities) whose
    counters say they carry `instances` instances; the counters set with UPDATEs."""
    rng = random.Random(7)
    per_type = {ServerType.DB: servers - 2 * (servers // 3)}
    per_type[ServerType.WEB] = per_type[ServerType.APP] = servers // 3
    with database.transaction(actor="bench") as session:
        cluster = Cluster(name="big", subdomain="big.localhost", max_instances=instances * 2)
        session.add(cluster)
        session.flush()
        rows = []
        for server_type, count in per_type.items():
            for n in range(count):
                server = Server(
                    name=f"{server_type.value}-{n:04d}",
                    server_type=server_type,
                    host="localhost",
                    config={},
                    max_instances=rng.choice([None, 400, 500, 1000]),
                    is_enabled=rng.random() > 0.05,
                )
                rows.append(server)
        session.add_all(rows)
        session.flush()
        session.add_all(ClusterServer(cluster_id=cluster.id, server_id=s.id) for s in rows)
        session.flush()
        for server_type, count in per_type.items():
            typed = [s for s in rows if s.server_type is server_type]
            loads = [0] * count
            for _ in range(instances):  # spread the instances at random, within capacity
                loads[rng.randrange(count)] += 1
            for server, load in zip(typed, loads, strict=True):
                if server.max_instances is not None:
                    load = min(load, server.max_instances - 1)
                session.execute(
                    update(Server).where(Server.id == server.id).values(instance_count=load)
                )
        session.execute(
            update(Cluster).where(Cluster.id == cluster.id).values(instance_count=instances)
        )
        return cluster.id


def analyze(database: Database) -> None:
    """Statistics for the planner, as a live database has them (PostgreSQL's autovacuum
    would gather them within a minute of the estate's making)."""
    if database.dialect == "sqlite":
        statement = "ANALYZE"
    elif database.dialect == "postgresql":
        statement = "ANALYZE server_t, cluster_server_asgn_t, cluster_t"
    else:
        statement = "ANALYZE TABLE server_t, cluster_server_asgn_t, cluster_t"
    with database.engine.begin() as connection:
        connection.exec_driver_sql(statement)


def time_placements(database: Database, cluster_id: int, count: int) -> tuple[list[float], float]:
    """Milliseconds per place() (locks and three choices), each in a rolled-back
    transaction; and the CPU milliseconds of this process per decision (on a loaded
    machine the wall time also counts the waits for a core)."""
    timings = []
    cpu = 0.0
    with database.session(actor="bench") as session:
        for _ in range(count):
            # A decision is made inside a launch's transaction, which has begun already
            # (the name check reads first): begin it, and check out its connection,
            # before the clock starts.
            session.execute(select(Cluster.id).where(Cluster.id == cluster_id))
            started, cpu_started = time.perf_counter(), time.process_time()
            placement = place(session, cluster_id)
            timings.append((time.perf_counter() - started) * 1000)
            cpu += time.process_time() - cpu_started
            session.rollback()
            assert len(placement.servers) == 3
    return timings, cpu * 1000 / count


def bench_placement(url: str | None, count: int) -> tuple[float, float, float, float]:
    with tempfile.TemporaryDirectory(prefix="dfe-bench-place-") as data_dir:
        database = open_database(Settings(data_dir=Path(data_dir), database_url=url))
        try:
            upgrade(database)
            cluster_id = build_placement_estate(database, 1000, 100_000)
            analyze(database)
            with database.session() as session:
                total = session.scalar(
                    select(Cluster.instance_count).where(Cluster.id == cluster_id)
                )
                assert total == 100_000
            time_placements(database, cluster_id, 20)  # warm-up
            timings, cpu = time_placements(database, cluster_id, count)
        finally:
            database.dispose()
    timings.sort()
    return (
        statistics.mean(timings),
        statistics.median(timings),
        timings[int(len(timings) * 0.95)],
        cpu,
    )


def pg_console_database() -> tuple[str, str]:
    name = f"dfe_bench_console_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_url(PG_ADMIN_URL).set(drivername="postgresql+psycopg", database=name)
    return name, url.render_as_string(hide_password=False)


def mysql_console_database() -> tuple[str, str] | None:
    """A fresh database on the MariaDB/MySQL server for the placement estate (None if down)."""
    url = make_url(MYSQL_ADMIN_URL)
    name = f"dfe_bench_console_{uuid.uuid4().hex[:8]}"
    try:
        with pymysql.connect(
            host=url.host, port=url.port or 3306, user=url.username, password=url.password or ""
        ) as connection:
            connection.cursor().execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    except pymysql.err.Error as error:
        print(f"   MariaDB: not measured: {error}")
        return None
    return name, url.set(database=name).render_as_string(hide_password=False)


def drop_mysql_database(name: str) -> None:
    url = make_url(MYSQL_ADMIN_URL)
    with pymysql.connect(
        host=url.host, port=url.port or 3306, user=url.username, password=url.password or ""
    ) as connection:
        connection.cursor().execute(f"DROP DATABASE IF EXISTS `{name}`")


def report_floor(api: float, floor: float, cpu: CpuPerLaunch) -> None:
    print(
        "   raw floor (rows, SQLite file, storage tree, mail; plain loop, one process): "
        f"{floor:7.1f} instances/s"
    )
    print(f"   ratio API/floor: {api / floor:.2f} (aim: >= 0.50; and >= 100 instances/s)")
    # A rate's price in CPU, which the machine's moods move less than the rate.
    cores = os.cpu_count() or 1
    print(
        f"   CPU per launch, ms: {cpu}; the floor's whole launch {1000 / floor:.1f}"
        f" (100/s on {cores} cores leaves {cores * 10} ms per launch in all)"
    )


def report_placement(label: str, url: str | None, count: int) -> None:
    mean, median, p95, cpu = bench_placement(url, count)
    print(
        f"   {label:11s} {mean:.3f} ms mean, {median:.3f} ms median, {p95:.3f} ms p95 "
        f"(aim: < 2 ms); this process's CPU {cpu:.3f} ms per decision"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=150, help="per round, embedded")
    parser.add_argument("--pg-instances", type=int, default=30, help="PostgreSQL cycles")
    parser.add_argument("--placements", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5, help="embedded rounds")
    parser.add_argument("--threads", type=int, default=2, help="client connections")
    parser.add_argument(
        "--workers",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[1, 2],
        help="Console processes (uvicorn workers) to measure, e.g. 1,2",
    )
    parser.add_argument("--skip-embedded", action="store_true")
    parser.add_argument("--skip-postgresql", action="store_true")
    parser.add_argument("--skip-placement", action="store_true")
    args = parser.parse_args()
    # The engine's info lines (job started/succeeded) would flood the report.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    pg_problem = "skipped" if args.skip_postgresql else pg_available()
    print(f"load average before: {os.getloadavg()[0]:.1f} ({os.cpu_count()} cores)")

    if not args.skip_embedded:
        print(f"1. embedded default, {args.rounds} rounds of {args.instances} instances (best):")
        for workers in args.workers:
            api, floor, signed, cpu = bench_embedded(
                args.instances, args.rounds, args.threads, workers, eager=True
            )
            print(
                f"   signed API (POST /api/v1/instances over HTTP to uvicorn, {workers} Console "
                f"process(es), {args.threads} connections, jobs inline): {api:7.1f} instances/s"
            )
            report_floor(api, floor, cpu)
            print(
                f"   for scale: a signed GET /api/v1/jobs/1 on the same server: {signed:7.1f}/s"
                " (any signed request's price, in every launch)"
            )
        api, floor, _, cpu = bench_embedded(
            args.instances, args.rounds, args.threads, 1, eager=False
        )
        print(
            "   as `dfe up` runs it (1 Console process, jobs on the SQLite queue, one "
            f"`dfe worker`), until every job ended: {api:7.1f} instances/s"
        )
        report_floor(api, floor, cpu)

    print(
        f"2. PostgreSQL instance databases, {args.pg_instances} provision + deprovision cycles"
        " each way, interleaved:"
    )
    if pg_problem:
        print(f"   not measured: {pg_problem}")
    else:
        engine_rate, bare_rate, engine_cpu = bench_postgresql(args.pg_instances)
        print(f"   through the engine (launch, job, deprovision, job): {engine_rate:6.1f} cycles/s")
        print(f"   bare CREATE ROLE/DATABASE + DROP, one connection:   {bare_rate:6.1f} cycles/s")
        print(f"   ratio engine/bare: {engine_rate / bare_rate:.2f} (aim: >= 0.80)")
        print(
            f"   the engine's own CPU per cycle: {engine_cpu:.1f} ms of its"
            f" {1000 / engine_rate:.1f} (the rest: PostgreSQL's work, and waiting for it)"
        )

    if not args.skip_placement:
        print(
            "3. placement, 1,000 servers, 100,000 instances (counters set by UPDATE, "
            f"no instance rows), {args.placements} decisions:"
        )
        report_placement("SQLite:", None, args.placements)
        if not pg_problem:
            name, url = pg_console_database()
            try:
                report_placement("PostgreSQL:", url, args.placements)
            finally:
                drop_everything([name])
        made = mysql_console_database()
        if made is not None:
            try:
                report_placement("MariaDB:", made[1], args.placements)
            finally:
                drop_mysql_database(made[0])
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
