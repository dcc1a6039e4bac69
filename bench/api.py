"""Benchmark: a signed read against the same read with signature checking bypassed.

    .venv/bin/python bench/api.py [--requests 3000] [--rounds 3] [--database-url URL]

Both servers run the same Console code on the same database (default: a fresh SQLite
file, the embedded default) in a process of their own; requests are signed before the
clock starts, so the figures are the server's. Rounds alternate between the two
servers and the median is reported, with the ratio signed/unsigned (aim: >= 0.80),
and the cost of `verify_request` itself, measured in process.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2
from _threads import timed_threads

from dfe.auth.signatures import verify_request
from dfe.config import Settings
from dfe.db.migrate import upgrade
from dfe.db.session import open_database
from dfe.enums import OwnerType, ServerType
from dfe.schemas import ServiceUserCreate, UserCreate
from dfe.services import identity, infrastructure, instances, setup
from dfe.services.keys import get_key

PATH = "/api/v1/instances/bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prepare(settings: Settings) -> tuple[str, str]:
    database = open_database(settings)
    upgrade(database)
    with database.transaction(actor="bench") as session:
        result = setup.run_setup(
            session,
            ServiceUserCreate(email="bench@example.com", password="bench-password-1"),
            force=False,
        )
        setup.create_local_cluster(session, settings.data_dir)
        user = identity.create_user(
            session, UserCreate(email="user@example.com", password="bench-password-1")
        )
        cluster = infrastructure.get_cluster(session, setup.LOCAL_CLUSTER)
        servers = {kind: infrastructure.get_server(session, f"local-{kind}") for kind in ServerType}
        instances.create_instance_record(session, "bench", user, cluster, servers)
    database.dispose()
    key = result.keys[OwnerType.CONSOLE]
    return key.client_id, key.client_secret


def start_server(port: int, env: dict[str, str], bypass: bool) -> subprocess.Popen[bytes]:
    command = [sys.executable, str(Path(__file__).with_name("_console_server.py")), str(port)]
    process = subprocess.Popen([*command, *(["--bypass"] if bypass else [])], env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx2.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=1)
            return process
        except httpx2.TransportError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("the benchmark server did not start")


def presigned(base: str, count: int, client_id: str, secret: str) -> list[dict[str, str]]:
    from dfe.auth.signatures import sign_request

    url = base + PATH
    host = base.removeprefix("http://")
    return [
        {
            "host": host,
            **sign_request(
                "GET", url, {"host": host}, b"", client_id=client_id, client_secret=secret
            ),
        }
        for _ in range(count)
    ]


def run_round(base: str, headers: list[dict[str, str]], threads: int) -> float:
    """Send every prepared request once, from `threads` keep-alive connections; req/s."""
    chunks = [headers[i::threads] for i in range(threads)]
    errors: list[str] = []

    def worker(chunk: list[dict[str, str]]) -> None:
        with httpx2.Client(base_url=base, timeout=10) as client:
            for request_headers in chunk:
                response = client.get(PATH, headers=request_headers)
                if response.status_code != 200:
                    errors.append(f"{response.status_code} {response.text[:200]}")

    elapsed = timed_threads(worker, chunks)
    if errors:
        raise SystemExit(f"{len(errors)} requests failed, first: {errors[0]}")
    return len(headers) / elapsed


def verification_cost(settings: Settings, client_id: str, secret: str, count: int) -> float:
    """Milliseconds per verify_request with the real key lookup and nonce store."""
    from dfe.auth.nonces import DatabaseNonceStore
    from dfe.auth.signatures import sign_request

    database = open_database(settings)
    nonces = DatabaseNonceStore(database)
    url = "http://console.test" + PATH
    requests = [
        {
            "host": "console.test",
            **sign_request(
                "GET", url, {"host": "console.test"}, b"", client_id=client_id, client_secret=secret
            ),
        }
        for _ in range(count)
    ]
    with database.session() as session:
        started = time.perf_counter()
        for headers in requests:
            verify_request(
                "GET",
                url,
                headers,
                b"",
                resolve_secret=lambda cid: get_key(session, cid).client_secret,
                nonces=nonces,
            )
        elapsed = time.perf_counter() - started
    database.dispose()
    return elapsed / count * 1000


def add_instances(settings: Settings, count: int) -> None:
    """Bulk-insert `count` instance rows (records only) beside the one being read."""
    from sqlalchemy import insert, select

    from dfe.models import Instance

    database = open_database(settings)
    with database.transaction(actor="bench") as session:
        template = session.scalars(select(Instance).where(Instance.name == "bench")).one()
        columns = {
            "user_id": template.user_id,
            "owner_type": "user",
            "owner_id": template.user_id,
            "cluster_id": template.cluster_id,
            "db_server_id": template.db_server_id,
            "web_server_id": template.web_server_id,
            "app_server_id": template.app_server_id,
            "storage_key": "bench",
            "data": {},
        }
        rows = [{**columns, "name": f"i{n:07d}"} for n in range(count)]
        for start in range(0, count, 5000):
            session.execute(insert(Instance), rows[start : start + 5000])
    database.dispose()


def list_latency(base: str, client_id: str, secret: str, count: int) -> tuple[float, int]:
    """Median milliseconds of a signed GET /api/v1/instances?limit=50 page, and the total."""
    from dfe.client import AppKeyAuth

    timings = []
    with httpx2.Client(base_url=base, auth=AppKeyAuth(client_id, secret), timeout=30) as client:
        for n in range(count):
            params = {"limit": 50, "cursor": str(n * 997 % 90000), "sort": "-created_at"}
            started = time.perf_counter()
            response = client.get("/api/v1/instances", params=params)
            timings.append((time.perf_counter() - started) * 1000)
            total = response.json()["total"]
    return statistics.median(timings), total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--database-url", default=None)
    parser.add_argument(
        "--instances", type=int, default=100_000, help="rows for the list measurement (0: skip)"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="dfe-bench-") as data_dir:
        env = {**os.environ, "DFE_DATA_DIR": data_dir}
        if args.database_url:
            env["DFE_DATABASE_URL"] = args.database_url
        settings = Settings(data_dir=Path(data_dir), database_url=args.database_url)
        client_id, secret = prepare(settings)
        ports = {"signed": free_port(), "unsigned": free_port()}
        servers = {
            "signed": start_server(ports["signed"], env, bypass=False),
            "unsigned": start_server(ports["unsigned"], env, bypass=True),
        }
        rates: dict[str, list[float]] = {"signed": [], "unsigned": []}
        try:
            for name in ("unsigned", "signed"):  # warm-up
                base = f"http://127.0.0.1:{ports[name]}"
                run_round(base, presigned(base, 200, client_id, secret), args.threads)
            for _ in range(args.rounds):
                for name in ("unsigned", "signed"):
                    base = f"http://127.0.0.1:{ports[name]}"
                    headers = presigned(base, args.requests, client_id, secret)
                    rates[name].append(run_round(base, headers, args.threads))
            listing = None
            if args.instances:
                add_instances(settings, args.instances)
                base = f"http://127.0.0.1:{ports['signed']}"
                listing = list_latency(base, client_id, secret, 30)
        finally:
            for process in servers.values():
                process.terminate()
                process.wait()
        cost = verification_cost(settings, client_id, secret, 1000)

    signed, unsigned = (statistics.median(rates[n]) for n in ("signed", "unsigned"))
    engine = (args.database_url or "sqlite (embedded default)").split("://")[0]
    print(
        f"database: {engine}; {args.rounds} rounds of {args.requests} requests, "
        f"{args.threads} connections"
    )
    print(f"GET {PATH}, signed:                 {signed:8.0f} req/s")
    print(f"GET {PATH}, signature check bypassed: {unsigned:8.0f} req/s")
    print(f"ratio signed/unsigned: {signed / unsigned:.2f} (aim: >= 0.80)")
    print(f"verify_request (key lookup, HMAC, digest, nonce insert): {cost:.3f} ms/request")
    if listing is not None:
        print(
            f"GET /api/v1/instances?limit=50 (a page deep in {listing[1]} instances, signed, "
            f"client-side time): {listing[0]:.1f} ms median"
        )


if __name__ == "__main__":
    main()
