"""App keys: one per new owner, secrets shown once, destroyed with their owner, rotation."""

from __future__ import annotations

import secrets
from datetime import timedelta

import pytest
from sqlalchemy import delete, func, select

from dfe.db.base import utcnow
from dfe.db.session import Database
from dfe.models import (
    AppKey,
    Cluster,
    Instance,
    Mount,
    OwnerType,
    Server,
    ServerType,
    ServiceUser,
    User,
)
from dfe.models.keys import OWNER_COLUMNS
from dfe.schemas import (
    ClusterCreate,
    KeyPublic,
    KeyWithSecret,
    MountCreate,
    ServerCreate,
    ServiceUserCreate,
    UserCreate,
)
from dfe.services import identity, infrastructure, instances, keys
from dfe.services.errors import Conflict, InvalidInput, NotFound

SECRET_LENGTH = len(secrets.token_urlsafe(32))  # 256 bits, URL-safe base64
GRACE = timedelta(hours=2)


def build_estate(db: Database) -> dict[str, object]:
    with db.transaction(actor="builder") as s:
        mount = infrastructure.create_mount(s, MountCreate(name="mnt", root_path="/srv/mnt"))
        cluster = infrastructure.create_cluster(
            s, ClusterCreate(name="clu", subdomain="apps.example.com")
        )
        servers = {
            server_type: infrastructure.create_server(
                s,
                ServerCreate(
                    name=f"{server_type.value}-1",
                    server_type=server_type,
                    host="10.0.0.1",
                    mount=mount.name if server_type is ServerType.WEB else None,
                ),
            )
            for server_type in ServerType
        }
        user = identity.create_user(
            s, UserCreate(email="owner@example.com", password="a long enough pw")
        )
        operator = identity.create_service_user(
            s, ServiceUserCreate(email="ops@example.com", password="a long enough pw")
        )
        instance = instances.create_instance_record(s, "alpha", user, cluster, servers)
    return {
        "mount": mount,
        "cluster": cluster,
        "servers": servers,
        "user": user,
        "operator": operator,
        "instance": instance,
    }


def keys_of(db: Database, owner_type: OwnerType, owner_id: int) -> list[AppKey]:
    with db.session() as s:
        return keys.list_keys(s, owner_type, owner_id)


def test_every_new_user_service_user_and_instance_gets_one_key(db, engine_name):
    estate = build_estate(db)
    for owner_type, owner in (
        (OwnerType.USER, estate["user"]),
        (OwnerType.SERVICE_USER, estate["operator"]),
        (OwnerType.INSTANCE, estate["instance"]),
    ):
        found = keys_of(db, owner_type, owner.id)  # type: ignore[attr-defined]
        assert len(found) == 1, owner_type
        assert found[0].owner_type is owner_type
        assert found[0].owner_id == owner.id  # type: ignore[attr-defined]
        assert found[0].client_id.startswith("dfe_")
    # Infrastructure gets keys only when asked.
    with db.session() as s:
        assert s.scalar(select(func.count()).where(AppKey.server_id.is_not(None))) == 0


def test_secrets_are_long_random_distinct_and_shown_once(db, engine_name):
    estate = build_estate(db)
    created: list[KeyWithSecret] = []
    with db.transaction(actor="ops") as s:
        for _ in range(5):
            created.append(keys.create_key(s, OwnerType.USER, estate["user"].id))  # type: ignore[attr-defined]
        created.append(keys.create_key(s, OwnerType.CONSOLE, label="console"))
        created.append(keys.create_key(s, OwnerType.MOUNT, estate["mount"].id))  # type: ignore[attr-defined]
    secrets_seen = [key.client_secret for key in created]
    assert len(set(secrets_seen)) == len(secrets_seen)
    assert len({key.client_id for key in created}) == len(created)
    for secret in secrets_seen:
        assert len(secret) >= SECRET_LENGTH
        assert len(set(secret)) > 16  # not a constant or a short repeated pattern
    assert "client_secret" not in KeyPublic.model_fields
    with db.session() as s:
        for key in created:
            stored = keys.get_key(s, key.client_id)
            assert stored.client_secret == key.client_secret  # decrypts to what was shown
            shown = keys.public(stored)
            assert isinstance(shown, KeyPublic)
            assert not isinstance(shown, KeyWithSecret)
            assert key.client_secret not in shown.model_dump_json()
            assert key.client_secret not in repr(shown)
        for listed in keys.list_keys(s):
            dumped = keys.public(listed).model_dump_json()
            assert not any(secret in dumped for secret in secrets_seen)


def test_key_owner_rules(db, engine_name):
    estate = build_estate(db)
    with pytest.raises(InvalidInput), db.transaction(actor="ops") as s:
        keys.create_key(s, OwnerType.SERVER)
    with pytest.raises(InvalidInput), db.transaction(actor="ops") as s:
        keys.create_key(s, OwnerType.DASHBOARD, estate["user"].id)  # type: ignore[attr-defined]
    with pytest.raises(InvalidInput), db.transaction(actor="ops") as s:
        keys.create_key(s, OwnerType.USER, estate["user"].id, expires_at=utcnow())  # type: ignore[attr-defined]
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(AppKey)) == 3


OWNERS = {
    OwnerType.USER: User,
    OwnerType.SERVICE_USER: ServiceUser,
    OwnerType.INSTANCE: Instance,
    OwnerType.SERVER: Server,
    OwnerType.MOUNT: Mount,
    OwnerType.CLUSTER: Cluster,
}


def _delete_by_service(db: Database, owner_type: OwnerType, owner) -> None:  # type: ignore[no-untyped-def]
    with db.transaction(actor="ops") as s:
        if owner_type is OwnerType.USER:
            identity.delete_user(s, owner.email)
        elif owner_type is OwnerType.SERVICE_USER:
            identity.delete_service_user(s, owner.email)
        elif owner_type is OwnerType.INSTANCE:
            instances.delete_instance_record(s, owner.name)
        elif owner_type is OwnerType.SERVER:
            infrastructure.delete_server(s, owner.name)
        elif owner_type is OwnerType.MOUNT:
            infrastructure.delete_mount(s, owner.name)
        else:
            infrastructure.delete_cluster(s, owner.name)


def _delete_by_orm(db: Database, owner_type: OwnerType, owner) -> None:  # type: ignore[no-untyped-def]
    model = OWNERS[owner_type]
    with db.transaction(actor="ops") as s:
        if owner_type in (OwnerType.USER, OwnerType.SERVER, OwnerType.CLUSTER):
            s.delete(s.get(model, owner.id))  # unit of work
            s.flush()
        else:
            s.execute(delete(model).where(model.id == owner.id))  # bulk


def _delete_by_sql(db: Database, owner_type: OwnerType, owner) -> None:  # type: ignore[no-untyped-def]
    table = OWNER_COLUMNS[owner_type][1]
    with db.engine.begin() as connection:
        connection.exec_driver_sql(f"DELETE FROM {table} WHERE id = {int(owner.id)}")


DELETERS = {"service": _delete_by_service, "orm": _delete_by_orm, "sql": _delete_by_sql}
# Children first: an owner in use by another (instance -> user, servers, cluster) goes last.
DELETE_ORDER = (
    OwnerType.INSTANCE,
    OwnerType.USER,
    OwnerType.SERVICE_USER,
    OwnerType.SERVER,
    OwnerType.CLUSTER,
    OwnerType.MOUNT,
)


@pytest.mark.parametrize("path", sorted(DELETERS))
def test_deleting_any_owner_destroys_its_keys(db, engine_name, path):
    estate = build_estate(db)
    owners = {
        OwnerType.USER: estate["user"],
        OwnerType.SERVICE_USER: estate["operator"],
        OwnerType.INSTANCE: estate["instance"],
        OwnerType.SERVER: estate["servers"][ServerType.WEB],  # type: ignore[index]
        OwnerType.MOUNT: estate["mount"],
        OwnerType.CLUSTER: estate["cluster"],
    }
    with db.transaction(actor="ops") as s:
        for owner_type, owner in owners.items():
            for number in range(2):  # an owner may hold several keys
                keys.create_key(s, owner_type, owner.id, label=f"extra {number}")
        system = keys.create_key(s, OwnerType.DASHBOARD, label="dashboard")
    remaining = {owner_type: len(keys_of(db, owner_type, o.id)) for owner_type, o in owners.items()}
    assert all(n >= 2 for n in remaining.values())

    for owner_type in DELETE_ORDER:
        owner = owners[owner_type]
        total_before = len(keys_of(db, owner_type, owner.id))
        with db.session() as s:
            all_before = s.scalar(select(func.count()).select_from(AppKey))

        DELETERS[path](db, owner_type, owner)

        with db.session() as s:
            assert s.get(OWNERS[owner_type], owner.id) is None, owner_type
            column = getattr(AppKey, OWNER_COLUMNS[owner_type][0])
            assert s.scalar(select(func.count()).where(column == owner.id)) == 0, owner_type
            after = s.scalar(select(func.count()).select_from(AppKey))
            assert after == all_before - total_before, owner_type  # only its own keys went
    with db.session() as s:
        assert keys.get_key(s, system.client_id).owner_type is OwnerType.DASHBOARD
        assert s.scalar(select(func.count()).select_from(AppKey)) == 1


def test_rotation_replaces_a_key_without_downtime(db, engine_name):
    estate = build_estate(db)
    user_id = estate["user"].id  # type: ignore[attr-defined]
    (old,) = keys_of(db, OwnerType.USER, user_id)
    started = utcnow()

    with db.transaction(actor="ops") as s:
        new = keys.rotate_key(s, old.client_id, GRACE)

    assert isinstance(new, KeyWithSecret)
    assert new.client_id != old.client_id
    assert new.client_secret != old.client_secret
    assert len(new.client_secret) >= SECRET_LENGTH
    assert (new.owner_type, new.owner_id, new.label) == (OwnerType.USER, user_id, old.label)
    with db.session() as s:
        rotated_out = keys.get_key(s, old.client_id)
        assert rotated_out.replaced_by_id == new.id
        assert rotated_out.expires_at is not None
        assert started < rotated_out.expires_at <= utcnow() + GRACE
        assert not keys.expired(rotated_out.expires_at)
        assert {k.client_id for k in keys.list_keys(s, OwnerType.USER, user_id)} == {
            old.client_id,
            new.client_id,
        }

    # Rotating the same key twice is refused, and changes nothing.
    with pytest.raises(Conflict) as twice, db.transaction(actor="ops") as s:
        keys.rotate_key(s, old.client_id, GRACE)
    assert old.client_id in twice.value.message
    assert len(keys_of(db, OwnerType.USER, user_id)) == 2

    # Using the old key does not revoke anything.
    with db.transaction(actor="app") as s:
        keys.record_use(s, keys.get_key(s, old.client_id))
    assert len(keys_of(db, OwnerType.USER, user_id)) == 2

    # The first use of the new key revokes (deletes) the old one.
    with db.transaction(actor="app") as s:
        keys.record_use(s, keys.get_key(s, new.client_id))
    remaining = keys_of(db, OwnerType.USER, user_id)
    assert [k.client_id for k in remaining] == [new.client_id]
    assert remaining[0].last_used_at is not None
    with db.session() as s, pytest.raises(NotFound):
        keys.get_key(s, old.client_id)

    # A second use changes nothing more; the new key can itself be rotated.
    with db.transaction(actor="app") as s:
        keys.record_use(s, keys.get_key(s, new.client_id))
    with db.transaction(actor="ops") as s:
        newer = keys.rotate_key(s, new.client_id, GRACE)
    assert {k.client_id for k in keys_of(db, OwnerType.USER, user_id)} == {
        new.client_id,
        newer.client_id,
    }


def test_rotation_keeps_an_earlier_expiry(db, engine_name):
    estate = build_estate(db)
    soon = utcnow() + timedelta(minutes=5)
    with db.transaction(actor="ops") as s:
        key = keys.create_key(s, OwnerType.CLUSTER, estate["cluster"].id, expires_at=soon)  # type: ignore[attr-defined]
        keys.rotate_key(s, key.client_id, timedelta(days=7))
    with db.session() as s:
        stored = keys.get_key(s, key.client_id)
        assert stored.expires_at is not None
        assert abs((stored.expires_at - soon).total_seconds()) < 0.01


def test_revoke_deletes_the_key(db, engine_name):
    estate = build_estate(db)
    (key,) = keys_of(db, OwnerType.INSTANCE, estate["instance"].id)  # type: ignore[attr-defined]
    with db.transaction(actor="ops") as s:
        keys.revoke_key(s, key.client_id)
    with db.session() as s:
        assert s.scalar(select(func.count()).where(AppKey.client_id == key.client_id)) == 0
        assert s.get(Instance, estate["instance"].id) is not None  # type: ignore[attr-defined]
    with pytest.raises(NotFound), db.transaction(actor="ops") as s:
        keys.revoke_key(s, key.client_id)


def test_reconcile_destroys_keys_past_their_expiry(db):
    from datetime import timedelta

    from dfe.config import Settings
    from dfe.enums import OwnerType
    from dfe.models import AppKey
    from dfe.provisioning.engine import reconcile
    from dfe.services import keys

    with db.transaction(actor="ops") as s:
        old = keys.create_key(s, OwnerType.CONSOLE, label="old")
        keeper = keys.create_key(s, OwnerType.CONSOLE, label="keeper")
        keys.rotate_key(s, old.client_id, timedelta(0))  # the old key ends at once
    report = reconcile(db, Settings(), fix=False)
    assert report.purged_keys == [old.client_id]
    with db.session() as s:
        remaining = {k.client_id for k in s.scalars(keys.select(AppKey))}
    assert old.client_id not in remaining
    assert keeper.client_id in remaining
    assert reconcile(db, Settings(), fix=False).purged_keys == []
