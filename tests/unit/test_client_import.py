"""dfe.client imports and works without any of the server's dependencies.

A fresh interpreter gets an import hook that refuses the server's libraries,
then imports dfe.client and makes signed calls against httpx2.MockTransport.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

SERVER_ONLY = [
    "sqlalchemy",
    "fastapi",
    "starlette",
    "alembic",
    "uvicorn",
    "pwdlib",
    "celery",
    "jinja2",
    "pydantic_settings",
    "psycopg",
    "pymysql",
    "redis",
    "structlog",
    "typer",
    "rich",
]

SCRIPT = textwrap.dedent(
    """
    import asyncio
    import importlib.abc
    import sys

    BLOCKED = set(sys.argv[1].split(","))


    class Refuse(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is a server dependency")
            return None


    sys.meta_path.insert(0, Refuse())

    import httpx2

    import dfe.client
    from dfe.client import AsyncConsoleClient, ConsoleClient, NotFoundError
    from dfe.schemas import MountCreate

    MOUNT = {
        "id": 1, "name": "m1", "mount_type": "local", "root_path": "/srv/m1", "config": {},
        "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
    }
    seen = []


    def handler(request):
        seen.append(request)
        assert "signature" in request.headers and "content-digest" in request.headers
        if request.method == "POST":
            return httpx2.Response(201, json=MOUNT)
        return httpx2.Response(404, json={"code": "not_found", "detail": "no mount 'x'"})


    with ConsoleClient(
        "http://console.test", "dfe_x", "secret-" + "x" * 30,
        transport=httpx2.MockTransport(handler),
    ) as client:
        assert client.create_mount(MountCreate(name="m1", root_path="/srv/m1")).name == "m1"
        try:
            client.get_mount("x")
        except NotFoundError as error:
            assert error.code == "not_found"
        else:
            raise AssertionError("no NotFoundError")


    async def go():
        async with AsyncConsoleClient(
            "http://console.test", "dfe_x", "secret-" + "x" * 30,
            transport=httpx2.MockTransport(handler),
        ) as client:
            return await client.create_mount(MountCreate(name="m1", root_path="/srv/m1"))


    assert asyncio.run(go()).id == 1
    assert len(seen) == 3
    loaded = sorted(
        name for name in sys.modules
        if name.split(".")[0] in BLOCKED
        or name.startswith(("dfe.console", "dfe.db", "dfe.models", "dfe.services", "dfe.config"))
    )
    assert not loaded, loaded
    print("ok")
    """
)


def run(blocked: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, ",".join(blocked)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_client_needs_none_of_the_server_dependencies() -> None:
    result = run(SERVER_ONLY)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_the_hook_does_refuse() -> None:
    """The same script with httpx2 blocked fails: the hook is in force."""
    result = run([*SERVER_ONLY, "httpx2"])
    assert result.returncode != 0
    assert "httpx2 is a server dependency" in result.stderr
