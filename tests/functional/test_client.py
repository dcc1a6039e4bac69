"""The ops client against a real Console over real HTTP, on each database engine.

Each test sets DFE up (`run_setup`: the first administrator, the Console's and
the Dashboard's keys), serves the Console with uvicorn on a free loopback port
in a background thread, and drives it only through `dfe.client`.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2
import pytest
import uvicorn

from dfe.client import (
    ArchiveKind,
    AsyncConsoleClient,
    ConflictError,
    ConsoleClient,
    ConsoleError,
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
    PayloadTooLargeError,
    TooManyRequestsError,
    UnauthorizedError,
)
from dfe.config import Settings
from dfe.console.app import create_app
from dfe.db.session import Database
from dfe.enums import (
    LimitPeriod,
    LimitScope,
    MountType,
    OwnerType,
    ServerType,
    ServiceRole,
)
from dfe.schemas import (
    ClusterCreate,
    ClusterUpdate,
    KeyCreate,
    KeyPublic,
    KeyWithSecret,
    LimitCreate,
    LimitUpdate,
    MountCreate,
    MountUpdate,
    ServerCreate,
    ServerUpdate,
    ServiceUserCreate,
    ServiceUserUpdate,
    UserCreate,
    UserUpdate,
)
from dfe.services.setup import SetupResult, run_setup, write_key_files

PASSWORD = "a long enough password"
ADMIN = "admin@example.com"
MAX_LOGIN_FAILURES = 3
LOGIN_WINDOW = 900
MAX_BODY = 16_384


class Console:
    """A running Console and the keys `dfe setup` made for it."""

    def __init__(self, url: str, setup: SetupResult) -> None:
        self.url = url
        self.setup = setup
        self._clients: list[ConsoleClient] = []

    def key(self, owner: OwnerType) -> KeyWithSecret:
        return self.setup.keys[owner]

    def client(self, key: OwnerType | KeyWithSecret = OwnerType.CONSOLE) -> ConsoleClient:
        if isinstance(key, OwnerType):
            key = self.key(key)
        client = ConsoleClient(self.url, key.client_id, key.client_secret, retries=0)
        self._clients.append(client)
        return client

    def async_client(self, owner: OwnerType = OwnerType.CONSOLE) -> AsyncConsoleClient:
        key = self.key(owner)
        return AsyncConsoleClient(self.url, key.client_id, key.client_secret, retries=0)

    def close(self) -> None:
        for client in self._clients:
            client.close()


@pytest.fixture
def console(db: Database, tmp_path: Path) -> Iterator[Console]:
    with db.transaction(actor="test") as session:
        setup = run_setup(session, ServiceUserCreate(email=ADMIN, password=PASSWORD), force=False)
    settings = Settings(
        data_dir=tmp_path / "var",
        login_max_failures_per_account=MAX_LOGIN_FAILURES,
        login_failure_window_seconds=LOGIN_WINDOW,
        max_body_bytes=MAX_BODY,
    )
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    config = uvicorn.Config(
        create_app(settings, db),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        ws="none",
        lifespan="on",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive(), "the Console did not start"
        assert time.monotonic() < deadline, "the Console did not start in time"
        time.sleep(0.01)
    running = Console(f"http://127.0.0.1:{port}", setup)
    try:
        yield running
    finally:
        running.close()
        server.should_exit = True
        thread.join(timeout=20)
        listener.close()


def build_estate(admin: ConsoleClient) -> dict[str, Any]:
    mount = admin.create_mount(MountCreate(name="data", root_path="/srv/data"))
    servers = {
        kind: admin.create_server(
            ServerCreate(
                name=f"{kind.value}-1",
                server_type=kind,
                host=f"10.0.0.{index}",
                mount=mount.name if kind is ServerType.WEB else None,
                config={"driver": "sqlite", "path": "/srv/db"} if kind is ServerType.DB else {},
            )
        )
        for index, kind in enumerate(ServerType, start=1)
    }
    cluster = admin.create_cluster(ClusterCreate(name="eu-1", subdomain="EU.Example.com"))
    for server in servers.values():
        admin.assign_server(cluster.name, server.name)
    return {"mount": mount, "servers": servers, "cluster": cluster}


def test_health_and_readiness(console: Console) -> None:
    with console.client() as admin:
        assert admin.health().status == "ok"
        readiness = admin.ready()
        assert readiness.ready
        assert readiness.schema_revision


def test_build_an_estate(console: Console) -> None:
    admin = console.client()
    estate = build_estate(admin)
    mount, servers, cluster = estate["mount"], estate["servers"], estate["cluster"]
    assert mount.mount_type is MountType.LOCAL
    assert servers[ServerType.WEB].mount == "data"
    assert cluster.subdomain == "eu.example.com"
    assert cluster.servers == []

    in_cluster = admin.list_cluster_servers("eu-1")
    assert in_cluster.total == 3
    assert sorted(s.name for s in in_cluster.items) == ["app-1", "db-1", "web-1"]
    assert sorted(admin.get_cluster(cluster.id).servers) == ["app-1", "db-1", "web-1"]
    admin.assign_server("eu-1", "web-1")  # PUT is idempotent: a second time changes nothing
    assert admin.list_cluster_servers("eu-1").total == 3

    admin.unassign_server("eu-1", "app-1")
    assert sorted(admin.get_cluster("eu-1").servers) == ["db-1", "web-1"]
    admin.delete_server("app-1")
    with pytest.raises(NotFoundError):
        admin.get_server("app-1")

    changed = admin.update_cluster("eu-1", ClusterUpdate(max_instances=50))
    assert (changed.max_instances, changed.subdomain) == (50, "eu.example.com")
    web = admin.update_server("web-1", ServerUpdate(is_enabled=False, max_instances=10))
    assert (web.is_enabled, web.max_instances, web.host) == (False, 10, "10.0.0.2")
    assert admin.get_server(web.id).is_enabled is False
    assert admin.update_mount("data", MountUpdate(root_path="/srv/new")).root_path == "/srv/new"
    assert admin.get_mount(mount.id).root_path == "/srv/new"
    assert admin.list_servers(sort="-name").items[0].name == "web-1"
    assert admin.list_clusters(q="eu").total == 1

    with pytest.raises(ConflictError):
        admin.delete_mount("data")  # web-1 uses it


def test_limits_and_service_users(console: Console) -> None:
    admin = console.client()
    build_estate(admin)
    limit = admin.create_limit(
        LimitCreate(
            label="eu-hourly",
            scope=LimitScope.CLUSTER,
            cluster="eu-1",
            period=LimitPeriod.HOUR,
            max_requests=100,
        )
    )
    assert (limit.cluster, limit.period) == ("eu-1", LimitPeriod.HOUR)
    changed = admin.update_limit("eu-hourly", LimitUpdate(max_requests=500))
    assert (changed.max_requests, changed.period) == (500, LimitPeriod.HOUR)
    assert admin.get_limit(limit.id).max_requests == 500
    assert [x.label for x in admin.list_limits().items] == ["eu-hourly"]
    admin.delete_limit("eu-hourly")
    with pytest.raises(NotFoundError):
        admin.get_limit("eu-hourly")

    ops = admin.create_service_user(
        ServiceUserCreate(email="Ops@Example.com", password=PASSWORD, role=ServiceRole.OPERATOR)
    )
    assert ops.email == "ops@example.com"
    assert admin.get_service_user("ops@example.com").role is ServiceRole.OPERATOR
    assert {p.email for p in admin.list_service_users().items} == {ADMIN, "ops@example.com"}
    renamed = admin.update_service_user(ops.id, ServiceUserUpdate(first_name="Olga"))
    assert (renamed.first_name, renamed.role) == ("Olga", ServiceRole.OPERATOR)

    key = admin.create_key(
        KeyCreate(owner_type=OwnerType.SERVICE_USER, owner="ops@example.com", label="laptop")
    )
    with console.client(key) as operator:
        assert operator.list_clusters().total == 1
        with pytest.raises(ForbiddenError) as refused:
            operator.create_mount(MountCreate(name="m2", root_path="/srv/m2"))
    assert refused.value.code == "forbidden"

    admin.delete_service_user("ops@example.com")
    with pytest.raises(NotFoundError):
        admin.get_service_user(ops.id)
    with console.client(key) as operator, pytest.raises(UnauthorizedError) as gone:
        operator.list_clusters()
    assert gone.value.code == "unknown_key"


def test_register_log_in_and_act_for_the_user(console: Console) -> None:
    dashboard = console.client(OwnerType.DASHBOARD)
    user = dashboard.register_user(
        UserCreate(email="Ann+Shop@Example.com", password=PASSWORD, first_name="Ann")
    )
    assert (user.email, user.first_name, user.is_admin) == ("ann+shop@example.com", "Ann", False)
    with pytest.raises(ForbiddenError):
        dashboard.register_user(
            UserCreate(email="boss@example.com", password=PASSWORD, is_admin=True)
        )
    with pytest.raises(ForbiddenError):
        dashboard.list_users()
    with pytest.raises(ForbiddenError):
        dashboard.account()

    login = dashboard.login("ann+shop@example.com", PASSWORD, address="192.0.2.10")
    assert login.user.id == user.id
    assert login.expires_at > time.time()
    as_ann = dashboard.with_user_token(login.token)
    me = as_ann.account()
    assert (me.id, me.email) == (user.id, "ann+shop@example.com")
    instances = as_ann.list_instances()
    assert (instances.items, instances.total, instances.next_cursor) == ([], 0, None)
    assert as_ann.list_jobs().total == 0
    with pytest.raises(NotFoundError):
        as_ann.get_instance("someone-elses")
    with pytest.raises(ForbiddenError):
        as_ann.list_clusters()
    with pytest.raises(UnauthorizedError):
        dashboard.with_user_token(login.token[:-2] + "xx").account()

    admin = console.client()
    with pytest.raises(UnauthorizedError):  # the token is the Dashboard's to present
        admin.with_user_token(login.token).account()
    assert admin.get_user("ann+shop@example.com").last_login_at is not None
    assert admin.list_users(q="ann").total == 1
    updated = admin.update_user(user.id, UserUpdate(nickname="annie"))
    assert (updated.nickname, updated.first_name) == ("annie", "Ann")

    # A password change ends the tokens issued before it.
    admin.update_user(user.id, UserUpdate(password="a brand new password"))
    with pytest.raises(UnauthorizedError):
        as_ann.account()
    admin.delete_user("ann+shop@example.com")
    with pytest.raises(NotFoundError):
        admin.get_user(user.id)


def test_failed_logins_are_refused_then_throttled(console: Console) -> None:
    dashboard = console.client(OwnerType.DASHBOARD)
    dashboard.register_user(UserCreate(email="bob@example.com", password=PASSWORD))
    for _ in range(MAX_LOGIN_FAILURES):
        with pytest.raises(UnauthorizedError) as refused:
            dashboard.login("bob@example.com", "not the password")
        assert refused.value.code == "unauthorized"
    with pytest.raises(TooManyRequestsError) as throttled:
        dashboard.login("bob@example.com", PASSWORD)
    assert throttled.value.retry_after == LOGIN_WINDOW
    assert throttled.value.code == "too_many_requests"


def test_keys_create_rotate_revoke(console: Console) -> None:
    admin = console.client()
    admin.create_service_user(ServiceUserCreate(email="ops@example.com", password=PASSWORD))
    key = admin.create_key(
        KeyCreate(owner_type=OwnerType.SERVICE_USER, owner="ops@example.com", label="ci")
    )
    assert len(key.client_secret) >= 40
    # Each service user got a key of its own when made; this is one more.
    listed = admin.list_keys(owner_type=OwnerType.SERVICE_USER)
    assert listed.total == 3
    assert key.client_id in [k.client_id for k in listed.items]
    assert all(type(k) is KeyPublic for k in listed.items)
    assert admin.list_keys(owner_type=OwnerType.CONSOLE).total == 1
    assert admin.list_keys().total == 5  # and the Console's and the Dashboard's
    shown = admin.get_key(key.client_id)
    assert type(shown) is KeyPublic
    assert (shown.label, shown.owner_type) == ("ci", OwnerType.SERVICE_USER)

    with console.client(key) as first:
        assert first.list_mounts().total == 0

    successor = admin.rotate_key(key.client_id, grace_hours=1)
    assert successor.client_id != key.client_id
    assert successor.client_secret != key.client_secret
    assert admin.get_key(key.client_id).replaced_by_id == successor.id
    with console.client(key) as old:
        old.list_mounts()  # still good: the successor is unused
    with console.client(successor) as new:
        new.list_mounts()
    with console.client(key) as old, pytest.raises(UnauthorizedError) as ended:
        old.list_mounts()
    assert ended.value.code == "unknown_key"

    admin.revoke_key(successor.client_id)
    with console.client(successor) as revoked, pytest.raises(UnauthorizedError) as caught:
        revoked.list_mounts()
    assert caught.value.code == "unknown_key"
    assert caught.value.status == 401
    with pytest.raises(NotFoundError):
        admin.get_key(successor.client_id)

    console_key = console.key(OwnerType.CONSOLE)
    with (
        ConsoleClient(console.url, console_key.client_id, "not-the-secret-" * 3) as forger,
        pytest.raises(UnauthorizedError) as forged,
    ):
        forger.list_mounts()
    assert forged.value.code == "bad_signature"


def test_delete_and_restore_a_cluster_and_read_the_audit_log(console: Console) -> None:
    admin = console.client()
    started = datetime.now(UTC) - timedelta(minutes=5)
    cluster = build_estate(admin)["cluster"]
    admin.delete_cluster("eu-1")
    with pytest.raises(NotFoundError):
        admin.get_cluster("eu-1")

    archived = admin.list_archived(ArchiveKind.CLUSTERS)
    assert (archived.total, [a.name for a in archived.items]) == (1, ["eu-1"])
    shown = admin.get_archived("clusters", "eu-1")
    assert (shown.kind, shown.id, shown.name) == ("cluster", cluster.id, "eu-1")
    assert shown.row["subdomain"] == "eu.example.com"
    assert admin.list_archived("servers").total == 0

    restored = admin.restore_archived(ArchiveKind.CLUSTERS, "eu-1")
    assert (restored.id, restored.name) == (cluster.id, "eu-1")
    back = admin.get_cluster("eu-1")
    assert back.id == cluster.id
    assert sorted(back.servers) == ["app-1", "db-1", "web-1"]
    assert admin.list_archived(ArchiveKind.CLUSTERS).total == 0
    with pytest.raises(NotFoundError):
        admin.restore_archived("clusters", "eu-1")

    deleted = admin.list_audit(action="cluster.delete")
    assert deleted.total == 1
    [entry] = deleted.items
    assert (entry.target_type, entry.target_name, entry.target_id) == (
        "cluster",
        "eu-1",
        cluster.id,
    )
    assert entry.before is not None
    assert entry.before["name"] == "eu-1"
    assert console.key(OwnerType.CONSOLE).client_id in entry.actor

    about_eu = admin.list_audit(target="eu-1")
    assert {"cluster.create", "cluster.delete"} <= {e.action for e in about_eu.items}
    everything = admin.list_audit(since=started)
    assert everything.total >= 8
    assert admin.list_audit(until=started).total == 0
    assert len(list(admin.iterate(admin.list_audit, limit=3))) == everything.total
    newest_first = [e.at for e in everything.items]
    assert newest_first == sorted(newest_first, reverse=True)


def test_paginate_through_next_cursor(console: Console) -> None:
    admin = console.client()
    names = [f"mnt-{i}" for i in range(7)]
    for name in reversed(names):
        admin.create_mount(MountCreate(name=name, root_path=f"/srv/{name}"))

    seen, cursor, pages = [], None, 0
    while True:
        page = admin.list_mounts(limit=3, cursor=cursor)
        assert page.total == 7
        seen += [m.name for m in page.items]
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == names
    assert pages == 3
    assert [m.name for m in admin.iterate(admin.list_mounts, limit=3)] == names
    assert [m.name for m in admin.list_mounts(sort="-name", limit=2).items] == ["mnt-6", "mnt-5"]
    assert [m.name for m in admin.list_mounts(q="MNT-4").items] == ["mnt-4"]


def test_typed_errors(console: Console) -> None:
    admin = console.client()
    admin.create_mount(MountCreate(name="data", root_path="/srv/data"))

    with pytest.raises(NotFoundError) as missing:
        admin.get_mount("nope")
    assert missing.value.code == "not_found"
    assert "nope" in missing.value.detail
    assert missing.value.problem["instance"] == "/api/v1/mounts/nope"
    assert missing.value.request_id
    for odd in ("..", "a/b", "x?y=1", "%41"):  # each stays one path segment, and signed as sent
        with pytest.raises(NotFoundError):
            admin.get_mount(odd)

    with pytest.raises(ConflictError) as duplicate:
        admin.create_mount(MountCreate(name="data", root_path="/srv/other"))
    assert duplicate.value.status == 409

    unchecked = MountCreate.model_construct(
        name="Not A Name!", mount_type=MountType.LOCAL, root_path="relative", config={}
    )
    with pytest.raises(InvalidInputError) as invalid:
        admin.create_mount(unchecked)
    assert {e.field for e in invalid.value.errors} == {"name", "root_path"}
    assert all(e.location[0] == "body" for e in invalid.value.errors)

    with pytest.raises(InvalidInputError) as bad_limit:
        admin.list_mounts(limit=0)
    assert [e.location for e in bad_limit.value.errors] == [("query", "limit")]
    with pytest.raises(InvalidInputError):
        admin.list_mounts(sort="no_such_field")
    with pytest.raises(InvalidInputError):
        admin.list_mounts(cursor="not-a-cursor")

    with pytest.raises(PayloadTooLargeError) as too_large:
        admin.create_mount(
            MountCreate(name="big", root_path="/srv/big", config={"blob": "x" * MAX_BODY})
        )
    assert too_large.value.status == 413

    with console.client(OwnerType.DASHBOARD) as dashboard, pytest.raises(ForbiddenError) as no:
        dashboard.list_mounts()
    assert no.value.status == 403

    with (
        ConsoleClient(console.url, "dfe_nobody", "whatever-secret-value") as stranger,
        pytest.raises(UnauthorizedError) as unknown,
    ):
        stranger.list_mounts()
    assert unknown.value.code == "unknown_key"
    assert isinstance(unknown.value, ConsoleError)


class DropFirstAnswer(httpx2.BaseTransport):
    """Delivers the first request to the Console, then loses its answer (a reset
    connection): the Console has seen, and spent, that request's nonce."""

    def __init__(self) -> None:
        self.inner = httpx2.HTTPTransport()
        self.sent: list[httpx2.Request] = []

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        self.sent.append(request)
        response = self.inner.handle_request(request)
        if len(self.sent) == 1:
            response.read()
            response.close()
            raise httpx2.ReadError("connection reset by peer", request=request)
        return response

    def close(self) -> None:
        self.inner.close()


def test_a_retry_is_signed_anew_and_not_refused_as_a_replay(console: Console) -> None:
    key = console.key(OwnerType.CONSOLE)
    transport = DropFirstAnswer()
    slept: list[float] = []
    with ConsoleClient(
        console.url, key.client_id, key.client_secret, transport=transport, sleep=slept.append
    ) as admin:
        assert admin.list_mounts().total == 0
    assert len(transport.sent) == 2
    assert len(slept) == 1
    first, retry = transport.sent
    assert first.headers["signature-input"] != retry.headers["signature-input"]

    # The first request, sent again as it was, is a replay.
    with httpx2.Client() as raw:
        again = raw.send(
            raw.build_request(first.method, first.url, headers=first.headers, content=b"")
        )
    assert again.status_code == 401
    assert again.json()["code"] == "replayed"


def test_key_files_from_setup(console: Console, tmp_path: Path) -> None:
    console_file, dashboard_file = write_key_files(console.setup, tmp_path / "keys", console.url)
    with ConsoleClient.from_key_file(console_file) as admin:
        assert admin.create_mount(MountCreate(name="m1", root_path="/srv/m1")).name == "m1"
    with ConsoleClient.from_key_file(dashboard_file) as dashboard:
        dashboard.register_user(UserCreate(email="eve@example.com", password=PASSWORD))
        assert dashboard.login("eve@example.com", PASSWORD).user.email == "eve@example.com"


def test_the_async_client(console: Console) -> None:
    async def scenario() -> None:
        async with console.async_client() as admin:
            assert (await admin.health()).status == "ok"
            for name in ("m-a", "m-b", "m-c"):
                await admin.create_mount(MountCreate(name=name, root_path=f"/srv/{name}"))
            first = await admin.list_mounts(limit=2)
            assert (first.total, len(first.items)) == (3, 2)
            names = [m.name async for m in admin.iterate(admin.list_mounts, limit=2)]
            assert names == ["m-a", "m-b", "m-c"]
            together = await asyncio.gather(*(admin.get_mount(n) for n in names))
            assert [m.name for m in together] == names
            with pytest.raises(NotFoundError):
                await admin.get_mount("nope")
            with pytest.raises(ConflictError):
                await admin.create_mount(MountCreate(name="m-a", root_path="/srv/x"))

        async with console.async_client(OwnerType.DASHBOARD) as dashboard:
            user = await dashboard.register_user(
                UserCreate(email="cy@example.com", password=PASSWORD)
            )
            login = await dashboard.login("cy@example.com", PASSWORD)
            as_cy = dashboard.with_user_token(login.token)
            assert (await as_cy.account()).id == user.id
            assert (await as_cy.list_instances()).total == 0
            with pytest.raises(ForbiddenError):
                await as_cy.list_mounts()

    asyncio.run(scenario())
