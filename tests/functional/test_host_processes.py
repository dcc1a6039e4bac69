"""The web tier as it runs: `dfe setup --local-cluster` (which writes host.key), then
`dfe serve console` and `dfe serve host` as real processes on loopback, and an
instance reached the way a user reaches it (`Host: <name>.localhost:<port>`)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from cryptography.fernet import Fernet

from dfe.client import ConsoleClient
from dfe.schemas import InstanceCreate, UserCreate

PASSWORD = "a-long-enough-password"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for(url: str, timeout: float = 20, headers: dict[str, str] | None = None) -> None:
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
