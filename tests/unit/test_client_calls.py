"""dfe.client: every method builds the right request and reads the answer into its model.

The fake Console behind `httpx2.MockTransport` verifies each request's signature
with the server's own verifier, over the URL exactly as it went on the wire, so
every method is also checked to sign what it sends. Each method runs through
both clients, sync and async; a test ties the table to the Console's OpenAPI
document so a new route without a client method fails here.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx2
import pytest

from dfe.auth.signatures import MemoryNonceStore, verify_request
from dfe.client import (
    ArchiveKind,
    AsyncConsoleClient,
    ConsoleClient,
    Health,
    LoginResponse,
    Page,
    Readiness,
)
from dfe.enums import JobKind, JobStatus, LimitPeriod, LimitScope, OwnerType, ServerType
from dfe.schemas import (
    ArchivedPublic,
    AuditPublic,
    ClusterCreate,
    ClusterPublic,
    ClusterUpdate,
    ImportRequest,
    InstanceApiKey,
    InstanceChanges,
    InstanceConfig,
    InstanceCreate,
    InstanceLaunched,
    InstancePublic,
    JobPublic,
    KeyCreate,
    KeyPublic,
    KeyWithSecret,
    LimitCreate,
    LimitPublic,
    LimitsReset,
    LimitUpdate,
    MetricsPage,
    MountCreate,
    MountPublic,
    MountUpdate,
    MoveRequest,
    PasswordResetAccepted,
    RequestCount,
    RequestCounts,
    ServerCreate,
    ServerPublic,
    ServerUpdate,
    ServiceUserCreate,
    ServiceUserPublic,
    ServiceUserUpdate,
    SnapshotJob,
    SnapshotLink,
    SnapshotPublic,
    UserCreate,
    UserPublic,
    UserUpdate,
)

BASE = "https://console.example.com"
CLIENT_ID = "dfe_unit"
SECRET = "unit-secret-0123456789abcdefghijklmnopqrstuvw"
TOKEN = "ut_unit.token-value"
AT = "2026-01-02T03:04:05Z"

MOUNT = {
    "id": 1,
    "name": "m1",
    "mount_type": "local",
    "root_path": "/srv/m1",
    "config": {},
    "created_at": AT,
    "updated_at": AT,
}
SERVER = {
    "id": 2,
    "name": "web-1",
    "server_type": "web",
    "host": "10.0.0.1",
    "mount": "m1",
    "config": {"port": 80},
    "max_instances": None,
    "is_enabled": True,
    "created_at": AT,
    "updated_at": AT,
}
CLUSTER = {
    "id": 3,
    "name": "eu-1",
    "subdomain": "eu.example.com",
    "max_instances": 10,
    "owner_type": "service_user",
    "owner_id": None,
    "servers": ["web-1"],
    "created_at": AT,
    "updated_at": AT,
}
USER = {
    "id": 4,
    "email": "ann@example.com",
    "first_name": "Ann",
    "last_name": "Lee",
    "nickname": None,
    "is_admin": False,
    "is_active": True,
    "instance_limit": None,
    "last_login_at": None,
    "created_at": AT,
    "updated_at": AT,
}
SERVICE_USER = {
    "id": 5,
    "email": "ops@example.com",
    "first_name": "",
    "last_name": "",
    "role": "operator",
    "is_active": True,
    "last_login_at": AT,
    "created_at": AT,
    "updated_at": AT,
}
KEY = {
    "id": 6,
    "client_id": "dfe_abc",
    "owner_type": "user",
    "owner_id": 4,
    "label": "ci",
    "created_at": AT,
    "last_used_at": None,
    "expires_at": None,
    "replaced_by_id": None,
}
KEY_WITH_SECRET = {**KEY, "client_secret": "s3cret-shown-once"}
INSTANCE = {
    "id": 7,
    "name": "shop",
    "host": "shop.eu.example.com",
    "owner": "ann@example.com",
    "cluster": "eu-1",
    "db_server": "db-1",
    "web_server": "web-1",
    "app_server": "app-1",
    "provision_state": "provisioned",
    "ready_state": "ready",
    "operational_state": "activated",
    "state_changed_at": AT,
    "created_at": AT,
    "updated_at": AT,
    "archived": False,
}
INSTANCE_CONFIG = {
    "id": 7,
    "name": "shop",
    "host": "shop.eu.example.com",
    "cluster": "eu-1",
    "provision_state": "provisioned",
    "ready_state": "ready",
    "operational_state": "activated",
    "database_url": "postgresql+psycopg://u7:pw@db-1:5432/dfe_7",
    "storage_root": "/srv/m1/local/ab/abcd/shop",
    "api_key_sha256": "0" * 64,
    "app_keys": [{"client_id": "dfe_i7", "secret_sha256": "1" * 64, "expires_at": None}],
    "limits": [
        {
            "id": 3,
            "label": "shop-hourly",
            "scope": "instance",
            "period": "hour",
            "max_requests": 1000,
            "client_id": None,
            "generation": 2,
        }
    ],
    "read_only": False,
    "version": "1a2b3c4d5e6f7a8b",
    "changed_at": AT,
}
INSTANCE_CHANGES = {
    "cursor": "1767225600000000",
    "changes": [{"id": 7, "name": "shop", "changed_at": AT, "archived": True}],
    "reset": False,
}
SNAPSHOT = {
    "id": 3,
    "instance_name": "shop",
    "origin": "export",
    "size": 10240,
    "sha256": "ab" * 32,
    "format_version": 1,
    "source_engine": "postgresql",
    "created_at": AT,
    "expires_at": AT,
    "summary": {"tables": 1},
}
JOB = {
    "id": 42,
    "kind": "provision",
    "status": "running",
    "instance_name": "shop",
    "step": "database",
    "progress": 40,
    "message": None,
    "attempts": 1,
    "created_at": AT,
    "started_at": AT,
    "finished_at": None,
}
ARCHIVED = {
    "kind": "cluster",
    "archive_id": 8,
    "id": 3,
    "name": "eu-1",
    "archived_at": AT,
    "archived_by": "admin@example.com",
    "archive_batch": "b-1",
    "row": {"id": 3, "name": "eu-1"},
}
LIMIT = {
    "id": 9,
    "label": "api",
    "scope": "cluster",
    "cluster": "eu-1",
    "instance": None,
    "client_id": None,
    "period": "hour",
    "max_requests": 1000,
    "is_active": True,
    "created_at": AT,
    "updated_at": AT,
}
AUDIT = {
    "id": 10,
    "at": AT,
    "actor": "key dfe_x (console)",
    "action": "cluster.delete",
    "target_type": "cluster",
    "target_id": 3,
    "target_name": "eu-1",
    "before": {"name": "eu-1"},
    "after": None,
}
LOGIN = {"user": USER, "token": TOKEN, "expires_at": 1_767_225_600}


def page(item: dict[str, Any], next_cursor: str | None = None) -> dict[str, Any]:
    return {"items": [item], "total": 1, "next_cursor": next_cursor}


@dataclass
class Case:
    """One client method call and the request and answer it stands for."""

    method: str
    args: tuple[Any, ...]
    http_method: str
    path: str  # raw, after /api/v1, with its percent-encoding
    returns: type | None
    kwargs: dict[str, Any] = field(default_factory=dict)
    query: list[tuple[str, str]] = field(default_factory=list)
    body: Any = None  # the JSON document sent; None: no body
    status: int = 200
    answer: Any = None
    item: type | None = None  # for pages: the type of the items
    signed: bool = True

    @property
    def id(self) -> str:
        return f"{self.method}:{self.http_method} {self.path}"


CASES = [
    # Health
    Case("health", (), "GET", "/health", Health, answer={"status": "ok", "version": "0.1"},
         signed=False),
    Case("ready", (), "GET", "/ready", Readiness, answer={"status": "ready", "schema": "0002"},
         signed=False),
    # Mounts
    Case("list_mounts", (), "GET", "/mounts", Page, item=MountPublic,
         kwargs={"q": "m", "sort": "-name", "limit": 10, "cursor": "30"},
         query=[("q", "m"), ("sort", "-name"), ("limit", "10"), ("cursor", "30")],
         answer=page(MOUNT, "40")),
    Case("create_mount", (MountCreate(name="M1", root_path="/srv/m1"),), "POST", "/mounts",
         MountPublic,
         body={"name": "m1", "mount_type": "local", "root_path": "/srv/m1", "config": {}},
         status=201, answer=MOUNT),
    Case("get_mount", ("m1",), "GET", "/mounts/m1", MountPublic, answer=MOUNT),
    Case("update_mount", ("m1", MountUpdate(root_path="/srv/new")), "PATCH", "/mounts/m1",
         MountPublic, body={"root_path": "/srv/new"}, answer=MOUNT),
    Case("delete_mount", (1,), "DELETE", "/mounts/1", None, status=204),
    # Servers
    Case("list_servers", (), "GET", "/servers", Page, item=ServerPublic, answer=page(SERVER)),
    Case("create_server",
         (ServerCreate(name="web-1", server_type=ServerType.WEB, host="10.0.0.1", mount="m1"),),
         "POST", "/servers", ServerPublic,
         body={"name": "web-1", "server_type": "web", "host": "10.0.0.1", "mount": "m1",
               "config": {}, "max_instances": None, "is_enabled": True},
         status=201, answer=SERVER),
    Case("get_server", (2,), "GET", "/servers/2", ServerPublic, answer=SERVER),
    Case("update_server", ("web-1", ServerUpdate(max_instances=None, is_enabled=False)),
         "PATCH", "/servers/web-1", ServerPublic,
         body={"max_instances": None, "is_enabled": False}, answer=SERVER),
    Case("delete_server", ("web-1",), "DELETE", "/servers/web-1", None, status=204),
    # Clusters and their servers
    Case("list_clusters", (), "GET", "/clusters", Page, item=ClusterPublic,
         kwargs={"limit": 1}, query=[("limit", "1")], answer=page(CLUSTER)),
    Case("create_cluster", (ClusterCreate(name="eu-1", subdomain="EU.example.com."),), "POST",
         "/clusters", ClusterPublic,
         body={"name": "eu-1", "subdomain": "eu.example.com", "max_instances": None},
         status=201, answer=CLUSTER),
    Case("get_cluster", ("eu-1",), "GET", "/clusters/eu-1", ClusterPublic, answer=CLUSTER),
    Case("update_cluster", ("eu-1", ClusterUpdate(max_instances=10)), "PATCH",
         "/clusters/eu-1", ClusterPublic, body={"max_instances": 10}, answer=CLUSTER),
    Case("delete_cluster", ("eu-1",), "DELETE", "/clusters/eu-1", None, status=204),
    Case("list_cluster_servers", ("eu-1",), "GET", "/clusters/eu-1/servers", Page,
         item=ServerPublic, answer=page(SERVER)),
    Case("assign_server", ("eu-1", "web-1"), "PUT", "/clusters/eu-1/servers/web-1", None,
         status=204),
    Case("unassign_server", ("eu-1", 2), "DELETE", "/clusters/eu-1/servers/2", None,
         status=204),
    # Users, logins
    Case("register_user", (UserCreate(email="Ann@Example.com", password="a long enough pw"),),
         "POST", "/users", UserPublic,
         body={"email": "ann@example.com", "password": "a long enough pw", "first_name": "",
               "last_name": "", "nickname": None, "is_admin": False, "is_active": True},
         status=201, answer=USER),
    Case("list_users", (), "GET", "/users", Page, item=UserPublic, kwargs={"q": "ann lee"},
         query=[("q", "ann lee")], answer=page(USER)),
    Case("get_user", ("ann+x@example.com",), "GET", "/users/ann%2Bx%40example.com", UserPublic,
         answer=USER),
    Case("update_user", ("ann@example.com", UserUpdate(password="another long pw")), "PATCH",
         "/users/ann%40example.com", UserPublic, body={"password": "another long pw"},
         answer=USER),
    Case("delete_user", (4,), "DELETE", "/users/4", None, status=204),
    Case("login", ("ann@example.com", "a long enough pw"), "POST", "/logins", LoginResponse,
         kwargs={"address": "192.0.2.1"},
         body={"email": "ann@example.com", "password": "a long enough pw",
               "address": "192.0.2.1"},
         answer=LOGIN),
    Case("account", (), "GET", "/account", UserPublic, answer=USER),
    Case("request_password_reset", ("ann@example.com",), "POST", "/password-resets",
         PasswordResetAccepted, kwargs={"address": "192.0.2.7"},
         body={"email": "ann@example.com", "address": "192.0.2.7"}, status=202,
         answer={"detail": "If an account has this email, a link is on its way."}),
    Case("confirm_password_reset", ("reset-token-0123456789", "a new long password"), "POST",
         "/password-resets/confirm", UserPublic,
         body={"token": "reset-token-0123456789", "password": "a new long password"},
         answer=USER),
    Case("change_password", ("the old password", "a new long password"), "POST",
         "/account/password", LoginResponse,
         body={"current_password": "the old password", "password": "a new long password"},
         answer=LOGIN),
    # Service users
    Case("list_service_users", (), "GET", "/service-users", Page, item=ServiceUserPublic,
         answer=page(SERVICE_USER)),
    Case("create_service_user",
         (ServiceUserCreate(email="ops@example.com", password="a long enough pw",
                            role="operator"),),
         "POST", "/service-users", ServiceUserPublic,
         body={"email": "ops@example.com", "password": "a long enough pw", "first_name": "",
               "last_name": "", "role": "operator", "is_active": True},
         status=201, answer=SERVICE_USER),
    Case("get_service_user", ("ops@example.com",), "GET", "/service-users/ops%40example.com",
         ServiceUserPublic, answer=SERVICE_USER),
    Case("update_service_user", (5, ServiceUserUpdate(is_active=False)), "PATCH",
         "/service-users/5", ServiceUserPublic, body={"is_active": False},
         answer=SERVICE_USER),
    Case("delete_service_user", (5,), "DELETE", "/service-users/5", None, status=204),
    # App keys
    Case("list_keys", (), "GET", "/keys", Page, item=KeyPublic,
         kwargs={"owner_type": OwnerType.USER, "limit": 5},
         query=[("owner_type", "user"), ("limit", "5")], answer=page(KEY)),
    Case("create_key", (KeyCreate(owner_type=OwnerType.USER, owner="ann@example.com",
                                  label="ci"),),
         "POST", "/keys", KeyWithSecret,
         body={"owner_type": "user", "owner": "ann@example.com", "label": "ci",
               "expires_at": None},
         status=201, answer=KEY_WITH_SECRET),
    Case("get_key", ("dfe_abc",), "GET", "/keys/dfe_abc", KeyPublic, answer=KEY),
    Case("revoke_key", ("dfe_abc",), "DELETE", "/keys/dfe_abc", None, status=204),
    Case("rotate_key", ("dfe_abc",), "POST", "/keys/dfe_abc/rotate", KeyWithSecret,
         kwargs={"grace_hours": 2}, body={"grace_hours": 2}, status=201,
         answer=KEY_WITH_SECRET),
    Case("rotate_key", ("dfe_abc",), "POST", "/keys/dfe_abc/rotate", KeyWithSecret, body={},
         status=201, answer=KEY_WITH_SECRET),
    # Instances and jobs
    Case("list_instances", (), "GET", "/instances", Page, item=InstancePublic,
         kwargs={"sort": "-created_at"}, query=[("sort", "-created_at")],
         answer=page(INSTANCE)),
    Case("get_instance", ("shop",), "GET", "/instances/shop", InstancePublic, answer=INSTANCE),
    Case("get_instance_config", ("shop",), "GET", "/instances/shop/config", InstanceConfig,
         answer=INSTANCE_CONFIG),
    Case("list_instance_changes", ("1767225500000000",), "GET", "/instances/changes",
         InstanceChanges, query=[("since", "1767225500000000")], answer=INSTANCE_CHANGES),
    Case("list_instance_changes", (), "GET", "/instances/changes", InstanceChanges,
         answer={"cursor": "1767225600000000", "changes": [], "reset": False}),
    Case("get_instance_api_key", ("shop",), "GET", "/instances/shop/api-key", InstanceApiKey,
         answer={"name": "shop", "api_key": "dfei_example"}),
    Case("list_jobs", (), "GET", "/jobs", Page, item=JobPublic, kwargs={"q": "shop"},
         query=[("q", "shop")], answer=page(JOB)),
    Case("list_jobs", (), "GET", "/jobs", Page, item=JobPublic,
         kwargs={"status": JobStatus.FAILED, "kind": JobKind.PROVISION},
         query=[("status", "failed"), ("kind", "provision")], answer=page(JOB)),
    Case("get_job", (42,), "GET", "/jobs/42", JobPublic, answer=JOB),
    Case("launch_instance", (InstanceCreate(name="shop", cluster="eu-1"),), "POST", "/instances",
         InstanceLaunched, body={"name": "shop", "cluster": "eu-1", "owner": None}, status=202,
         answer={"instance": INSTANCE, "job": JOB}),
    Case("delete_instance", ("shop",), "DELETE", "/instances/shop", InstanceLaunched,
         status=202, answer={"instance": INSTANCE, "job": JOB}),
    # Snapshots
    Case("export_instance", ("shop",), "POST", "/instances/shop/exports", SnapshotJob,
         status=202, answer={"job": JOB}),
    Case("import_snapshot", ("shop", ImportRequest(snapshot_id=3)), "POST",
         "/instances/shop/imports", SnapshotJob, body={"snapshot_id": 3, "cluster": None},
         status=202, answer={"job": JOB}),
    Case("upload_snapshot", ("shop", b'{"tar": 1}', "eu-1"), "POST",
         "/instances/shop/imports/archive", SnapshotJob, query=[("cluster", "eu-1")],
         body={"tar": 1}, status=202, answer={"job": JOB}),
    Case("move_instance", ("shop", MoveRequest(db_server="db-2")), "POST",
         "/instances/shop/moves", SnapshotJob, body={"db_server": "db-2"}, status=202,
         answer={"job": JOB}),
    Case("list_snapshots", (), "GET", "/snapshots", Page, item=SnapshotPublic,
         answer=page(SNAPSHOT)),
    Case("get_snapshot", (3,), "GET", "/snapshots/3", SnapshotPublic, answer=SNAPSHOT),
    Case("delete_snapshot", (3,), "DELETE", "/snapshots/3", None, status=204),
    Case("snapshot_link", (3,), "POST", "/snapshots/3/links", SnapshotLink,
         answer={"url": "/snapshots/3/download?expires=9&sig=ab", "expires": 9,
                 "signature": "ab"}),
    Case("download_snapshot", (3, 9, "ab"), "GET", "/snapshots/3/download", bytes,
         query=[("expires", "9"), ("sig", "ab")], answer={"tar": "bytes"}),
    # The archive
    Case("list_archived", ("clusters",), "GET", "/archive/clusters", Page, item=ArchivedPublic,
         kwargs={"q": "eu", "limit": 2}, query=[("q", "eu"), ("limit", "2")],
         answer=page(ARCHIVED)),
    Case("list_archived", (ArchiveKind.SERVERS,), "GET", "/archive/servers", Page,
         item=ArchivedPublic, answer=page(ARCHIVED)),
    Case("get_archived", ("clusters", "eu-1"), "GET", "/archive/clusters/eu-1", ArchivedPublic,
         answer=ARCHIVED),
    Case("restore_archived", (ArchiveKind.INSTANCES, 7), "POST", "/archive/instances/7/restore",
         ArchivedPublic, answer=ARCHIVED),
    # Limits
    Case("list_limits", (), "GET", "/limits", Page, item=LimitPublic, answer=page(LIMIT)),
    Case("create_limit",
         (LimitCreate(label="api", scope=LimitScope.CLUSTER, cluster="eu-1",
                      period=LimitPeriod.HOUR, max_requests=1000),),
         "POST", "/limits", LimitPublic,
         body={"label": "api", "scope": "cluster", "cluster": "eu-1", "instance": None,
               "client_id": None, "period": "hour", "max_requests": 1000, "is_active": True},
         status=201, answer=LIMIT),
    Case("get_limit", ("api",), "GET", "/limits/api", LimitPublic, answer=LIMIT),
    Case("update_limit", ("api", LimitUpdate(period=LimitPeriod.SEVEN_DAYS)), "PATCH",
         "/limits/api", LimitPublic, body={"period": "7-days"}, answer=LIMIT),
    Case("delete_limit", ("api",), "DELETE", "/limits/api", None, status=204),
    Case("reset_limit", ("api",), "POST", "/limits/api/reset", LimitsReset,
         answer={"limits": [LIMIT]}),
    # Usage metrics
    Case("list_metrics", (), "GET", "/metrics", MetricsPage,
         kwargs={"instance": "shop", "since": date(2026, 1, 1), "until": date(2026, 1, 31)},
         query=[("instance", "shop"), ("since", "2026-01-01"), ("until", "2026-01-31")],
         answer={"items": [{"instance": "shop", "instance_id": 7, "day": "2026-01-02",
                            "requests": 12, "database_bytes": 4096, "storage_bytes": None}]}),
    Case("report_requests",
         (RequestCounts(day=date(2026, 1, 2), items=[RequestCount(instance_id=7, requests=3)]),),
         "POST", "/metrics/requests", None,
         body={"day": "2026-01-02", "items": [{"instance_id": 7, "requests": 3}]}, status=204),
    # The audit log
    Case("list_audit", (), "GET", "/audit", Page, item=AuditPublic,
         kwargs={"actor": "admin", "target": "eu-1", "action": "cluster.delete",
                 "since": datetime(2026, 1, 1, tzinfo=UTC),
                 "until": datetime(2026, 1, 2, 12, 30, tzinfo=UTC), "limit": 20},
         query=[("actor", "admin"), ("target", "eu-1"), ("action", "cluster.delete"),
                ("since", "2026-01-01T00:00:00+00:00"), ("until", "2026-01-02T12:30:00+00:00"),
                ("limit", "20")],
         answer=page(AUDIT)),
]  # fmt: skip

NOT_ROUTES = {"call", "close", "aclose", "from_key_file", "iterate", "with_user_token"}


def wire_url(request: httpx2.Request) -> str:
    """The URL as the request line and Host header carry it."""
    url = request.url
    return f"{url.scheme}://{url.netloc.decode()}{url.raw_path.decode()}"


class FakeConsole:
    """Checks each request's signature as the Console does, records it, and answers."""

    def __init__(self, answer: Callable[[httpx2.Request], httpx2.Response]) -> None:
        self.answer = answer
        self.nonces = MemoryNonceStore()
        self.requests: list[httpx2.Request] = []
        self.signed: list[bool] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        is_signed = "signature" in request.headers
        if is_signed:
            verify_request(
                request.method,
                wire_url(request),
                request.headers,
                request.content,
                resolve_secret={CLIENT_ID: SECRET}.get,
                nonces=self.nonces,
            )
        self.signed.append(is_signed)
        return self.answer(request)


def answering(case: Case) -> FakeConsole:
    def answer(_request: httpx2.Request) -> httpx2.Response:
        if case.answer is None:
            return httpx2.Response(case.status)
        return httpx2.Response(case.status, json=case.answer)

    return FakeConsole(answer)


def sync_client(console: FakeConsole, **options: Any) -> ConsoleClient:
    return ConsoleClient(
        BASE, CLIENT_ID, SECRET, transport=httpx2.MockTransport(console), **options
    )


def async_client(console: FakeConsole, **options: Any) -> AsyncConsoleClient:
    return AsyncConsoleClient(
        BASE, CLIENT_ID, SECRET, transport=httpx2.MockTransport(console), **options
    )


def run_sync(case: Case, console: FakeConsole) -> Any:
    with sync_client(console) as client:
        return getattr(client, case.method)(*case.args, **case.kwargs)


def run_async(case: Case, console: FakeConsole) -> Any:
    async def go() -> Any:
        async with async_client(console) as client:
            return await getattr(client, case.method)(*case.args, **case.kwargs)

    return asyncio.run(go())


def check(case: Case, console: FakeConsole, result: Any) -> None:
    [request] = console.requests
    assert request.method == case.http_method
    assert request.url.scheme == "https"
    assert request.url.host == "console.example.com"
    assert request.url.raw_path.decode().split("?")[0] == "/api/v1" + case.path
    assert list(request.url.params.multi_items()) == case.query
    if case.body is None:
        assert request.content == b""
        assert "content-type" not in request.headers
    else:
        assert request.headers["content-type"] == "application/json"
        assert json.loads(request.content) == case.body
    assert console.signed == [case.signed]
    assert "dfe-user-token" not in request.headers
    if case.returns is None:
        assert result is None
    else:
        assert isinstance(result, case.returns)
    if case.item is not None:
        assert isinstance(result, Page)
        assert [type(item) for item in result.items] == [case.item]
        assert result.total == 1
        assert result.next_cursor == case.answer["next_cursor"]
        assert result.items[0].model_dump(mode="json") == _normalized(case.answer["items"][0])
    elif case.returns not in (None, Health, Readiness, LoginResponse, bytes):
        assert result.model_dump(mode="json") == _normalized(case.answer)


def _normalized(document: dict[str, Any]) -> dict[str, Any]:
    """The sample as pydantic writes it back (timestamps as ...Z)."""
    return json.loads(json.dumps(document))


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_sync_method(case: Case) -> None:
    console = answering(case)
    check(case, console, run_sync(case, console))


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_async_method(case: Case) -> None:
    console = answering(case)
    check(case, console, run_async(case, console))


def test_special_answers_are_read() -> None:
    console = answering(next(c for c in CASES if c.method == "login"))
    with sync_client(console) as client:
        login = client.login("ann@example.com", "a long enough pw")
    assert login.token == TOKEN
    assert login.expires_at == 1_767_225_600
    assert login.user.email == "ann@example.com"
    assert TOKEN not in repr(login)
    assert json.loads(console.requests[0].content) == {
        "email": "ann@example.com",
        "password": "a long enough pw",
    }


def test_readiness_503_is_an_answer_not_an_error() -> None:
    calls: list[float] = []
    console = FakeConsole(
        lambda _r: httpx2.Response(
            503, json={"status": "unavailable", "reason": "OperationalError"}
        )
    )
    with sync_client(console, sleep=calls.append) as client:
        readiness = client.ready()
    assert not readiness.ready
    assert readiness.reason == "OperationalError"
    assert len(console.requests) == 1
    assert calls == []
    ready = Readiness.model_validate({"status": "ready", "schema": "0002"})
    assert ready.ready
    assert ready.schema_revision == "0002"


def test_user_token_is_sent_and_signed() -> None:
    console = answering(next(c for c in CASES if c.method == "account"))
    with sync_client(console) as dashboard:
        as_user = dashboard.with_user_token(TOKEN)
        assert as_user.account().email == "ann@example.com"
        assert not dashboard.acting_for_user
        assert as_user.acting_for_user
        dashboard.account()
    with_token, without = console.requests
    assert with_token.headers["dfe-user-token"] == TOKEN
    assert '"dfe-user-token"' in with_token.headers["signature-input"]
    assert "dfe-user-token" not in without.headers
    assert '"dfe-user-token"' not in without.headers["signature-input"]


def test_user_token_in_the_constructor_and_async() -> None:
    console = answering(next(c for c in CASES if c.method == "account"))

    async def go() -> None:
        async with async_client(console) as dashboard:
            await dashboard.with_user_token(TOKEN).account()
        async with async_client(console, user_token=TOKEN) as as_user:
            await as_user.account()

    asyncio.run(go())
    assert [r.headers.get("dfe-user-token") for r in console.requests] == [TOKEN, TOKEN]


def test_a_derived_client_shares_and_does_not_close_the_connections() -> None:
    console = answering(next(c for c in CASES if c.method == "account"))
    client = sync_client(console)
    with client.with_user_token(TOKEN) as as_user:
        as_user.account()
    client.account()  # still open
    client.close()
    with pytest.raises(RuntimeError):
        as_user.account()


def test_base_url_with_or_without_the_api_prefix() -> None:
    console = answering(next(c for c in CASES if c.method == "get_mount"))
    for base in (BASE, BASE + "/", BASE + "/api/v1", BASE + "/api/v1/"):
        with ConsoleClient(
            base, CLIENT_ID, SECRET, transport=httpx2.MockTransport(console)
        ) as client:
            assert client.base_url == BASE + "/api/v1"
            client.get_mount("m1")
    assert {r.url.raw_path for r in console.requests} == {b"/api/v1/mounts/m1"}
    with pytest.raises(ValueError, match="http"):
        ConsoleClient("console.example.com", CLIENT_ID, SECRET)


def test_a_console_behind_a_path_prefix_and_a_port() -> None:
    console = answering(next(c for c in CASES if c.method == "get_mount"))
    with ConsoleClient(
        "http://Console.Example.com:8080/dfe",
        CLIENT_ID,
        SECRET,
        transport=httpx2.MockTransport(console),
    ) as client:
        client.get_mount("m1")
    [request] = console.requests
    assert wire_url(request) == "http://console.example.com:8080/dfe/api/v1/mounts/m1"


def test_names_with_reserved_characters_stay_one_segment() -> None:
    console = answering(next(c for c in CASES if c.method == "get_mount"))
    with sync_client(console) as client:
        client.get_mount("a/b c?d#e%f")
        client.get_mount("..")
        client.get_mount(".")
    assert [r.url.raw_path for r in console.requests] == [
        b"/api/v1/mounts/a%2Fb%20c%3Fd%23e%25f",
        b"/api/v1/mounts/%2E%2E",
        b"/api/v1/mounts/%2E",
    ]


def pages_of(
    names: list[str], size: int, sample: dict[str, Any] = MOUNT
) -> Callable[[httpx2.Request], httpx2.Response]:
    def answer(request: httpx2.Request) -> httpx2.Response:
        start = int(request.url.params.get("cursor", "0"))
        chunk = names[start : start + size]
        following = start + len(chunk)
        return httpx2.Response(
            200,
            json={
                "items": [{**sample, "id": i + 1, "name": n} for i, n in enumerate(chunk)],
                "total": len(names),
                "next_cursor": str(following) if following < len(names) else None,
            },
        )

    return answer


def test_iterate_follows_next_cursor() -> None:
    names = [f"m{i}" for i in range(7)]
    console = FakeConsole(pages_of(names, 3))
    with sync_client(console) as client:
        assert [m.name for m in client.iterate(client.list_mounts, limit=3, q="m")] == names
    assert [r.url.params.get("cursor") for r in console.requests] == [None, "3", "6"]
    assert {r.url.params["limit"] for r in console.requests} == {"3"}
    assert {r.url.params["q"] for r in console.requests} == {"m"}


def test_iterate_async_and_with_positional_arguments() -> None:
    names = [f"m{i}" for i in range(5)]
    console = FakeConsole(pages_of(names, 2, ARCHIVED))

    async def go() -> list[str]:
        async with async_client(console) as client:
            return [a.name async for a in client.iterate(client.list_archived, "clusters")]

    assert asyncio.run(go()) == names
    assert [r.url.raw_path.decode().split("?")[0] for r in console.requests] == [
        "/api/v1/archive/clusters"
    ] * 3


def test_iterate_stops_on_a_cursor_that_does_not_move() -> None:
    console = FakeConsole(lambda _r: httpx2.Response(200, json=page(MOUNT, "same")))
    with sync_client(console) as client:
        assert len(list(client.iterate(client.list_mounts, cursor="same"))) == 1


def test_bad_archive_kind_is_refused_before_sending() -> None:
    console = answering(CASES[0])
    with sync_client(console) as client, pytest.raises(ValueError, match=r"kind|ArchiveKind"):
        client.list_archived("users")
    assert console.requests == []


def test_the_table_covers_every_client_method() -> None:
    public = {
        name
        for name, member in inspect.getmembers(ConsoleClient, inspect.isfunction)
        if not name.startswith("_") and name not in NOT_ROUTES
    }
    assert public == {case.method for case in CASES}


def test_both_clients_have_the_same_methods_and_signatures() -> None:
    def methods(cls: type) -> dict[str, inspect.Signature]:
        return {
            name: inspect.signature(member)
            for name, member in inspect.getmembers(cls, inspect.isfunction)
            if not name.startswith("_") and name not in {"close", "aclose"}
        }

    sync, asynchronous = methods(ConsoleClient), methods(AsyncConsoleClient)
    assert sync.keys() == asynchronous.keys()
    for name, signature in sync.items():
        other = asynchronous[name]
        assert list(signature.parameters) == list(other.parameters), name
        if name in NOT_ROUTES - {"call", "iterate"}:
            continue
        assert inspect.iscoroutinefunction(getattr(AsyncConsoleClient, name)) or (
            inspect.isasyncgenfunction(getattr(AsyncConsoleClient, name))
        ), name
        for parameter, declared in signature.parameters.items():
            if parameter not in {"self", "list_method"}:
                assert other.parameters[parameter].annotation == declared.annotation, name
        if name != "iterate":
            assert signature.return_annotation == other.return_annotation, name


def test_every_api_route_has_a_client_method(tmp_path: Path) -> None:
    from dfe.config import Settings
    from dfe.console.app import create_app
    from dfe.db.session import Database

    database = Database(f"sqlite:///{tmp_path / 'dfe.db'}")
    try:
        document = create_app(Settings(data_dir=tmp_path), database).openapi()
    finally:
        database.dispose()
    routes = [
        (method.upper(), path.removeprefix("/api/v1"))
        for path, operations in document["paths"].items()
        for method in operations
    ]
    assert len(routes) > 40
    missing = []
    for method, template in routes:
        pattern = re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$")
        if not any(c.http_method == method and pattern.match(c.path) for c in CASES):
            missing.append(f"{method} {template}")
    assert missing == []
    patterns = [
        (method, re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$"))
        for method, template in routes
    ]
    unknown = [
        case.id
        for case in CASES
        if not any(method == case.http_method and p.match(case.path) for method, p in patterns)
    ]
    assert unknown == []


def test_naive_times_are_refused_before_sending() -> None:
    """The Console keeps UTC; a time without a zone could mean any local time."""
    console = answering(next(c for c in CASES if c.method == "list_audit"))
    with sync_client(console) as client, pytest.raises(ValueError, match="no time zone"):
        client.list_audit(since=datetime(2026, 1, 1))
    assert console.requests == []
