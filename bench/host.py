"""Benchmark: an instance's API through the web tier against the runtime called directly.

    .venv/bin/python bench/host.py [--requests 3000] [--rounds 3] [--threads 4]
                                   [--redis redis://127.0.0.1:6379/0]

One instance (SQLite database, the embedded default) with a table of 1000 rows.
Two servers, each a process of its own: the web tier (`dfe serve host`, which
resolves the instance from the Host header, gets its config from a Console
process, caches it and polls the change feed) and the runtime bound to the same
config (`bench/_runtime_server.py`: no Host lookup, no Console). Rounds alternate
between them; the median requests per second of each and the ratio web tier /
direct are printed (aim: >= 0.80).

The web tier enforces two generous rate limits on the instance (one of its own,
per minute, and one for each instance of the cluster, per day), so their cost is
in the figure: counted in the web tier's memory, or in Redis with `--redis URL`.
It also counts the requests for usage metrics.
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

from dfe.config import Settings
from dfe.db.migrate import upgrade
from dfe.db.session import open_database
from dfe.host.runtime.tables import ColumnSpec, Tables, TableSpec
from dfe.provisioning.engine import JobRunner, launch
from dfe.schemas import LimitCreate, ServiceUserCreate, UserCreate
from dfe.services import identity, infrastructure, instances, limits, setup

PATH = "/api/tables/items/rows?limit=20&sort=-id&filter=quantity:ge:10"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prepare(settings: Settings, config_file: Path) -> str:
    """Set up, launch and provision the instance `bench`, fill its table; its API key."""
    database = open_database(settings)
    upgrade(database)
    with database.transaction(actor="bench") as session:
        setup.run_setup(
            session,
            ServiceUserCreate(email="bench@example.com", password="bench-password-1"),
            force=False,
        )
        host_key = setup.create_local_cluster(session, settings.data_dir)
        user = identity.create_user(
            session, UserCreate(email="user@example.com", password="bench-password-1")
        )
        cluster = infrastructure.get_cluster(session, setup.LOCAL_CLUSTER)
        _, job = launch(session, user, "bench", cluster.id)
        job_id = job.id
    JobRunner(database, settings).run(job_id)
    with database.transaction(actor="bench") as session:
        for data in (
            LimitCreate(label="bench-instance", scope="instance", instance="bench",
                        period="minute", max_requests=1_000_000),
            LimitCreate(label="bench-each", scope="cluster", cluster=setup.LOCAL_CLUSTER,
                        period="day", max_requests=1_000_000),
        ):  # fmt: skip
            limits.create_limit(session, data)
    with database.session() as session:
        config = instances.instance_config(session, "bench")
        api_key = instances.instance_api_key(session, "bench").api_key
    database.dispose()
    setup.write_key_file(settings.effective_host_key_file, host_key, settings.console_url or "")
    config_file.write_text(config.model_dump_json())

    from dfe.host.runtime.context import instance_engine

    engine = instance_engine(config.database_url or "")
    tables = Tables(engine)
    spec = TableSpec(
        name="items",
        columns=[
            ColumnSpec(name="label", type="string"),
            ColumnSpec(name="quantity", type="integer"),
        ],
    )
    tables.create(spec)
    tables.insert_rows("items", [{"label": f"item {n}", "quantity": n % 50} for n in range(1000)])
    engine.dispose()
    return api_key


def start(
    command: list[str], env: dict[str, str], health: str, host: str
) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120  # a loaded machine starts processes slowly
    while time.monotonic() < deadline:
        try:
            if httpx2.get(health, headers={"host": host}, timeout=1).status_code == 200:
                return process
        except httpx2.TransportError:
            pass
        time.sleep(0.1)
    process.kill()
    raise SystemExit(f"{' '.join(command)} did not start")


def run_round(
    base: str, headers: dict[str, str], count: int, threads: int, *, limited: bool
) -> float:
    """`count` GETs from `threads` keep-alive connections; requests per second."""
    errors: list[str] = []

    def worker(n: int) -> None:
        with httpx2.Client(base_url=base, headers=headers, timeout=10) as client:
            for _ in range(n):
                response = client.get(PATH)
                if response.status_code != 200:
                    errors.append(f"{response.status_code} {response.text[:200]}")
                elif limited and "ratelimit-remaining" not in response.headers:
                    errors.append("no RateLimit headers: the limits were not enforced")

    elapsed = timed_threads(worker, [count // threads] * threads)
    if errors:
        raise SystemExit(f"{len(errors)} requests failed, first: {errors[0]}")
    return (count // threads * threads) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--redis", metavar="URL", help="Rate-limit counters in this Redis.")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="dfe-bench-host-") as data_dir:
        ports = {"console": free_port(), "web tier": free_port(), "direct": free_port()}
        console_url = f"http://127.0.0.1:{ports['console']}"
        env = {
            **os.environ,
            "DFE_DATA_DIR": data_dir,
            "DFE_CONSOLE_URL": console_url,
            "DFE_CONSOLE_PORT": str(ports["console"]),
            "DFE_HOST_PORT": str(ports["web tier"]),
            "DFE_REDIS_NAMESPACE": f"bench{os.getpid()}",
        }
        env.pop("DFE_DATABASE_URL", None)
        env.pop("DFE_REDIS_URL", None)
        if args.redis:
            env["DFE_REDIS_URL"] = args.redis
        settings = Settings(data_dir=Path(data_dir), database_url=None, console_url=console_url)
        config_file = Path(data_dir) / "bench-config.json"
        api_key = prepare(settings, config_file)
        bench = Path(__file__).parent
        host = f"bench.localhost:{ports['web tier']}"
        servers = [
            start(
                [sys.executable, str(bench / "_console_server.py"), str(ports["console"])],
                env,
                f"{console_url}/api/v1/health",
                f"127.0.0.1:{ports['console']}",
            ),
            start(
                [sys.executable, "-m", "dfe", "serve", "host"],
                env,
                f"http://127.0.0.1:{ports['web tier']}/api/health",
                host,
            ),
            start(
                [sys.executable, str(bench / "_runtime_server.py"), str(ports["direct"]),
                 str(config_file)],
                env,
                f"http://127.0.0.1:{ports['direct']}/api/health",
                "127.0.0.1",
            ),
        ]  # fmt: skip
        targets = {
            "web tier": (f"http://127.0.0.1:{ports['web tier']}", host),
            "direct": (f"http://127.0.0.1:{ports['direct']}", f"127.0.0.1:{ports['direct']}"),
        }
        rates: dict[str, list[float]] = {name: [] for name in targets}
        try:
            for _round in range(args.rounds + 1):  # the first round warms up
                for name, (base, host_header) in targets.items():
                    headers = {"Host": host_header, "Authorization": f"Bearer {api_key}"}
                    limited = name == "web tier"
                    rate = run_round(base, headers, args.requests, args.threads, limited=limited)
                    if _round:
                        rates[name].append(rate)
        finally:
            for process in servers:
                process.terminate()
            for process in servers:
                process.wait()

    through, direct = (statistics.median(rates[name]) for name in ("web tier", "direct"))
    counters = "Redis" if args.redis else "memory"
    print(
        f"instance database: sqlite (embedded default); {args.rounds} rounds of "
        f"{args.requests} requests, {args.threads} connections; "
        f"2 rate limits enforced by the web tier, counters in {counters}"
    )
    print(f"GET {PATH}")
    print(f"  through the web tier:        {through:8.0f} req/s")
    print(f"  runtime called directly:     {direct:8.0f} req/s")
    print(f"ratio web tier/direct: {through / direct:.2f} (aim: >= 0.80)")


if __name__ == "__main__":
    main()
