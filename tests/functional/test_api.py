"""The Console API end to end (in process): resources, signatures, scoping, errors, audit."""

from __future__ import annotations

import os

import pytest
import structlog

from dfe.auth.signatures import sign_request
from dfe.client import AppKeyAuth
from dfe.enums import ServerType
from dfe.services import identity, infrastructure, instances

PASSWORD = "a-long-enough-password"


def estate(client) -> None:
    assert (
        client.post("/api/v1/mounts", json={"name": "disk", "root_path": "/srv/d"}).status_code
        == 201
    )
    for kind in ("db", "web", "app"):
        body = {
            "name": f"{kind}-1",
            "server_type": kind,
            "host": f"{kind}.internal",
            "config": {"driver": "postgresql", "admin_password": "pg-admin-secret"},
        }
        if kind == "web":
            body["mount"] = "disk"
        response = client.post("/api/v1/servers", json=body)
        assert response.status_code == 201, response.text
        assert response.json()["config"]["admin_password"] == "********"
    response = client.post(
        "/api/v1/clusters", json={"name": "east", "subdomain": "east.example.com"}
    )
    assert response.status_code == 201
    for kind in ("db", "web", "app"):
        assert client.put(f"/api/v1/clusters/east/servers/{kind}-1").status_code == 204


def add_instance(db, name: str, email: str):
    with db.transaction(actor="test") as s:
        user = s.scalar(identity.select(identity.User).where(identity.User.email == email))
        cluster = infrastructure.get_cluster(s, "east")
        servers = {k: infrastructure.get_server(s, f"{k}-1") for k in ServerType}
        instances.create_instance_record(s, name, user, cluster, servers)


def test_estate_crud_paging_and_problems(console):
    client = console.client
    estate(client)
    cluster = client.get("/api/v1/clusters/east").json()
    assert cluster["servers"] == ["app-1", "db-1", "web-1"]
    assert client.get("/api/v1/clusters/east/servers").json()["total"] == 3

    for i in range(7):
        client.post("/api/v1/mounts", json={"name": f"m{i}", "root_path": f"/srv/{i}"})
    seen, cursor = [], None
    while True:
        page = client.get("/api/v1/mounts", params={"limit": 3, "cursor": cursor, "q": "m"}).json()
        seen += [m["name"] for m in page["items"]]
        assert page["total"] == 7
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"m{i}" for i in range(7)]
    names = [
        m["name"] for m in client.get("/api/v1/mounts", params={"sort": "-name"}).json()["items"]
    ]
    assert names == sorted(names, reverse=True)

    patched = client.patch("/api/v1/servers/app-1", json={"is_enabled": False, "max_instances": 4})
    assert patched.json()["is_enabled"] is False
    assert patched.json()["max_instances"] == 4

    duplicate = client.post("/api/v1/clusters", json={"name": "EAST", "subdomain": "x.example.com"})
    assert duplicate.status_code == 409
    assert duplicate.headers["content-type"] == "application/problem+json"
    assert duplicate.json()["code"] == "conflict"
    bad = client.post("/api/v1/servers", json={"name": "x", "server_type": "database", "host": "h"})
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["location"] == ["body", "server_type"]
    assert client.get("/api/v1/servers", params={"sort": "secret"}).status_code == 422
    assert client.get("/api/v1/servers", params={"cursor": "!!"}).status_code == 422
    assert client.get("/api/v1/servers", params={"limit": 0}).status_code == 422
    assert client.delete("/api/v1/mounts/disk").status_code == 409
    assert client.get("/api/v1/clusters/west").status_code == 404
    assert (
        client.post(
            "/api/v1/clusters", content=b"{not json", headers={"content-type": "application/json"}
        ).status_code
        == 422
    )


def test_delete_and_restore_through_the_archive(console):
    client = console.client
    estate(client)
    assert client.delete("/api/v1/clusters/east").status_code == 204
    archived = client.get("/api/v1/archive/clusters").json()
    assert [row["name"] for row in archived["items"]] == ["east"]
    assert archived["items"][0]["archived_by"].startswith(f"key:{console.admin.client_id}")
    assert (
        client.get("/api/v1/archive/clusters/east").json()["row"]["subdomain"] == "east.example.com"
    )
    restored = client.post("/api/v1/archive/clusters/east/restore")
    assert restored.status_code == 200
    assert client.get("/api/v1/clusters/east").json()["servers"] == ["app-1", "db-1", "web-1"]
    again = client.post("/api/v1/archive/clusters/east/restore")
    assert again.status_code == 404
    assert client.get("/api/v1/archive/planets").status_code == 422


def test_changes_are_audited_with_the_calling_key(console):
    client = console.client
    estate(client)
    client.patch("/api/v1/clusters/east", json={"max_instances": 10})
    entries = client.get("/api/v1/audit", params={"target": "east"}).json()["items"]
    actions = [entry["action"] for entry in entries]
    assert actions[:2] == ["cluster.update", "cluster.assign"]
    update = entries[0]
    assert update["actor"].startswith(f"key:{console.admin.client_id} (console")
    assert (update["before"]["max_instances"], update["after"]["max_instances"]) == (None, 10)
    servers = client.get("/api/v1/audit", params={"action": "server.create"}).json()["items"]
    assert servers[0]["after"]["config"]["admin_password"] == "********"


def test_users_register_log_in_and_see_only_their_own(console, db):
    client = console.client
    estate(client)
    dashboard = console.as_(console.dashboard)
    for email in ("ann@example.com", "bob@example.com"):
        response = dashboard.post("/api/v1/users", json={"email": email, "password": PASSWORD})
        assert response.status_code == 201, response.text
    refused = dashboard.post(
        "/api/v1/users", json={"email": "eve@example.com", "password": PASSWORD, "is_admin": True}
    )
    assert refused.status_code == 403
    add_instance(db, "ann-app", "ann@example.com")
    add_instance(db, "bob-app", "bob@example.com")

    ann = console.as_(console.login("ann@example.com", PASSWORD))
    assert ann.get("/api/v1/account").json()["email"] == "ann@example.com"
    assert [i["name"] for i in ann.get("/api/v1/instances").json()["items"]] == ["ann-app"]
    mine = ann.get("/api/v1/instances/ann-app").json()
    assert (mine["host"], mine["owner"], mine["archived"]) == (
        "ann-app.east.example.com",
        "ann@example.com",
        False,
    )
    assert not any("password" in key for key in mine)
    theirs = ann.get("/api/v1/instances/bob-app")
    assert theirs.status_code == 404
    assert theirs.json()["detail"] == "instance 'bob-app' does not exist"
    assert ann.get("/api/v1/clusters").status_code == 403

    # A user token only works under the key it was issued to.
    stolen = AppKeyAuth(console.admin.client_id, console.admin._client_secret, ann.auth.user_token)
    assert console.as_(stolen).get("/api/v1/account").status_code == 401
    forged = AppKeyAuth(
        console.dashboard.client_id,
        console.dashboard._client_secret,
        ann.auth.user_token[:-2] + "xx",
    )
    assert console.as_(forged).get("/api/v1/account").status_code == 401
    # Changing the password ends every session.
    client.patch("/api/v1/users/ann@example.com", json={"password": "another-long-password"})
    assert ann.get("/api/v1/account").status_code == 401

    # An archived instance still answers its status, marked archived.
    with db.transaction(actor="test") as s:
        instances.delete_instance_record(s, "bob-app")
    bob = console.as_(console.login("bob@example.com", PASSWORD))
    seen = bob.get("/api/v1/instances/bob-app").json()
    assert seen["archived"] is True
    placed = [seen[k] for k in ("owner", "cluster", "db_server", "web_server", "app_server")]
    assert placed == ["bob@example.com", "east", "db-1", "web-1", "app-1"]
    assert bob.get("/api/v1/instances").json()["total"] == 0
    # A server archived since is named by its id.
    app_server_id = client.get("/api/v1/servers/app-1").json()["id"]
    with db.transaction(actor="test") as s:
        instances.delete_instance_record(s, "ann-app")
    assert client.delete("/api/v1/clusters/east/servers/app-1").status_code == 204
    assert client.delete("/api/v1/servers/app-1").status_code == 204
    seen = bob.get("/api/v1/instances/bob-app").json()
    assert (seen["app_server"], seen["db_server"]) == (f"#{app_server_id}", "db-1")


def test_an_instance_key_reads_only_its_own_status(console, db):
    estate(console.client)
    console.as_(console.dashboard).post(
        "/api/v1/users", json={"email": "ann@example.com", "password": PASSWORD}
    )
    add_instance(db, "one", "ann@example.com")
    add_instance(db, "two", "ann@example.com")
    key = console.client.post(
        "/api/v1/keys", json={"owner_type": "instance", "owner": "one"}
    ).json()
    instance = console.as_(AppKeyAuth(key["client_id"], key["client_secret"]))
    assert instance.get("/api/v1/instances/one").json()["name"] == "one"
    assert instance.get("/api/v1/instances/two").status_code == 404
    assert instance.get("/api/v1/instances").status_code == 403


def test_signature_failures_are_401_with_the_reason(console):
    client = console.as_(None)
    url = "http://console.test/api/v1/clusters"

    def signed(method="GET", target=url, body=b"", headers=None, **kw):
        base = dict(headers or {})
        base.update(
            sign_request(
                method,
                target,
                base,
                body,
                client_id=console.admin.client_id,
                client_secret=console.admin._client_secret,
                **kw,
            )
        )
        return base

    headers = signed()
    assert client.get(url, headers=headers).status_code == 200
    replay = client.get(url, headers=headers)
    assert (replay.status_code, replay.json()["code"]) == (401, "replayed")
    assert client.get(url + "?q=x", headers=signed()).json()["code"] == "bad_signature"
    assert client.get(url, headers=signed(created=1)).json()["code"] == "expired"
    tampered = signed(
        "POST",
        body=b'{"name": "a", "subdomain": "a.example.com"}',
        headers={"content-type": "application/json"},
    )
    response = client.post(
        url, content=b'{"name": "b", "subdomain": "a.example.com"}', headers=tampered
    )
    assert response.json()["code"] == "digest_mismatch"
    assert client.get(url).json()["code"] == "missing_signature"
    other_host = signed(target="http://evil.test/api/v1/clusters")
    assert client.get(url, headers=other_host).json()["code"] == "bad_signature"
    unknown = sign_request("GET", url, {}, b"", client_id="dfe_nobody", client_secret="x" * 43)
    assert client.get(url, headers=unknown).json()["code"] == "unknown_key"


def test_revoked_expired_and_rotated_keys(console):
    client = console.client
    created = client.post(
        "/api/v1/keys",
        json={"owner_type": "service_user", "owner": "root@example.com", "label": "ci"},
    )
    assert created.status_code == 201
    key = created.json()
    assert "client_secret" not in client.get(f"/api/v1/keys/{key['client_id']}").json()
    assert all("client_secret" not in k for k in client.get("/api/v1/keys").json()["items"])
    old = console.as_(AppKeyAuth(key["client_id"], key["client_secret"]))
    assert old.get("/api/v1/clusters").status_code == 200

    rotated = client.post(f"/api/v1/keys/{key['client_id']}/rotate", json={"grace_hours": 1}).json()
    assert old.get("/api/v1/clusters").status_code == 200  # still valid until the new key is used
    new = console.as_(AppKeyAuth(rotated["client_id"], rotated["client_secret"]))
    assert new.get("/api/v1/clusters").status_code == 200
    response = old.get("/api/v1/clusters")
    assert (response.status_code, response.json()["code"]) == (401, "unknown_key")

    assert client.delete(f"/api/v1/keys/{rotated['client_id']}").status_code == 204
    assert new.get("/api/v1/clusters").json()["code"] == "unknown_key"


def test_login_is_throttled_per_account(console):
    dashboard = console.as_(console.dashboard)
    dashboard.post("/api/v1/users", json={"email": "ann@example.com", "password": PASSWORD})
    for _ in range(5):
        wrong = dashboard.post(
            "/api/v1/logins", json={"email": "ann@example.com", "password": "nope"}
        )
        assert wrong.status_code == 401
        assert wrong.json()["detail"] == "the email or password is wrong"
    blocked = dashboard.post(
        "/api/v1/logins", json={"email": "ann@example.com", "password": PASSWORD}
    )
    assert blocked.status_code == 429
    assert int(blocked.headers["retry-after"]) > 0
    unknown = dashboard.post(
        "/api/v1/logins", json={"email": "who@example.com", "password": PASSWORD}
    )
    assert unknown.status_code == 401


def test_login_is_throttled_per_address(console):
    dashboard = console.as_(console.dashboard)
    for i in range(20):
        body = {"email": f"nobody{i}@example.com", "password": "x", "address": "203.0.113.9"}
        assert dashboard.post("/api/v1/logins", json=body).status_code == 401
    body = {"email": "fresh@example.com", "password": "x", "address": "203.0.113.9"}
    assert dashboard.post("/api/v1/logins", json=body).status_code == 429
    body["address"] = "198.51.100.1"
    assert dashboard.post("/api/v1/logins", json=body).status_code == 401


def test_oversized_bodies_are_refused_with_413(console):
    body = b'{"name": "' + b"x" * 2_000_000 + b'"}'
    response = console.client.post(
        "/api/v1/clusters", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["code"] == "body_too_large"


def test_health_ready_and_request_ids(console):
    anonymous = console.as_(None)
    assert anonymous.get("/api/v1/health").json()["status"] == "ok"
    assert anonymous.get("/api/v1/ready").json()["status"] == "ready"
    response = anonymous.get("/api/v1/health", headers={"x-request-id": "abc-123-def-456"})
    assert response.headers["x-request-id"] == "abc-123-def-456"
    assert len(anonymous.get("/api/v1/health").headers["x-request-id"]) == 32
    assert anonymous.get("/api/v1/openapi.json").json()["info"]["title"] == "DFE Console"


def test_the_secret_scan_catches_a_leak(console, secret_scanner):
    """The check that guards every test: it sees a secret in a log line."""
    response = console.client.post("/api/v1/keys", json={"owner_type": "console", "label": "probe"})
    secret = response.json()["client_secret"]
    start = secret_scanner.mark()
    structlog.get_logger("probe").info("oops", leaked=secret)
    assert secret_scanner.leaks(start) == [secret]
    secret_scanner.forget(start)
    assert secret_scanner.leaks(start) == []


def _signed_headers(console, url: str, **extra: str) -> dict[str, str]:
    headers = dict(extra)
    headers.update(
        sign_request(
            "GET",
            url,
            headers,
            b"",
            client_id=console.admin.client_id,
            client_secret=console.admin._client_secret,
        )
    )
    return headers


def test_forwarded_headers_count_only_from_trusted_proxies(console, db, tmp_path):
    from fastapi.testclient import TestClient

    from dfe.config import Settings
    from dfe.console.app import create_app

    public_url = "https://console.example.com/api/v1/clusters"
    forwarded = {"x-forwarded-proto": "https", "x-forwarded-host": "console.example.com"}
    untrusting = console.as_(None)
    response = untrusting.get(
        "/api/v1/clusters", headers=_signed_headers(console, public_url, **forwarded)
    )
    assert response.json()["code"] == "bad_signature"

    # The test client connects from the address "testclient".
    behind_proxy = create_app(
        Settings(data_dir=tmp_path, trusted_proxies="10.0.0.1, testclient"), db
    )
    client = TestClient(behind_proxy, base_url="http://console.test")
    response = client.get(
        "/api/v1/clusters", headers=_signed_headers(console, public_url, **forwarded)
    )
    assert response.status_code == 200, response.text


def test_the_replay_cache_is_shared_through_redis(console, db, tmp_path):
    import redis

    from dfe.config import Settings

    url = os.environ.get("DFE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    try:
        redis.Redis.from_url(url).ping()
    except redis.ConnectionError as error:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis unavailable in CI: {error}")
        pytest.skip(f"Redis unavailable: {error}")
    assert_two_consoles_refuse_each_others_nonces(
        console, db, Settings(data_dir=tmp_path, redis_url=url)
    )


def test_the_replay_cache_is_shared_through_the_database(console, db, tmp_path):
    """Without Redis, two Console processes on one database refuse each other's nonces."""
    from dfe.config import Settings

    assert_two_consoles_refuse_each_others_nonces(console, db, Settings(data_dir=tmp_path))


def assert_two_consoles_refuse_each_others_nonces(console, db, settings) -> None:
    from fastapi.testclient import TestClient

    from dfe.console.app import create_app

    first, second = (
        TestClient(create_app(settings, db), base_url="http://console.test") for _ in range(2)
    )
    headers = _signed_headers(console, "http://console.test/api/v1/clusters")
    assert first.get("/api/v1/clusters", headers=headers).status_code == 200
    replay = second.get("/api/v1/clusters", headers=headers)
    assert (replay.status_code, replay.json()["code"]) == (401, "replayed")


def test_expired_nonces_are_purged_and_live_ones_kept(console, db, monkeypatch):
    from datetime import timedelta

    from sqlalchemy import select

    from dfe.auth import nonces
    from dfe.db.base import utcnow
    from dfe.models import SeenNonce

    monkeypatch.setattr(nonces, "PURGE_EVERY", 2)
    with db.transaction(actor="test") as session:
        for nonce, age in (("expired", 1), ("live", -60)):
            expiry = utcnow() - timedelta(seconds=age)
            session.add(SeenNonce(client_id="someone", nonce=nonce * 4, expires_at=expiry))
    for _ in range(2):
        assert console.client.get("/api/v1/clusters").status_code == 200
    with db.session() as session:
        kept = session.scalars(select(SeenNonce.nonce).where(SeenNonce.client_id == "someone"))
        assert list(kept) == ["livelivelivelive"]


def test_instance_lists_filter_by_owner_cluster_and_state(console, db):
    estate(console.client)
    for email in ("ann@example.com", "bob@example.com"):
        console.as_(console.dashboard).post(
            "/api/v1/users", json={"email": email, "password": PASSWORD}
        )
    add_instance(db, "ann-one", "ann@example.com")
    add_instance(db, "ann-two", "ann@example.com")
    add_instance(db, "bob-one", "bob@example.com")

    def names(**params):
        page = console.client.get("/api/v1/instances", params=params).json()
        return sorted(item["name"] for item in page["items"])

    assert names(owner="ANN@example.com") == ["ann-one", "ann-two"]
    assert names(owner="nobody@example.com") == []
    assert names(cluster="east") == ["ann-one", "ann-two", "bob-one"]
    assert names(cluster="west") == []
    assert names(state="created", q="one") == ["ann-one", "bob-one"]
    assert names(state="provisioned") == []
    assert console.client.get("/api/v1/instances", params={"state": "sleeping"}).status_code == 422
    # A user's own filter cannot widen what they see.
    ann = console.as_(console.login("ann@example.com", PASSWORD))
    page = ann.get("/api/v1/instances", params={"owner": "bob@example.com"}).json()
    assert page["items"] == []
