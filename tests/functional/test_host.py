"""The web tier and the instance runtime end to end, in process.

The web tier app runs under Starlette's TestClient (its lifespan, so the change
feed poller, included) and fetches configs from a real Console app through
httpx2's ASGITransport, signed with the local web server's own key, as `dfe
setup --local-cluster` makes it. Instances are launched through the Console API
(the queue is eager: provisioned before the answer) on the local cluster (SQLite
instance databases, a local mount) or on clusters whose db server is the
machine's PostgreSQL or MariaDB. The Console's own database is SQLite here; the
Console routes themselves run on every engine in test_host_console.py.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.engine import make_url

from dfe.client import AppKeyAuth, AsyncConsoleClient
from dfe.config import Settings
from dfe.console.app import create_app as create_console
from dfe.db.session import Database
from dfe.enums import OperationalState, OwnerType
from dfe.host.app import WebTier
from dfe.host.app import create_app as create_web_tier
from dfe.models import Instance, Server
from dfe.provisioning import DriverError, driver_for
from dfe.schemas import ClusterCreate, ServerCreate, ServiceUserCreate, UserCreate
from dfe.services import identity, infrastructure, instances, setup
from dfe.services import metrics as metrics_service

PASSWORD = "a-long-enough-password"
ANN, BOB = "ann@example.com", "bob@example.com"
SERVER_URLS = {
    "postgresql": os.environ.get(
        "DFE_TEST_PG_URL", "postgresql+psycopg://root@127.0.0.1:5432/test"
    ),
    "mysql": os.environ.get("DFE_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test"),
}
IN_CI = os.environ.get("CI", "").lower() == "true"


class SwitchableTransport(httpx2.AsyncBaseTransport):
    """The Console app in process, or, with `down`, a Console nobody can reach."""

    def __init__(self, app: Any) -> None:
        self.inner = httpx2.ASGITransport(app=app)
        self.down = False

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if self.down:
            raise httpx2.ConnectError("the Console is down (test)", request=request)
        return await self.inner.handle_async_request(request)


@dataclass
class Hosting:
    """A Console, a web tier in front of it, and the admin's view of both."""

    db: Database
    data_dir: Path
    console: TestClient
    web: TestClient
    tier: WebTier
    transport: SwitchableTransport

    def launch(self, name: str, *, cluster: str = "local", owner: str = ANN) -> dict[str, Any]:
        response = self.console.post(
            "/api/v1/instances", json={"name": name, "owner": owner, "cluster": cluster}
        )
        assert response.status_code == 202, response.text
        assert response.json()["instance"]["provision_state"] == "provisioned"
        return response.json()["instance"]

    def delete(self, name: str) -> None:
        response = self.console.delete(f"/api/v1/instances/{name}")
        assert response.status_code == 202, response.text
        assert response.json()["job"]["status"] == "succeeded"

    def api_key(self, name: str) -> str:
        response = self.console.get(f"/api/v1/instances/{name}/api-key")
        assert response.status_code == 200, response.text
        key: str = response.json()["api_key"]
        return key

    def call(
        self, method: str, name: str, path: str, key: str | None = None, **kwargs: Any
    ) -> httpx2.Response:
        headers = dict(kwargs.pop("headers", {}))
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        return self.web.request(method, f"http://{name}.localhost{path}", headers=headers, **kwargs)

    def status(
        self, method: str, name: str, path: str, key: str | None = None, **kwargs: Any
    ) -> int:
        return self.call(method, name, path, key, **kwargs).status_code

    def set_state(self, name: str, **values: Any) -> None:
        with self.db.transaction(actor="test") as session:
            instance = session.scalars(select(Instance).where(Instance.name == name)).one()
            for column, value in values.items():
                setattr(instance, column, value)

    def wait_for_feed(self) -> None:
        """Until the web tier has polled the change feed twice more (so it saw what was
        committed before this call)."""
        target = self.tier.configs.polls + 2
        deadline = time.monotonic() + 10
        while self.tier.configs.polls < target:
            assert time.monotonic() < deadline, "the change feed was not polled"
            time.sleep(0.02)


def wait_until(predicate: Callable[[], bool], timeout: float) -> float:
    started = time.monotonic()
    while not predicate():
        elapsed = time.monotonic() - started
        assert elapsed < timeout, f"not within {timeout} s"
        time.sleep(0.05)
    return time.monotonic() - started


@pytest.fixture
def console_db(migrated_urls: Callable[[str], str], tmp_path: Path) -> Iterator[Database]:
    path = tmp_path / "console.db"
    shutil.copyfile(make_url(migrated_urls("sqlite")).database or "", path)
    database = Database(f"sqlite:///{path}")
    yield database
    database.dispose()


@pytest.fixture
def hosting(console_db: Database, tmp_path: Path) -> Iterator[Callable[..., Hosting]]:
    """Make a Hosting with these web-tier settings (the feed polled often, by default)."""
    with ExitStack() as stack:

        def make(**host_settings: Any) -> Hosting:
            data_dir = tmp_path / "var"
            settings = Settings(data_dir=data_dir, **{"host_poll_seconds": 0.2, **host_settings})
            with console_db.transaction(actor="test") as session:
                result = setup.run_setup(
                    session, ServiceUserCreate(email="root@example.com", password=PASSWORD),
                    force=False,
                )  # fmt: skip
                host_key = setup.create_local_cluster(session, data_dir)
                for email in (ANN, BOB):
                    identity.create_user(session, UserCreate(email=email, password=PASSWORD))
            admin_key = result.keys[OwnerType.CONSOLE]
            console_app = create_console(settings, console_db)
            console = TestClient(console_app, base_url="http://console.test")
            console.auth = AppKeyAuth(admin_key.client_id, admin_key.client_secret)
            transport = SwitchableTransport(console_app)
            client = AsyncConsoleClient(
                "http://console.test",
                host_key.client_id,
                host_key.client_secret,
                transport=transport,
                retries=0,
            )
            tier = create_web_tier(settings, console=client)
            web = stack.enter_context(TestClient(tier))
            stack.callback(console.close)
            return Hosting(console_db, data_dir, console, web, tier, transport)

        stack.callback(drop_server_databases, console_db)
        yield make


def drop_server_databases(db: Database) -> None:
    """The databases and users a test's instances have on the machine's PostgreSQL or
    MariaDB: dropped (the SQLite files go with the test's directory)."""
    with db.session() as s:
        placed = s.execute(
            select(Instance.db_name, Instance.db_user, Server.host, Server.config).join(
                Server, Server.id == Instance.db_server_id
            )
        ).all()
    for database_name, user_name, host, config in placed:
        if database_name and user_name and config.get("driver") in ("postgresql", "mysql"):
            driver_for({"host": host, **config}).drop(database_name, user_name)


def server_cluster(hosting: Hosting, kind: str) -> str:
    """A cluster `<kind>` on the machine's PostgreSQL or MariaDB (the local web and app
    servers), or skip/fail when the server is not there."""
    if kind == "sqlite":
        return "local"
    url = make_url(SERVER_URLS[kind])
    config = {
        "driver": kind,
        "port": url.port or {"postgresql": 5432, "mysql": 3306}[kind],
        "admin_user": url.username,
        "admin_password": url.password or "",
    }
    try:
        driver_for({"host": url.host or "127.0.0.1", **config}).check()
    except DriverError as error:
        message = f"{kind} server unavailable: {error}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    with hosting.db.transaction(actor="test") as s:
        infrastructure.create_server(
            s,
            ServerCreate(
                name=f"{kind}-db", server_type="db", host=url.host or "127.0.0.1", config=config
            ),
        )
        cluster = infrastructure.create_cluster(s, ClusterCreate(name=kind, subdomain="localhost"))
        for server in (f"{kind}-db", "local-web", "local-app"):
            infrastructure.assign_server(s, cluster.id, server)
    return kind


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


# The instance API on every database engine, and deprovisioning


ORDERS = {
    "name": "orders",
    "columns": [
        {"name": "customer", "type": "string", "nullable": False},
        {"name": "note", "type": "text"},
        {"name": "quantity", "type": "integer"},
        {"name": "price", "type": "number"},
        {"name": "paid", "type": "boolean"},
        {"name": "placed_at", "type": "datetime"},
    ],
}


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "mysql"])
def test_an_instance_serves_its_database_through_the_web_tier(hosting, kind):
    world = hosting()
    cluster = server_cluster(world, kind)
    name = unique("shop")
    launched = world.launch(name, cluster=cluster)
    assert launched["host"] == f"{name}.localhost"
    key = world.api_key(name)

    assert world.call("GET", name, "/api/health").json() == {
        "status": "ok",
        "database": "ok",
        "instance": name,
    }
    assert world.call("GET", name, "/api/tables", key).json() == {"items": []}

    created = world.call("POST", name, "/api/tables", key, json=ORDERS)
    assert created.status_code == 201, created.text
    columns = {c["name"]: c["type"] for c in created.json()["columns"]}
    assert columns == {
        "id": "integer",
        "customer": "string",
        "note": "text",
        "quantity": "integer",
        "price": "number",
        "paid": "boolean",
        "placed_at": "datetime",
    }
    again = world.call("POST", name, "/api/tables", key, json=ORDERS)
    assert again.status_code == 409

    one = world.call(
        "POST",
        name,
        "/api/tables/orders/rows",
        key,
        json={
            "customer": "ann",
            "quantity": 3,
            "price": 9.5,
            "paid": True,
            "placed_at": "2026-01-02T10:00:00+01:00",
            "note": "ring twice",
        },
    )
    assert one.status_code == 201, one.text
    assert one.json() == {
        "id": 1,
        "customer": "ann",
        "note": "ring twice",
        "quantity": 3,
        "price": 9.5,
        "paid": True,
        "placed_at": "2026-01-02T09:00:00Z",
    }
    rows = [
        {"customer": f"c{i}", "quantity": i, "price": i * 1.25, "paid": i % 2 == 0}
        for i in range(1, 21)
    ]
    bulk = world.call("POST", name, "/api/tables/orders/rows", key, json=rows)
    assert bulk.status_code == 201, bulk.text
    assert [r["id"] for r in bulk.json()["items"]] == list(range(2, 22))

    def rows_of(**params: Any) -> dict[str, Any]:
        response = world.call("GET", name, "/api/tables/orders/rows", key, params=params)
        assert response.status_code == 200, response.text
        return response.json()

    page = rows_of(filter=["quantity:ge:5", "paid:eq:true"], sort="-quantity", limit=3)
    assert page["total"] == 8  # 6, 8, ..., 20
    assert [r["quantity"] for r in page["items"]] == [20, 18, 16]
    second = rows_of(filter=["quantity:ge:5", "paid:eq:true"], sort="-quantity", limit=3, offset=3)
    assert [r["quantity"] for r in second["items"]] == [14, 12, 10]
    assert rows_of(filter="customer:in:c1,c2,ann")["total"] == 3
    assert rows_of(filter="customer:like:c1%")["total"] == 11  # c1, c10..c19
    assert rows_of(filter="note:notnull")["total"] == 1
    assert rows_of(filter="placed_at:lt:2026-01-02T09:30:00Z")["items"][0]["customer"] == "ann"
    assert [r["id"] for r in rows_of(sort="paid,-id", limit=2)["items"]] == [20, 18]
    bad = world.call("GET", name, "/api/tables/orders/rows", key, params={"filter": "price:gt:x"})
    assert bad.status_code == 422
    assert bad.headers["content-type"] == "application/problem+json"
    unknown = world.call(
        "GET", name, "/api/tables/orders/rows", key, params={"sort": "nope; drop table orders"}
    )
    assert unknown.status_code == 422

    assert world.call("GET", name, "/api/tables/orders/rows/1", key).json()["customer"] == "ann"
    patched = world.call(
        "PATCH", name, "/api/tables/orders/rows/1", key, json={"paid": False, "note": None}
    )
    assert patched.status_code == 200, patched.text
    assert (patched.json()["paid"], patched.json()["note"]) == (False, None)
    assert world.status("PATCH", name, "/api/tables/orders/rows/1", key, json={"id": 5}) == 422
    assert (
        world.status("PATCH", name, "/api/tables/orders/rows/1", key, json={"customer": None})
        == 422
    )
    assert world.status("DELETE", name, "/api/tables/orders/rows/1", key) == 204
    assert world.status("GET", name, "/api/tables/orders/rows/1", key) == 404
    assert world.status("DELETE", name, "/api/tables/orders/rows/1", key) == 404
    assert rows_of()["total"] == 20

    document = world.call("GET", name, "/api/openapi.json", key).json()
    assert document["info"]["title"].startswith(name)
    assert document["servers"] == [{"url": f"http://{name}.localhost"}]
    assert document["x-dfe-tables"] == ["orders"]
    assert set(document["components"]["schemas"]["row_orders"]["properties"]) == set(columns)
    assert "/api/tables/{table}/rows" in document["paths"]

    assert world.status("DELETE", name, "/api/tables/orders", key) == 204
    assert world.status("GET", name, "/api/tables/orders/rows", key) == 404

    # Deleted in the Console: the web tier answers 404 within 5 seconds.
    world.delete(name)
    elapsed = wait_until(lambda: world.status("GET", name, "/api/tables", key) == 404, 5)
    assert elapsed < 5
    assert world.status("GET", name, "/api/health") == 404


def test_a_deprovisioned_instance_is_gone_within_5_seconds_at_the_default_poll(hosting):
    world = hosting(host_poll_seconds=2)
    name = unique("gone")
    world.launch(name)
    key = world.api_key(name)
    assert world.status("GET", name, "/api/tables", key) == 200  # now cached
    world.delete(name)
    elapsed = wait_until(lambda: world.status("GET", name, "/api/tables", key) == 404, 5)
    assert elapsed < 5
    page = world.call("GET", name, "/", headers={"Accept": "text/html"})
    assert page.status_code == 404
    assert page.headers["content-type"].startswith("text/html")
    assert f"There is no instance named {name}" in page.text


# States: provisioning, locked, maintenance; the Console unreachable


def test_states_answer_503_423_and_change_within_the_feed(hosting):
    world = hosting()
    name = unique("st")
    world.launch(name)
    key = world.api_key(name)
    assert world.status("GET", name, "/api/tables", key) == 200

    world.set_state(name, operational_state=OperationalState.LOCKED)
    world.wait_for_feed()
    locked = world.call("GET", name, "/api/tables", key)
    assert locked.status_code == 423
    assert locked.json()["code"] == "locked"
    assert "locked" in locked.json()["detail"]

    world.set_state(name, operational_state=OperationalState.MAINTENANCE)
    world.wait_for_feed()
    maintenance = world.call("GET", name, "/api/tables", key)
    assert maintenance.status_code == 503
    assert maintenance.headers["retry-after"] == "60"
    assert maintenance.json()["code"] == "maintenance"

    world.set_state(name, operational_state=OperationalState.ACTIVATED)
    world.wait_for_feed()
    assert world.status("GET", name, "/api/tables", key) == 200

    # Recorded but not provisioned yet (no job ran): 503 with Retry-After.
    waiting = unique("wait")
    with world.db.transaction(actor="test") as s:
        cluster = infrastructure.get_cluster(s, "local")
        servers = {
            kind: infrastructure.get_server(s, f"local-{kind}") for kind in ("db", "web", "app")
        }
        owner = identity.get_user(s, ANN)
        instances.create_instance_record(s, waiting, owner, cluster, servers)  # type: ignore[arg-type]
    provisioning = world.call("GET", waiting, "/api/tables", key)
    assert provisioning.status_code == 503
    assert provisioning.headers["retry-after"] == "5"
    assert provisioning.json()["code"] == "provisioning"

    assert world.status("GET", "nosuchinstance", "/api/tables", key) == 404
    assert world.web.get("http://localhost/health").json()["status"] == "ok"
    assert world.web.get("http://localhost/").status_code == 404
    assert world.web.get("http://a.b.localhost/").status_code == 404


def test_cached_instances_keep_serving_while_the_console_is_unreachable(hosting):
    world = hosting(host_cache_seconds=0.3)
    name = unique("up")
    world.launch(name)
    key = world.api_key(name)
    world.call("POST", name, "/api/tables", key, json={"name": "notes", "columns": []})
    assert world.status("GET", name, "/api/tables", key) == 200

    world.transport.down = True
    time.sleep(0.4)  # the cached config is past its time
    still = world.call("GET", name, "/api/tables", key)
    assert still.status_code == 200
    assert [t["name"] for t in still.json()["items"]] == ["notes"]
    never_seen = world.call("GET", "neverseen", "/api/tables", key)
    assert never_seen.status_code == 503
    assert never_seen.json()["code"] == "console_unreachable"

    world.transport.down = False
    world.delete(name)
    wait_until(lambda: world.status("GET", name, "/api/tables", key) == 404, 5)


# Isolation: keys, databases, files


def test_one_instance_key_reaches_nothing_of_another(hosting):
    world = hosting()
    mine, theirs = unique("mine"), unique("theirs")
    world.launch(mine, owner=ANN)
    world.launch(theirs, owner=BOB)
    my_key, their_key = world.api_key(mine), world.api_key(theirs)
    assert my_key != their_key
    world.call("POST", theirs, "/api/tables", their_key, json={"name": "secrets", "columns": []})
    world.call("PUT", theirs, "/api/files/private.txt", their_key, content=b"theirs only")

    for path in ("/api/tables", "/api/tables/secrets/rows", "/api/files/private.txt",
                 "/api/files", "/api/openapi.json"):  # fmt: skip
        refused = world.call("GET", theirs, path, my_key)
        assert refused.status_code == 401, path
        assert refused.json()["code"] == "invalid_api_key"
        assert refused.headers["www-authenticate"] == f'Bearer realm="{theirs}"'
        assert world.call("GET", theirs, path).json()["code"] == "missing_api_key"
    assert world.status("GET", theirs, "/api/tables", headers={"X-DFE-Api-Key": their_key}) == 200
    assert world.status("GET", theirs, "/api/tables", "dfei_" + "x" * 43) == 401

    # Its own key, its own database: the other's table is not there.
    assert world.call("GET", mine, "/api/tables", my_key).json() == {"items": []}
    assert world.status("GET", mine, "/api/tables/secrets/rows", my_key) == 404

    # Its own files only: no way out of its storage root.
    world.call("PUT", mine, "/api/files/mine.txt", my_key, content=b"mine")
    for path in (
        "../theirs/private.txt",
        f"../{theirs}/private.txt",
        "%2e%2e/%2e%2e/%2e%2e",
        "..%2F..%2Fetc%2Fpasswd",
        "a/../../x",
        "%2Fetc%2Fpasswd",
        ".private/config",
        ".hidden",
        "a//b",
    ):
        answer = world.call("GET", mine, f"/api/files/{path}", my_key)
        assert answer.status_code in (400, 404), (path, answer.status_code)
        assert b"theirs only" not in answer.content
        put = world.call("PUT", mine, f"/api/files/{path}", my_key, content=b"x")
        assert put.status_code in (400, 404, 405), (path, put.status_code)

    # A link planted in its storage (say, by a restored snapshot) is refused, not followed.
    config = world.tier.configs.cached(mine)
    their_config = world.tier.configs.cached(theirs)
    assert config is not None and their_config is not None
    root = Path(config.storage_root or "")
    os.symlink(Path(their_config.storage_root or ""), root / "link")
    os.symlink(Path(their_config.storage_root or "") / "private.txt", root / "file-link")
    for path in ("link/private.txt", "file-link", "link"):
        answer = world.call("GET", mine, f"/api/files/{path}", my_key)
        assert answer.status_code == 403, (path, answer.status_code)
        assert b"theirs only" not in answer.content
    assert world.status("PUT", mine, "/api/files/link/new.txt", my_key, content=b"x") == 403
    assert not (Path(their_config.storage_root or "") / "new.txt").exists()
    listing = world.call("GET", mine, "/api/files", my_key).json()
    assert [item["name"] for item in listing["items"]] == ["mine.txt"]  # no links, no dotfiles

    # Identifiers are checked and quoted: no SQL through names.
    for table in ("Orders", "1abc", "a-b", "x;drop", "sqlite_master", "a" * 64):
        spec = {"name": table, "columns": []}
        assert world.status("POST", mine, "/api/tables", my_key, json=spec) == 422
    reserved = {"name": "select", "columns": [{"name": "order", "type": "string"}]}
    assert world.status("POST", mine, "/api/tables", my_key, json=reserved) == 201
    row = world.call("POST", mine, "/api/tables/select/rows", my_key, json={"order": "it's"})
    assert row.json() == {"id": 1, "order": "it's"}
    assert world.status("POST", mine, "/api/tables/select/rows", my_key, json={"nope": 1}) == 422


def test_files_upload_list_download_replace_and_delete(hosting):
    world = hosting(host_max_upload_bytes=1000)
    name = unique("files")
    world.launch(name)
    key = world.api_key(name)
    assert world.call("GET", name, "/api/files", key).json() == {"path": "", "items": []}

    created = world.call("PUT", name, "/api/files/docs/2026/report.csv", key, content=b"a,b\n1,2\n")
    assert created.status_code == 201
    assert created.json() == {"path": "docs/2026/report.csv", "created": True}
    replaced = world.call("PUT", name, "/api/files/docs/2026/report.csv", key, content=b"a,b\n")
    assert (replaced.status_code, replaced.json()["created"]) == (200, False)
    download = world.call("GET", name, "/api/files/docs/2026/report.csv", key)
    assert download.status_code == 200
    assert download.content == b"a,b\n"
    assert download.headers["content-type"].startswith("text/csv")
    assert download.headers["content-security-policy"] == "sandbox"
    listing = world.call("GET", name, "/api/files/docs", key).json()
    assert listing["items"][0]["name"] == "2026"
    assert listing["items"][0]["type"] == "directory"
    inner = world.call("GET", name, "/api/files/docs/2026/", key).json()["items"]
    assert [(i["name"], i["type"], i["size"]) for i in inner] == [("report.csv", "file", 4)]

    too_big = world.call("PUT", name, "/api/files/big.bin", key, content=b"x" * 1001)
    assert too_big.status_code == 413

    def streamed() -> Iterator[bytes]:
        for _ in range(20):
            yield b"y" * 100

    chunked = world.call("PUT", name, "/api/files/chunked.bin", key, content=streamed())
    assert chunked.status_code == 413
    assert [i["name"] for i in world.call("GET", name, "/api/files", key).json()["items"]] == [
        "docs"
    ]  # nothing left behind, not even the partial upload

    assert world.status("PUT", name, "/api/files/docs", key, content=b"x") == 409
    assert world.status("DELETE", name, "/api/files/docs", key) == 409  # not empty
    assert world.status("DELETE", name, "/api/files/docs/2026/report.csv", key) == 204
    assert world.status("DELETE", name, "/api/files/docs/2026/report.csv", key) == 404
    assert world.status("DELETE", name, "/api/files/docs/2026", key) == 204
    assert world.status("GET", name, "/api/files/docs/2026", key) == 404


# Rate limits, request counts, process metrics


def limit_headers(response: httpx2.Response) -> dict[str, str]:
    return {
        name: response.headers[name]
        for name in (
            "ratelimit-limit",
            "ratelimit-remaining",
            "ratelimit-reset",
            "ratelimit-policy",
            "dfe-ratelimit-label",
        )
        if name in response.headers
    }


def test_a_limit_refuses_the_request_after_n_and_changes_reach_the_web_tier(hosting):
    world = hosting()
    name = unique("busy")
    world.launch(name)
    key = world.api_key(name)
    assert "ratelimit-limit" not in world.call("GET", name, "/api/tables", key).headers
    engine = world.tier.contexts[name].engine
    # 30-day windows (aligned to the epoch): no window ends while this test runs.
    limit = {"label": f"{name}-cap", "scope": "instance", "instance": name,
             "period": "30-days", "max_requests": 3}  # fmt: skip
    assert world.console.post("/api/v1/limits", json=limit).status_code == 201
    world.wait_for_feed()

    for remaining in (2, 1, 0):
        served = world.call("GET", name, "/api/tables", key)
        assert served.status_code == 200
        headers = limit_headers(served)
        assert headers["ratelimit-limit"] == "3"
        assert headers["ratelimit-remaining"] == str(remaining)
        assert headers["ratelimit-policy"] == f"3;w={30 * 86400}"
        assert headers["dfe-ratelimit-label"] == f"{name}-cap"
        assert 1 <= int(headers["ratelimit-reset"]) <= 30 * 86400
    refused = world.call("GET", name, "/api/tables", key)
    assert refused.status_code == 429
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["code"] == "rate_limited"
    assert f"'{name}-cap'" in refused.json()["detail"]
    assert refused.headers["retry-after"] == refused.headers["ratelimit-reset"]
    assert limit_headers(refused)["ratelimit-remaining"] == "0"
    # Every request for the instance counts, with a key or without.
    assert world.status("GET", name, "/api/tables") == 429

    # A bigger limit reaches the web tier through the change feed; the count goes on.
    patched = world.console.patch(f"/api/v1/limits/{name}-cap", json={"max_requests": 6})
    assert patched.status_code == 200
    world.wait_for_feed()
    assert world.status("GET", name, "/api/tables", key) == 200  # the 6th
    assert world.status("GET", name, "/api/tables", key) == 429  # the 7th
    # Only the limits changed: the instance's database connections were kept.
    assert world.tier.contexts[name].engine is engine

    # A reset starts the count again, in every process (a new generation of counters).
    reset = world.console.post(f"/api/v1/limits/{name}-cap/reset")
    assert reset.status_code == 200, reset.text
    assert [item["label"] for item in reset.json()["limits"]] == [f"{name}-cap"]
    world.wait_for_feed()
    served = world.call("GET", name, "/api/tables", key)
    assert served.status_code == 200
    assert limit_headers(served)["ratelimit-remaining"] == "5"

    # Switched off, it is not enforced; a cluster-wide limit applies to each instance.
    world.console.patch(f"/api/v1/limits/{name}-cap", json={"is_active": False})
    other = unique("calm")
    world.launch(other)
    cluster_limit = {"label": f"{name}-each", "scope": "cluster", "cluster": "local",
                     "period": "30-days", "max_requests": 1}  # fmt: skip
    assert world.console.post("/api/v1/limits", json=cluster_limit).status_code == 201
    world.wait_for_feed()
    for instance in (name, other):
        first = world.call("GET", instance, "/api/health")
        assert first.status_code == 200
        assert limit_headers(first)["dfe-ratelimit-label"] == f"{name}-each"
        assert world.status("GET", instance, "/api/health") == 429
    assert world.console.delete(f"/api/v1/limits/{name}-each").status_code == 204
    world.wait_for_feed()
    assert world.status("GET", other, "/api/health") == 200


def test_an_instance_app_key_is_accepted_and_limited_on_its_own(hosting):
    world = hosting()
    name = unique("keyed")
    world.launch(name)
    api_key = world.api_key(name)
    made = world.console.post(
        "/api/v1/keys", json={"owner_type": "instance", "owner": name, "label": "robot"}
    )
    assert made.status_code == 201, made.text
    client_id, secret = made.json()["client_id"], made.json()["client_secret"]
    world.wait_for_feed()  # a new key of the instance is in its config
    assert world.status("GET", name, "/api/tables", secret) == 200
    # Isolation: its key opens no other instance, and no other kind of key opens it.
    other = unique("other")
    world.launch(other)
    assert world.call("GET", other, "/api/tables", secret).json()["code"] == "invalid_api_key"
    user_key = world.console.post("/api/v1/keys", json={"owner_type": "user", "owner": ANN})
    assert world.status("GET", name, "/api/tables", user_key.json()["client_secret"]) == 401
    assert world.status("GET", name, "/api/tables", client_id) == 401  # the public half
    limit = {"label": f"{name}-robot", "scope": "key", "client_id": client_id,
             "period": "30-days", "max_requests": 1}  # fmt: skip
    assert world.console.post("/api/v1/limits", json=limit).status_code == 201
    world.wait_for_feed()
    assert world.status("GET", name, "/api/tables", secret) == 200
    refused = world.call("GET", name, "/api/tables", secret)
    assert refused.status_code == 429
    assert refused.headers["dfe-ratelimit-label"] == f"{name}-robot"
    # The runtime API key is not that key: its requests are not limited by it.
    served = world.call("GET", name, "/api/tables", api_key)
    assert served.status_code == 200
    assert "ratelimit-limit" not in served.headers
    # A revoked key is refused once the feed carries it.
    assert world.console.delete(f"/api/v1/keys/{client_id}").status_code == 204
    world.wait_for_feed()
    assert world.status("GET", name, "/api/tables", secret) == 401


def test_requests_are_counted_per_instance_per_day_and_owners_see_their_own(hosting):
    world = hosting()
    mine, theirs = unique("mine"), unique("theirs")
    world.launch(mine, owner=ANN)
    world.launch(theirs, owner=BOB)
    my_key = world.api_key(mine)
    for _ in range(4):
        world.call("GET", mine, "/api/tables", my_key)
    world.call("GET", theirs, "/api/health")
    assert world.web.portal is not None
    assert world.web.portal.call(world.tier.usage.flush) is True

    everything = world.console.get("/api/v1/metrics")
    assert everything.status_code == 200
    requests = {row["instance"]: row["requests"] for row in everything.json()["items"]}
    assert requests == {mine: 4, theirs: 1}
    world.call("GET", mine, "/api/tables", my_key)
    world.web.portal.call(world.tier.usage.flush)
    only_mine = world.console.get("/api/v1/metrics", params={"instance": mine}).json()["items"]
    assert [(row["instance"], row["requests"]) for row in only_mine] == [(mine, 5)]

    made = world.console.post("/api/v1/keys", json={"owner_type": "user", "owner": ANN})
    ann = AppKeyAuth(made.json()["client_id"], made.json()["client_secret"])
    seen = world.console.get("/api/v1/metrics", auth=ann)
    assert seen.status_code == 200
    assert {row["instance"] for row in seen.json()["items"]} == {mine}
    # Only web servers report requests; a user cannot.
    report = {"day": seen.json()["items"][0]["day"], "items": [{"instance_id": 1, "requests": 5}]}
    assert world.console.post("/api/v1/metrics/requests", json=report, auth=ann).status_code == 403


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "mysql"])
def test_gather_measures_each_database_and_its_files(hosting, kind):
    world = hosting()
    cluster = server_cluster(world, kind)
    name = unique("sized")
    world.launch(name, cluster=cluster)
    key = world.api_key(name)
    assert world.status("POST", name, "/api/tables", key, json=ORDERS) == 201
    rows = [{"customer": "x" * 200, "note": "y" * 2000} for _ in range(200)]
    assert world.status("POST", name, "/api/tables/orders/rows", key, json=rows) == 201
    assert world.status("PUT", name, "/api/files/a.bin", key, content=b"z" * 5000) == 201

    gathered = metrics_service.gather(world.db)
    assert gathered.failures == []
    rows_seen = world.console.get("/api/v1/metrics", params={"instance": name}).json()["items"]
    assert len(rows_seen) == 1
    assert rows_seen[0]["database_bytes"] > 0
    assert rows_seen[0]["storage_bytes"] == 5000


def test_process_metrics_are_for_loopback_or_the_token(hosting):
    world = hosting(metrics_token="a-metrics-token-for-tests")
    name = unique("seen")
    world.launch(name)
    world.call("GET", name, "/api/tables", world.api_key(name))
    # The test client is not on loopback: without the token there is nothing there.
    assert world.web.get("http://127.0.0.1/metrics").status_code == 404
    auth = {"Authorization": "Bearer a-metrics-token-for-tests"}
    text = world.web.get("http://127.0.0.1/metrics", headers=auth)
    assert text.status_code == 200
    assert text.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert 'route="/api/tables",method="GET",status="200"} 1' in text.text
    assert name not in text.text  # labels never name an instance
    # An instance's own /metrics is the instance's, not the web tier's.
    assert world.status("GET", name, "/metrics", headers=auth) == 404
    console = world.console.get("/metrics", headers=auth)
    assert console.status_code == 200
    assert 'dfe_instances{state="provisioned"}' in console.text
    assert 'dfe_jobs{status="succeeded"}' in console.text
    assert world.console.get("/metrics").status_code == 404
