"""The web tier as it runs: `dfe setup --local-cluster` (which writes host.key), then
`dfe serve console` and `dfe serve host` as real processes on loopback, and an
instance reached the way a user reaches it (`Host: <name>.localhost:<port>`)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from cryptography.fernet import Fernet

from dfe.client import ConsoleClient
from dfe.schemas import InstanceCreate, LimitCreate, LimitUpdate, UserCreate

PASSWORD = "a-long-enough-password"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for(url: str, timeout: float = 60, headers: dict[str, str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx2.get(url, headers=headers, timeout=1).status_code == 200:
                return
        except httpx2.TransportError:
            pass
        assert time.monotonic() < deadline, f"{url} did not come up"
        time.sleep(0.1)


@pytest.fixture
def system(tmp_path: Path) -> Iterator[dict[str, str]]:
    ports = {"console": free_port(), "host": free_port()}
    env = {
        **os.environ,
        "DFE_DATA_DIR": str(tmp_path / "var"),
        "DFE_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "DFE_CONSOLE_PORT": str(ports["console"]),
        "DFE_HOST_PORT": str(ports["host"]),
        "DFE_HOST_POLL_SECONDS": "1",
        "DFE_QUEUE_EAGER": "true",  # no worker: the Console provisions before answering
    }
    env.pop("DFE_DATABASE_URL", None)
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD)
    dfe = [sys.executable, "-m", "dfe"]
    subprocess.run(
        [*dfe, "setup", "--email", "root@example.com", "--password-file", str(password_file),
         "--local-cluster"],
        env=env, check=True, capture_output=True,
    )  # fmt: skip
    host_key = tmp_path / "var" / "host.key"
    assert host_key.is_file()
    assert host_key.stat().st_mode & 0o777 == 0o600
    processes = [
        subprocess.Popen([*dfe, "serve", component], env=env, stderr=subprocess.DEVNULL)
        for component in ("console", "host")
    ]
    try:
        wait_for(f"http://127.0.0.1:{ports['console']}/api/v1/health")
        wait_for(f"http://127.0.0.1:{ports['host']}/health")
        yield {
            "console_key": str(tmp_path / "var" / "console.key"),
            "host_port": str(ports["host"]),
        }
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=20)


def test_an_instance_on_real_processes(system):
    with ConsoleClient.from_key_file(system["console_key"]) as console:
        console.register_user(UserCreate(email="ann@example.com", password=PASSWORD))
        console.launch_instance(InstanceCreate(name="shop", owner="ann@example.com"))
        key = console.get_instance_api_key("shop").api_key
        port = system["host_port"]
        base = f"http://127.0.0.1:{port}"
        headers = {"Host": f"shop.localhost:{port}", "Authorization": f"Bearer {key}"}
        with httpx2.Client(base_url=base, headers=headers, timeout=10) as shop:
            table = {"name": "pets", "columns": [{"name": "name", "type": "string"}]}
            assert shop.post("/api/tables", json=table).status_code == 201
            rows = [{"name": "rex"}, {"name": "tom"}, {"name": "kit"}]
            assert shop.post("/api/tables/pets/rows", json=rows).status_code == 201
            found = shop.get("/api/tables/pets/rows", params={"sort": "name", "limit": 2})
            assert [r["name"] for r in found.json()["items"]] == ["kit", "rex"]
            assert found.json()["total"] == 3

            console.delete_instance("shop")
            started = time.monotonic()
            while shop.get("/api/tables").status_code != 404:
                assert time.monotonic() - started < 5, "still served 5 s after deprovisioning"
                time.sleep(0.1)


REDIS_URL = os.environ.get("DFE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def redis_or_skip() -> str:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=2).ping()
    except redis.RedisError as error:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"redis unavailable: {error}")
        pytest.skip(f"redis unavailable: {error}")
    return REDIS_URL


def test_a_limit_per_minute_is_shared_by_two_web_tiers_on_redis(tmp_path):
    redis_url = redis_or_skip()
    namespace = f"test{uuid.uuid4().hex[:12]}"
    ports = {"console": free_port(), "a": free_port(), "b": free_port()}
    env = {
        **os.environ,
        "DFE_DATA_DIR": str(tmp_path / "var"),
        "DFE_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "DFE_CONSOLE_PORT": str(ports["console"]),
        "DFE_HOST_POLL_SECONDS": "1",
        "DFE_QUEUE_EAGER": "true",
        "DFE_REDIS_URL": redis_url,
        "DFE_REDIS_NAMESPACE": namespace,
    }
    env.pop("DFE_DATABASE_URL", None)
    (tmp_path / "password").write_text(PASSWORD)
    dfe = [sys.executable, "-m", "dfe"]
    subprocess.run(
        [*dfe, "setup", "--email", "root@example.com", "--password-file",
         str(tmp_path / "password"), "--local-cluster"],
        env=env, check=True, capture_output=True,
    )  # fmt: skip
    processes = [subprocess.Popen([*dfe, "serve", "console"], env=env, stderr=subprocess.DEVNULL)]
    processes += [
        subprocess.Popen(
            [*dfe, "serve", "host"],
            env={**env, "DFE_HOST_PORT": str(ports[tier])},
            stderr=subprocess.DEVNULL,
        )
        for tier in ("a", "b")
    ]
    try:
        wait_for(f"http://127.0.0.1:{ports['console']}/api/v1/health")
        for tier in ("a", "b"):
            wait_for(f"http://127.0.0.1:{ports[tier]}/health")
        with ConsoleClient.from_key_file(tmp_path / "var" / "console.key") as console:
            console.register_user(UserCreate(email="ann@example.com", password=PASSWORD))
            console.launch_instance(InstanceCreate(name="shop", owner="ann@example.com"))
            key = console.get_instance_api_key("shop").api_key
            n = 5
            console.create_limit(
                LimitCreate(label="shop-per-minute", scope="instance", instance="shop",
                            period="minute", max_requests=n)
            )  # fmt: skip
            tiers = [
                httpx2.Client(
                    base_url=f"http://127.0.0.1:{ports[tier]}",
                    headers={"Host": "shop.localhost", "Authorization": f"Bearer {key}"},
                    timeout=10,
                )
                for tier in ("a", "b")
            ]
            # Start early in a minute, so that the window cannot end half-way.
            if time.time() % 60 > 40:
                time.sleep(60 - time.time() % 60 + 0.5)
            answers = [tiers[i % 2].get("/api/tables") for i in range(n + 1)]
            assert [a.status_code for a in answers] == [200] * n + [429]
            assert [a.headers["ratelimit-remaining"] for a in answers] == [
                str(n - i - 1) for i in range(n)
            ] + ["0"]
            refused = answers[-1]
            assert refused.headers["ratelimit-limit"] == str(n)
            assert refused.headers["dfe-ratelimit-label"] == "shop-per-minute"
            assert 1 <= int(refused.headers["retry-after"]) <= 60
            assert refused.json()["code"] == "rate_limited"
            assert tiers[0].get("/api/tables").status_code == 429  # the other process too

            # A change made in the Console reaches both processes within 5 seconds.
            console.update_limit("shop-per-minute", LimitUpdate(max_requests=1000))
            started = time.monotonic()
            for tier in tiers:
                while tier.get("/api/tables").status_code == 429:
                    assert time.monotonic() - started < 5, "the new limit took over 5 s"
                    time.sleep(0.1)

            # A reset deletes the Redis counters and starts a new generation everywhere.
            counters = [
                k for k in _redis_keys(redis_url, namespace) if k.startswith(f"{namespace}:rl:")
            ]
            assert counters
            console.reset_limit("shop-per-minute")
            assert not set(counters) & set(_redis_keys(redis_url, namespace))
            time.sleep(5)  # the feed carries the reset to each process within 5 s
            first = tiers[0].get("/api/tables")
            second = tiers[1].get("/api/tables")
            assert first.headers["ratelimit-remaining"] == "999"
            assert second.headers["ratelimit-remaining"] == "998"
            for tier in tiers:
                tier.close()
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=20)
        import redis

        client = redis.Redis.from_url(redis_url)
        leftovers = list(client.scan_iter(match=f"{namespace}:*"))
        if leftovers:
            client.delete(*leftovers)
        client.close()


def _redis_keys(redis_url: str, namespace: str) -> list[str]:
    import redis

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        return list(client.scan_iter(match=f"{namespace}:*"))
    finally:
        client.close()


def test_redis_counters_are_exact_under_concurrency_and_expire_with_their_window():
    redis_url = redis_or_skip()
    import asyncio

    import redis

    from dfe.host.limiter import RateLimiter, RedisCounters
    from dfe.schemas import InstanceLimit

    namespace = f"test{uuid.uuid4().hex[:12]}"
    rule = InstanceLimit(id=1, label="l", scope="instance", period="hour", max_requests=30)

    async def hammer() -> list[int]:
        limiters = [RateLimiter(RedisCounters(redis_url), namespace=namespace) for _ in range(2)]
        try:
            decisions = await asyncio.gather(
                *(limiters[n % 2].check(5, [rule], None) for n in range(50))
            )
        finally:
            for limiter in limiters:
                await limiter.aclose()
        return sorted(d.hits[0].count for d in decisions if d is not None)

    assert asyncio.run(hammer()) == list(range(1, 51))
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        (key,) = client.scan_iter(match=f"{namespace}:*")
        assert key.startswith(f"{namespace}:rl:1:0:5:")
        assert client.get(key) == "50"
        window_end = (int(key.rsplit(":", 1)[1]) + 1) * 3600
        assert 0 < client.ttl(key) <= window_end + 1 - int(time.time()) + 1
        client.delete(key)
    finally:
        client.close()
