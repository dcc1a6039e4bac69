"""Benchmark: server time of the Console admin UI's main pages with a large estate.

    .venv/bin/python bench/ui.py [--instances 100000] [--users 10000] [--database-url URL]

Loads the data with bulk inserts (default: a fresh SQLite file; pass a PostgreSQL or
MariaDB URL of an empty database to measure there), logs in as an administrator, and
requests each page in process (no network), `--rounds` times after a warm-up. Prints the
median milliseconds per page, the number of SQL statements the page ran (a page whose
count grew with its rows would be an N+1), and the ratio against the login page (a
template with no query) measured in the same run. Aim: every page under 100 ms.
"""

from __future__ import annotations

import argparse
import logging
import re
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import structlog
from fastapi.testclient import TestClient
from sqlalchemy import delete, event, insert, select

from dfe.auth.passwords import hash_password
from dfe.config import Settings
from dfe.console.app import create_app
from dfe.db.base import utcnow
from dfe.db.migrate import upgrade
from dfe.db.session import Database, open_database
from dfe.enums import JobKind, JobStatus, ProvisionState, ServerType
from dfe.models import AuditEntry, Instance, Job, User
from dfe.schemas import ServiceUserCreate
from dfe.services import infrastructure, setup

ADMIN, PASSWORD = "bench@example.com", "bench-password-1"
BATCH = 5000
INSTANCE_BATCH = 1000
TARGET_MS = 100.0


def load(database: Database, settings: Settings, users: int, count: int) -> None:
    """The set-up system, `users` users, `count` instances over 60 days, jobs, audit
    entries, and a few thousand archived instances."""
    started = time.perf_counter()
    with database.transaction(actor="bench") as session:
        setup.run_setup(session, ServiceUserCreate(email=ADMIN, password=PASSWORD), force=False)
        setup.create_local_cluster(session, settings.data_dir)
    password_hash = hash_password(PASSWORD)
    now = utcnow()
    with database.transaction(actor="bench") as session:
        for start in range(0, users, BATCH):
            session.execute(
                insert(User),
                [
                    {
                        "email": f"user{n:06d}@example.com",
                        "password_hash": password_hash,
                        "first_name": "User",
                        "last_name": f"Number {n}",
                        "storage_key": f"{n:032x}",
                    }
                    for n in range(start, min(users, start + BATCH))
                ],
            )
        user_ids = list(session.scalars(select(User.id).order_by(User.id)))
        cluster = infrastructure.get_cluster(session, setup.LOCAL_CLUSTER)
        servers = {kind: infrastructure.get_server(session, f"local-{kind}") for kind in ServerType}
        states = [ProvisionState.PROVISIONED] * 8 + [
            ProvisionState.CREATED,
            ProvisionState.PROVISIONING_ERROR,
        ]
    # One transaction per batch: the triggers that keep the instance counters update the
    # same cluster and server rows for every instance, which PostgreSQL makes slower and
    # slower within one transaction.
    for start in range(0, count, INSTANCE_BATCH):
        with database.transaction(actor="bench") as session:
            rows = []
            for n in range(start, min(count, start + INSTANCE_BATCH)):
                created = now - timedelta(minutes=n * 60 * 24 * 60 // max(count, 1))
                user_id = user_ids[n % len(user_ids)]
                rows.append(
                    {
                        "name": f"i{n:07d}",
                        "user_id": user_id,
                        "owner_type": "user",
                        "owner_id": user_id,
                        "cluster_id": cluster.id,
                        "db_server_id": servers[ServerType.DB].id,
                        "web_server_id": servers[ServerType.WEB].id,
                        "app_server_id": servers[ServerType.APP].id,
                        "storage_key": "bench",
                        "data": {},
                        "provision_state": states[n % len(states)],
                        "created_at": created,
                        "updated_at": created,
                        "state_changed_at": created,
                    }
                )
            session.execute(insert(Instance), rows)
    with database.transaction(actor="bench") as session:
        jobs = min(count, 20_000)
        for start in range(0, jobs, BATCH):
            session.execute(
                insert(Job),
                [
                    {
                        "kind": JobKind.PROVISION,
                        "status": JobStatus.FAILED if n % 10 == 9 else JobStatus.SUCCEEDED,
                        "user_id": user_ids[n % len(user_ids)],
                        "instance_id": n + 1,
                        "instance_name": f"i{n:07d}",
                        "step": "done",
                        "progress": 100,
                        "message": "no room" if n % 10 == 9 else None,
                    }
                    for n in range(start, min(jobs, start + BATCH))
                ],
            )
        for start in range(0, jobs, BATCH):
            session.execute(
                insert(AuditEntry),
                [
                    {
                        "actor": "bench",
                        "action": "instance.create",
                        "target_type": "instance",
                        "target_name": f"i{n:07d}",
                        "at": now - timedelta(seconds=n),
                    }
                    for n in range(start, min(jobs, start + BATCH))
                ],
            )
    archived = min(count // 20, 5000)
    with database.transaction(actor="bench") as session:
        names = [f"i{n:07d}" for n in range(count - archived, count)]
        for start in range(0, len(names), 500):
            session.execute(delete(Instance).where(Instance.name.in_(names[start : start + 500])))
    analyze(database)
    print(
        f"loaded {users} users, {count} instances ({archived} archived), {jobs} jobs, "
        f"{jobs} audit entries in {time.perf_counter() - started:.1f} s"
    )


def analyze(database: Database) -> None:
    """Fresh planner statistics (and on PostgreSQL a vacuumed visibility map), as
    autovacuum or a DBA would give a database after a bulk load."""
    with database.engine.connect() as connection:
        if database.dialect == "mysql":
            for table in ("instance_t", "user_t", "job_t", "audit_t"):
                connection.exec_driver_sql(f"ANALYZE TABLE {table}")
        elif database.dialect == "postgresql":
            connection.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
                "VACUUM ANALYZE"
            )
        connection.commit()  # SQLite is left as it runs: nothing analyzes it by itself


def pages(count: int) -> list[tuple[str, str]]:
    middle = f"i{count // 2:07d}"
    return [
        ("login page (baseline, no query)", "/ui/login"),
        ("overview", "/ui/"),
        ("instances", "/ui/instances"),
        ("instances, a middle page by name", f"/ui/instances?sort=name&page={count // 50 + 1}"),
        ("instances, searched", f"/ui/instances?q={middle[:-2]}"),
        ("instances, by state", "/ui/instances?state=provisioning_error"),
        ("instances, by owner", "/ui/instances?owner=user000042@example.com"),
        ("instance", f"/ui/instances/{middle}"),
        ("users", "/ui/users"),
        ("users, searched", "/ui/users?q=number 4242"),
        ("user", "/ui/users/user000042@example.com"),
        ("clusters", "/ui/clusters"),
        ("cluster (holding every instance)", "/ui/clusters/local"),
        ("servers", "/ui/servers"),
        ("jobs", "/ui/jobs"),
        ("jobs, failed", "/ui/jobs?status=failed"),
        ("audit log", "/ui/audit"),
        ("archive", "/ui/archive/instances"),
        ("keys", "/ui/keys"),
    ]


def measure(
    client: TestClient, database: Database, path: str, rounds: int, logged_in: bool
) -> tuple[float, int]:
    statements = 0

    def count(*_args: Any) -> None:
        nonlocal statements
        statements += 1

    event.listen(database.engine, "before_cursor_execute", count)
    try:
        answer = client.get(path)
    finally:
        event.remove(database.engine, "before_cursor_execute", count)
    expected = 303 if path.endswith("/login") and logged_in else 200
    if answer.status_code != expected:
        raise SystemExit(f"{path}: {answer.status_code} {answer.text[:300]}")
    timings = []
    for _ in range(rounds):
        started = time.perf_counter()
        client.get(path)
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings), statements


def main() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--database-url", default=None, help="an empty database (default: SQLite)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dfe-bench-ui-") as data_dir:
        settings = Settings(data_dir=Path(data_dir), database_url=args.database_url)
        database = open_database(settings)
        upgrade(database)
        load(database, settings, args.users, args.instances)
        app = create_app(settings, database)
        client = TestClient(app, base_url="http://console.test", follow_redirects=False)
        baseline, _ = measure(client, database, "/ui/login", args.rounds, logged_in=False)
        token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/ui/login").text)
        assert token is not None
        client.post(
            "/ui/login", data={"csrf_token": token.group(1), "email": ADMIN, "password": PASSWORD}
        )
        print(f"database: {database.dialect}; median of {args.rounds} requests per page")
        print(f"{'page':<38} {'ms':>8} {'queries':>8} {'x login':>8}")
        print(f"{'login page (baseline, no query)':<38} {baseline:8.1f} {0:8d} {1:8.1f}")
        slow = []
        for label, path in pages(args.instances)[1:]:
            ms, statements = measure(client, database, path, args.rounds, logged_in=True)
            print(f"{label:<38} {ms:8.1f} {statements:8d} {ms / baseline:8.1f}")
            if ms > TARGET_MS:
                slow.append(label)
        print(
            f"all pages under {TARGET_MS:.0f} ms"
            if not slow
            else f"over {TARGET_MS:.0f} ms: {', '.join(slow)}"
        )
        database.dispose()


if __name__ == "__main__":
    main()
