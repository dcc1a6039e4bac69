"""Who may call what: every API route against every kind of caller, generated from the
app's own route table, so a route added without an action fails here."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient

from dfe.auth.permissions import Action, allowed
from dfe.auth.principals import Principal
from dfe.client import AppKeyAuth
from dfe.config import Settings
from dfe.console.api.deps import action_of
from dfe.console.app import create_app
from dfe.enums import OwnerType, ServerType, ServiceRole
from dfe.schemas import (
    ClusterCreate,
    MountCreate,
    ServerCreate,
    ServiceUserCreate,
    UserCreate,
)
from dfe.services import identity, infrastructure, instances, keys, setup

PASSWORD = "a-long-enough-password"
UNSIGNED_PATHS = {"/api/v1/health", "/api/v1/ready", "/api/v1/openapi.json", "/api/v1/docs"}


@dataclass
class Caller:
    name: str
    principal: Principal | None  # None: unsigned
    auth: AppKeyAuth | None


@pytest.fixture
def world(db, tmp_path):
    """An estate with one instance, and a key for every kind of caller."""
    callers: dict[str, Caller] = {}
    with db.transaction(actor="test") as s:
        result = setup.run_setup(
            s, ServiceUserCreate(email="root@example.com", password=PASSWORD), force=False
        )
        operator = identity.create_service_user(
            s,
            ServiceUserCreate(
                email="ops@example.com", password=PASSWORD, role=ServiceRole.OPERATOR
            ),
        )
        ann = identity.create_user(s, UserCreate(email="ann@example.com", password=PASSWORD))
        mount = infrastructure.create_mount(s, MountCreate(name="disk", root_path="/srv/disk"))
        cluster = infrastructure.create_cluster(
            s, ClusterCreate(name="east", subdomain="east.example.com")
        )
        servers = {}
        for kind in ServerType:
            servers[kind] = infrastructure.create_server(
                s, ServerCreate(name=f"{kind}-1", server_type=kind, host="h", mount=mount.name)
            )
            infrastructure.assign_server(s, cluster.id, servers[kind].id)
        instance = instances.create_instance_record(s, "alpha", ann, cluster, servers)

        def make(name, owner_type, owner_id=None, principal_kwargs=None):
            key = keys.create_key(s, owner_type, owner_id)
            principal = Principal(
                client_id=key.client_id,
                key_owner=owner_type,
                owner_id=owner_id,
                **(principal_kwargs or {}),
            )
            callers[name] = Caller(name, principal, AppKeyAuth(key.client_id, key.client_secret))

        make(
            "service-user-admin",
            OwnerType.SERVICE_USER,
            result.admin.id,
            {"role": ServiceRole.ADMINISTRATOR},
        )
        make(
            "service-user-operator",
            OwnerType.SERVICE_USER,
            operator.id,
            {"role": ServiceRole.OPERATOR},
        )
        make("user", OwnerType.USER, ann.id, {"user_id": ann.id})
        make("web-server", OwnerType.SERVER, servers[ServerType.WEB].id)
        make("instance", OwnerType.INSTANCE, instance.id)
        make("mount", OwnerType.MOUNT, mount.id)
        make("cluster", OwnerType.CLUSTER, cluster.id)
    for owner_type in (OwnerType.CONSOLE, OwnerType.DASHBOARD):
        key = result.keys[owner_type]
        callers[owner_type.value] = Caller(
            owner_type.value,
            Principal(client_id=key.client_id, key_owner=owner_type),
            AppKeyAuth(key.client_id, key.client_secret),
        )
    app = create_app(Settings(data_dir=tmp_path), db)
    client = TestClient(app, base_url="http://console.test")
    dashboard = callers["dashboard"]
    login = client.post(
        "/api/v1/logins",
        json={"email": "ann@example.com", "password": PASSWORD},
        auth=dashboard.auth,
    )
    assert login.status_code == 200, login.text
    token_auth = AppKeyAuth(
        dashboard.auth.client_id, dashboard.auth._client_secret, login.json()["token"]
    )
    callers["dashboard-for-user"] = Caller(
        "dashboard-for-user",
        Principal(
            client_id=dashboard.auth.client_id, key_owner=OwnerType.DASHBOARD, user_id=ann.id
        ),
        token_auth,
    )
    callers["unsigned"] = Caller("unsigned", None, None)
    return app, client, callers


@dataclass
class Endpoint:
    path: str
    route: APIRoute

    @property
    def methods(self) -> set[str]:
        return self.route.methods


def api_routes(app) -> list[Endpoint]:
    """Every API operation with its full path, as the app serves it."""
    return [
        Endpoint(context.path, context.original_route)
        for context in iter_route_contexts(app.routes)
        if isinstance(context.original_route, APIRoute) and context.path not in UNSIGNED_PATHS
    ]


def route_action(endpoint: Endpoint) -> Action | None:
    pending = list(endpoint.route.dependant.dependencies)
    while pending:
        dependency = pending.pop()
        action = action_of(dependency.call)
        if action is not None:
            return action
        pending.extend(dependency.dependencies)
    return None


def concrete_path(endpoint: Endpoint) -> str:
    """The path with every parameter pointing at something that does not exist, so
    that allowed calls end in 404 or 422 and change nothing."""
    values = {"kind": "clusters", "job_id": "987654"}
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), "does-not-exist"), endpoint.path)


def test_every_route_names_its_action(world):
    app, _, _ = world
    missing = [f"{sorted(r.methods)} {r.path}" for r in api_routes(app) if route_action(r) is None]
    assert missing == [], "routes without an authorization rule"
    assert len(api_routes(app)) > 40


def test_every_route_against_every_caller(world):
    app, client, callers = world
    failures = []
    checked = 0
    for route in api_routes(app):
        action = route_action(route)
        for method in route.methods:
            for caller in callers.values():
                response = client.request(
                    method,
                    concrete_path(route),
                    json={} if method in ("POST", "PATCH", "PUT") else None,
                    auth=caller.auth,
                )
                checked += 1
                if caller.principal is None:
                    expected_ok = False
                    if response.status_code != 401:
                        failures.append(
                            f"{caller.name} {method} {route.path}: {response.status_code}"
                        )
                    continue
                expected_ok = allowed(caller.principal, action)
                status = response.status_code
                if expected_ok and status in (401, 403):
                    failures.append(
                        f"{caller.name} {method} {route.path}: refused {status} "
                        f"{response.text[:120]}"
                    )
                if not expected_ok and status != 403:
                    failures.append(f"{caller.name} {method} {route.path}: {status}, expected 403")
                if status >= 500:
                    failures.append(f"{caller.name} {method} {route.path}: server error {status}")
                assert (
                    response.headers["content-type"].startswith(
                        "application/json" if status < 400 else "application/problem+json"
                    )
                    or status == 204
                )
    assert failures == []
    assert checked == len(callers) * sum(len(r.methods) for r in api_routes(app))


def test_policy_table():
    """The rules themselves, spelled out."""
    console = Principal("c", OwnerType.CONSOLE)
    operator = Principal("o", OwnerType.SERVICE_USER, 1, role=ServiceRole.OPERATOR)
    dashboard = Principal("d", OwnerType.DASHBOARD)
    acting = Principal("d", OwnerType.DASHBOARD, user_id=7)
    user = Principal("u", OwnerType.USER, 7, user_id=7)
    server = Principal("s", OwnerType.SERVER, 3)
    instance = Principal("i", OwnerType.INSTANCE, 9)
    assert all(allowed(console, action) for action in Action)
    assert {a for a in Action if allowed(operator, a)} == {a for a in Action if a.is_read}
    assert {a for a in Action if allowed(dashboard, a)} == {
        Action.REGISTER_USER,
        Action.CHECK_LOGIN,
        Action.RESET_PASSWORD,
    }
    own = {
        Action.OWN_ACCOUNT,
        Action.INSTANCES_READ,
        Action.INSTANCES_WRITE,
        Action.INSTANCE_STATUS,
        Action.INSTANCE_API_KEY,
        Action.JOBS_READ,
        Action.METRICS_READ,
        Action.SNAPSHOTS_READ,
        Action.SNAPSHOTS_WRITE,
    }
    assert {a for a in Action if allowed(acting, a)} == own
    assert {a for a in Action if allowed(user, a)} == own
    assert {a for a in Action if allowed(server, a)} == {
        Action.INSTANCE_CONFIG,
        Action.METRICS_REPORT,
    }
    assert {a for a in Action if allowed(instance, a)} == {Action.INSTANCE_STATUS}
