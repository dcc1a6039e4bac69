"""What the Console gives the web tier and the owners, on every Console engine: an
instance's config (web servers' keys see the instances placed on them), the change
feed, and the runtime API key (its owner and administrators)."""

from __future__ import annotations

import hashlib
import time

from sqlalchemy import create_engine, select, text

from dfe.client import AppKeyAuth
from dfe.enums import OperationalState, OwnerType, ServiceRole
from dfe.models import Instance
from dfe.provisioning import LocalStorage
from dfe.schemas import MountCreate, ServerCreate, ServiceUserCreate, UserCreate
from dfe.services import identity, infrastructure, keys, setup

PASSWORD = "a-long-enough-password"
ANN, BOB = "ann@example.com", "bob@example.com"


def estate(console, db, tmp_path):
    """The local cluster (its web server's key as setup makes it), a second web server
    with a key of its own, users ann and bob with keys, and an operator's key."""
    auths = {}
    with db.transaction(actor="test") as s:
        host_key = setup.create_local_cluster(s, tmp_path / "var")
        auths["local-web"] = AppKeyAuth(host_key.client_id, host_key.client_secret)
        infrastructure.create_mount(s, MountCreate(name="other", root_path=str(tmp_path / "o")))
        other = infrastructure.create_server(
            s, ServerCreate(name="web-2", server_type="web", host="h", mount="other")
        )
        key = keys.create_key(s, OwnerType.SERVER, other.id)
        auths["web-2"] = AppKeyAuth(key.client_id, key.client_secret)
        for email in (ANN, BOB):
            user = identity.create_user(s, UserCreate(email=email, password=PASSWORD))
            key = keys.create_key(s, OwnerType.USER, user.id)
            auths[email] = AppKeyAuth(key.client_id, key.client_secret)
        operator = identity.create_service_user(
            s,
            ServiceUserCreate(
                email="ops@example.com", password=PASSWORD, role=ServiceRole.OPERATOR
            ),
        )
        key = keys.create_key(s, OwnerType.SERVICE_USER, operator.id)
        auths["operator"] = AppKeyAuth(key.client_id, key.client_secret)
    return auths


def launch(console, name, owner=ANN):
    response = console.client.post("/api/v1/instances", json={"name": name, "owner": owner})
    assert response.status_code == 202, response.text
    assert response.json()["instance"]["provision_state"] == "provisioned"


def test_a_web_server_reads_the_config_of_the_instances_placed_on_it(console, db, tmp_path):
    auths = estate(console, db, tmp_path)
    launch(console, "shop")
    web = console.as_(auths["local-web"])

    answer = web.get("/api/v1/instances/shop/config")
    assert answer.status_code == 200, answer.text
    config = answer.json()
    assert config["name"] == "shop"
    assert config["host"] == "shop.localhost"
    assert (config["provision_state"], config["ready_state"], config["operational_state"]) == (
        "provisioned",
        "ready",
        "activated",
    )
    engine = create_engine(config["database_url"])  # the instance's own database
    with engine.connect() as connection:
        assert connection.execute(text("SELECT 1")).scalar() == 1
    engine.dispose()
    with db.session() as s:
        instance = s.scalars(select(Instance).where(Instance.name == "shop")).one()
        paths = LocalStorage(tmp_path / "var" / "storage").paths(instance.user.storage_key, "shop")
        stored_key = instance.api_key
    assert config["storage_root"] == str(paths.instance_root)
    assert paths.instance_root.is_dir()
    key = console.as_(auths[ANN]).get("/api/v1/instances/shop/api-key").json()["api_key"]
    assert key == stored_key
    assert config["api_key_sha256"] == hashlib.sha256(key.encode()).hexdigest()
    assert key not in answer.text

    # The version is stable until something the web tier uses changes.
    assert web.get("/api/v1/instances/shop/config").json()["version"] == config["version"]
    with db.transaction(actor="test") as s:
        instance = s.scalars(select(Instance).where(Instance.name == "shop")).one()
        instance.operational_state = OperationalState.LOCKED
    locked = web.get("/api/v1/instances/shop/config").json()
    assert locked["operational_state"] == "locked"
    assert locked["version"] != config["version"]
    assert locked["changed_at"] > config["changed_at"]

    # Other web servers, users and operators do not get it; administrators do.
    assert console.as_(auths["web-2"]).get("/api/v1/instances/shop/config").status_code == 404
    assert console.as_(auths[ANN]).get("/api/v1/instances/shop/config").status_code == 403
    assert console.as_(auths["operator"]).get("/api/v1/instances/shop/config").status_code == 403
    assert console.client.get("/api/v1/instances/shop/config").status_code == 200
    assert web.get("/api/v1/instances/nothere/config").status_code == 404


def test_the_change_feed_names_changed_and_archived_instances(console, db, tmp_path):
    auths = estate(console, db, tmp_path)
    web, other = console.as_(auths["local-web"]), console.as_(auths["web-2"])
    start = web.get("/api/v1/instances/changes").json()
    assert start["changes"] == [] and not start["reset"]
    cursor = start["cursor"]
    other_cursor = other.get("/api/v1/instances/changes").json()["cursor"]

    launch(console, "shop")
    changed = web.get("/api/v1/instances/changes", params={"since": cursor}).json()
    assert [(c["name"], c["archived"]) for c in changed["changes"]] == [("shop", False)]
    first_seen = changed["changes"][0]["changed_at"]

    time.sleep(0.01)
    with db.transaction(actor="test") as s:
        instance = s.scalars(select(Instance).where(Instance.name == "shop")).one()
        instance.operational_state = OperationalState.MAINTENANCE
    again = web.get("/api/v1/instances/changes", params={"since": cursor}).json()
    assert again["changes"][0]["changed_at"] > first_seen

    assert console.client.delete("/api/v1/instances/shop").status_code == 202
    gone = web.get("/api/v1/instances/changes", params={"since": cursor}).json()
    assert ("shop", True) in [(c["name"], c["archived"]) for c in gone["changes"]]
    # The cursor reaches back a little (late commits), so the next answer may repeat.
    assert int(gone["cursor"]) > int(cursor)

    assert (
        other.get("/api/v1/instances/changes", params={"since": other_cursor}).json()["changes"]
        == []
    )  # placed elsewhere
    everything = console.client.get("/api/v1/instances/changes", params={"since": cursor}).json()
    assert {c["name"] for c in everything["changes"]} == {"shop"}
    for since in ("yesterday", "9" * 19, "-1"):
        assert web.get("/api/v1/instances/changes", params={"since": since}).status_code == 422
    assert console.as_(auths[ANN]).get("/api/v1/instances/changes").status_code == 403


def test_the_runtime_api_key_is_for_its_owner_and_administrators(console, db, tmp_path):
    auths = estate(console, db, tmp_path)
    launch(console, "shop", owner=ANN)
    own = console.as_(auths[ANN]).get("/api/v1/instances/shop/api-key")
    assert own.status_code == 200
    key = own.json()["api_key"]
    assert key.startswith("dfei_") and len(key) == len("dfei_") + 43  # 256 random bits
    assert console.client.get("/api/v1/instances/shop/api-key").json()["api_key"] == key
    assert console.as_(console.login(ANN, PASSWORD)).get(
        "/api/v1/instances/shop/api-key"
    ).json() == {"name": "shop", "api_key": key}
    assert console.as_(auths[BOB]).get("/api/v1/instances/shop/api-key").status_code == 404
    assert console.as_(auths["operator"]).get("/api/v1/instances/shop/api-key").status_code == 403
    assert console.as_(auths["local-web"]).get("/api/v1/instances/shop/api-key").status_code == 403
    assert console.client.get("/api/v1/instances/nothere/api-key").status_code == 404

    # Encrypted at rest.
    with db.engine.connect() as connection:
        raw = connection.execute(text("SELECT api_key FROM instance_t")).scalar()
    assert raw and key not in raw

    # An instance recorded before keys existed gets one when its owner first asks.
    with db.transaction(actor="test") as s:
        s.scalars(select(Instance).where(Instance.name == "shop")).one().api_key = None
    assert (
        console.as_(auths["local-web"])
        .get("/api/v1/instances/shop/config")
        .json()["api_key_sha256"]
        is None
    )
    fresh = console.as_(auths[ANN]).get("/api/v1/instances/shop/api-key").json()["api_key"]
    assert fresh != key
    assert console.as_(auths[ANN]).get("/api/v1/instances/shop/api-key").json()["api_key"] == fresh


def test_limit_and_key_changes_reach_the_config_through_the_feed(console, db, tmp_path):
    auths = estate(console, db, tmp_path)
    web = console.as_(auths["local-web"])
    launch(console, "shop")
    launch(console, "blog", owner=BOB)
    config = web.get("/api/v1/instances/shop/config").json()
    assert config["limits"] == [] and config["app_keys"] != []  # the instance's own key

    def changed_since(cursor):
        answer = web.get("/api/v1/instances/changes", params={"since": cursor}).json()
        return {c["name"] for c in answer["changes"]}

    def latest_change(name):
        config = web.get(f"/api/v1/instances/{name}/config").json()
        return config["changed_at"], config["version"]

    def bumps(name, action):
        before = latest_change(name)
        time.sleep(0.01)
        action()
        after = latest_change(name)
        assert after[0] > before[0] and after[1] != before[1], name

    cursor = web.get("/api/v1/instances/changes").json()["cursor"]
    each = {"label": "each", "scope": "cluster", "cluster": "local", "period": "day",
            "max_requests": 100}  # fmt: skip
    bumps("blog", lambda: console.client.post("/api/v1/limits", json=each))
    assert changed_since(cursor) >= {"shop", "blog"}
    own = {"label": "shop-own", "scope": "instance", "instance": "shop", "period": "minute",
           "max_requests": 5}  # fmt: skip
    bumps("shop", lambda: console.client.post("/api/v1/limits", json=own))
    limits = web.get("/api/v1/instances/shop/config").json()["limits"]
    assert [(x["label"], x["scope"], x["max_requests"], x["generation"]) for x in limits] == [
        ("each", "cluster", 100, 0),
        ("shop-own", "instance", 5, 0),
    ]
    assert [x["label"] for x in web.get("/api/v1/instances/blog/config").json()["limits"]] == [
        "each"
    ]
    bumps("shop", lambda: console.client.patch("/api/v1/limits/shop-own", json={"max_requests": 9}))
    bumps("shop", lambda: console.client.post("/api/v1/limits/shop-own/reset"))
    limits = web.get("/api/v1/instances/shop/config").json()["limits"]
    assert (limits[1]["max_requests"], limits[1]["generation"]) == (9, 1)
    bumps(
        "shop", lambda: console.client.patch("/api/v1/limits/shop-own", json={"is_active": False})
    )
    assert len(web.get("/api/v1/instances/shop/config").json()["limits"]) == 1
    bumps("blog", lambda: console.client.delete("/api/v1/limits/each"))
    assert web.get("/api/v1/instances/blog/config").json()["limits"] == []
    assert console.client.post("/api/v1/limits/nope/reset").status_code == 404

    made = {}

    def make_key():
        made.update(
            console.client.post(
                "/api/v1/keys", json={"owner_type": "instance", "owner": "shop"}
            ).json()
        )

    bumps("shop", make_key)
    digests = {k["client_id"]: k["secret_sha256"] for k in
               web.get("/api/v1/instances/shop/config").json()["app_keys"]}  # fmt: skip
    assert digests[made["client_id"]] == hashlib.sha256(made["client_secret"].encode()).hexdigest()
    bumps("shop", lambda: console.client.delete(f"/api/v1/keys/{made['client_id']}"))
    config = web.get("/api/v1/instances/shop/config").json()
    assert made["client_id"] not in {k["client_id"] for k in config["app_keys"]}
