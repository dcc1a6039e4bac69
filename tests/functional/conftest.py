"""Functional tests run once per database engine: SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from dfe.client import AppKeyAuth
from dfe.config import Settings
from dfe.console.app import create_app
from dfe.enums import OwnerType
from dfe.schemas import ServiceUserCreate
from dfe.services import setup

PASSWORD = "a-long-enough-password"

ENGINES = ("sqlite", "postgresql", "mysql")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "engine_name" in metafunc.fixturenames:
        metafunc.parametrize("engine_name", ENGINES)


@dataclass
class Console:
    """A Console app on the test database, its test client, and keys to call it with."""

    app: Any
    client: TestClient
    admin: AppKeyAuth
    dashboard: AppKeyAuth
    admin_id: int

    def as_(self, auth: AppKeyAuth | None) -> TestClient:
        client = TestClient(self.app, base_url="http://console.test")
        client.auth = auth
        return client

    def login(self, email: str, password: str) -> AppKeyAuth:
        """Log a user in through the Dashboard's key; its auth acting for that user."""
        response = self.as_(self.dashboard).post(
            "/api/v1/logins", json={"email": email, "password": password}
        )
        assert response.status_code == 200, response.text
        return AppKeyAuth(
            self.dashboard.client_id, self.dashboard._client_secret, response.json()["token"]
        )


@pytest.fixture
def console(db, tmp_path) -> Console:
    with db.transaction(actor="test") as session:
        result = setup.run_setup(
            session, ServiceUserCreate(email="root@example.com", password=PASSWORD), force=False
        )
    keys = {
        owner: AppKeyAuth(key.client_id, key.client_secret) for owner, key in result.keys.items()
    }
    app = create_app(Settings(data_dir=tmp_path), db)
    world = Console(
        app=app,
        client=TestClient(app, base_url="http://console.test"),
        admin=keys[OwnerType.CONSOLE],
        dashboard=keys[OwnerType.DASHBOARD],
        admin_id=result.admin.id,
    )
    world.client.auth = world.admin
    return world


def _build_cli_estate(dfe: Any) -> None:
    """A mount, one db/web/app server each and a cluster holding them, made with `dfe`
    (local or remote: `dfe` is the test's command runner)."""
    dfe("mount", "create", "disk1", "--root", "/srv/disk1")
    dfe(
        "server",
        "create",
        "db1",
        "--type",
        "db",
        "--host",
        "db1.internal",
        "--config",
        '{"driver": "postgresql", "port": 5432, "admin_password": "s3cret-admin"}',
    )
    dfe("server", "create", "web1", "--type", "web", "--host", "web1.internal", "--mount", "disk1")
    dfe("server", "create", "app1", "--type", "app", "--host", "app1.internal", "--capacity", "5")
    dfe("cluster", "create", "east", "--subdomain", "east.example.com", "--capacity", "100")
    for server in ("db1", "web1", "app1"):
        dfe("cluster", "assign", "east", server)


@pytest.fixture
def build_cli_estate() -> Any:
    return _build_cli_estate
