"""Dashboard users and console service users through `dfe.services.identity`."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError
from sqlalchemy import func, select

from dfe.auth.passwords import verify_password
from dfe.db.session import Database
from dfe.models import AuditEntry, ServerType, ServiceRole, ServiceUser, User
from dfe.schemas import (
    MASK,
    ClusterCreate,
    ServerCreate,
    ServiceUserCreate,
    ServiceUserUpdate,
    UserCreate,
    UserPublic,
    UserUpdate,
)
from dfe.services import identity, infrastructure, instances
from dfe.services.errors import Conflict, NotFound

PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "another long passphrase"


def entries(db: Database) -> list[AuditEntry]:
    with db.session() as s:
        return list(s.scalars(select(AuditEntry).order_by(AuditEntry.id)))


def assert_no_password(entry: AuditEntry) -> None:
    document = json.dumps([entry.before, entry.after], default=str)
    assert PASSWORD not in document
    assert NEW_PASSWORD not in document
    assert "$argon2" not in document  # not even the hash
    for part in (entry.before, entry.after):
        if part and "password_hash" in part:
            assert part["password_hash"] == MASK


def test_user_lifecycle(db, engine_name):
    with db.transaction(actor="ops") as s:
        user = identity.create_user(
            s, UserCreate(email="Ann.Lee@Example.COM", password=PASSWORD, first_name="Ann")
        )
    assert user.email == "ann.lee@example.com"
    assert user.owner_type == "system"
    assert user.password_hash.startswith("$argon2id$")
    assert PASSWORD not in user.password_hash
    assert verify_password(PASSWORD, user.password_hash)[0]
    assert len(user.storage_key) >= 32
    with db.session() as s:
        for ref in ("ann.lee@example.com", "ANN.LEE@example.com", user.id, str(user.id)):
            assert identity.get_user(s, ref).id == user.id
        public = UserPublic.model_validate(identity.get_user(s, user.id))
        assert "password" not in public.model_dump_json()

    with db.transaction(actor="ops") as s:
        identity.update_user(
            s, "ann.lee@example.com", UserUpdate(last_name="Lee", password=NEW_PASSWORD)
        )
    with db.session() as s:
        loaded = identity.get_user(s, user.id)
        assert (loaded.first_name, loaded.last_name) == ("Ann", "Lee")
        assert verify_password(NEW_PASSWORD, loaded.password_hash)[0]
        assert not verify_password(PASSWORD, loaded.password_hash)[0]

    with db.transaction(actor="ops") as s:
        identity.update_user(s, user.id, UserUpdate(email="Ann@Example.org"))
    with db.session() as s:
        assert identity.get_user(s, "ann@example.org").id == user.id

    with db.transaction(actor="ops") as s:
        identity.delete_user(s, "ann@example.org")
    with db.session() as s, pytest.raises(NotFound) as missing:
        identity.get_user(s, "ann@example.org")
    assert "ann@example.org" in missing.value.message
    actions = [(e.actor, e.action, e.target_id) for e in entries(db) if e.target_type == "user"]
    assert actions == [
        ("ops", "user.create", user.id),
        ("ops", "user.update", user.id),
        ("ops", "user.update", user.id),
        ("ops", "user.delete", user.id),
    ]
    for entry in entries(db):
        assert_no_password(entry)


def test_emails_are_unique_whatever_the_case(db, engine_name):
    with db.transaction(actor="ops") as s:
        identity.create_user(s, UserCreate(email="foo@example.com", password=PASSWORD))
        identity.create_user(s, UserCreate(email="bar@example.com", password=PASSWORD))
    audited = len(entries(db))
    for email in ("foo@example.com", "Foo@Example.com", "FOO@EXAMPLE.COM"):
        with pytest.raises(Conflict) as taken, db.transaction(actor="ops") as s:
            identity.create_user(s, UserCreate(email=email, password=PASSWORD))
        assert "foo@example.com" in taken.value.message
    with pytest.raises(Conflict), db.transaction(actor="ops") as s:
        identity.update_user(s, "bar@example.com", UserUpdate(email="FOO@example.com"))
    assert len(entries(db)) == audited
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(User)) == 2
        assert identity.get_user(s, "bar@example.com").email == "bar@example.com"


@pytest.mark.parametrize(
    "fields",
    [
        {"email": "not-an-email", "password": PASSWORD},
        {"email": "a@", "password": PASSWORD},
        {"email": "a b@example.com", "password": PASSWORD},
        {"email": "ann@example.com", "password": "short"},
        {"email": "ann@example.com", "password": "x" * 9},
        {"email": "ann@example.com", "password": "x" * 1025},
        {"email": "ann@example.com", "password": PASSWORD, "is_root": True},
        {"email": "ann@example.com"},
    ],
)
def test_bad_user_input_is_rejected(fields):
    with pytest.raises(ValidationError):
        UserCreate(**fields)
    with pytest.raises(ValidationError):
        ServiceUserCreate(**fields)


def test_a_user_who_owns_instances_cannot_be_deleted(db, engine_name):
    with db.transaction(actor="ops") as s:
        cluster = infrastructure.create_cluster(s, ClusterCreate(name="c", subdomain="c.test"))
        servers = {
            t: infrastructure.create_server(
                s, ServerCreate(name=f"{t.value}-1", server_type=t, host="h")
            )
            for t in ServerType
        }
        user = identity.create_user(s, UserCreate(email="ann@example.com", password=PASSWORD))
        instances.create_instance_record(s, "alpha", user, cluster, servers)
        instances.create_instance_record(s, "bravo", user, cluster, servers)
    audited = len(entries(db))
    with pytest.raises(Conflict) as owns, db.transaction(actor="ops") as s:
        identity.delete_user(s, "ann@example.com")
    assert "ann@example.com" in owns.value.message
    assert "2 instance" in owns.value.message
    assert len(entries(db)) == audited
    with db.transaction(actor="ops") as s:
        instances.delete_instance_record(s, "alpha")
        instances.delete_instance_record(s, "bravo")
        identity.delete_user(s, "ann@example.com")
    with db.session() as s:
        assert identity.list_users(s) == []


def test_service_user_lifecycle(db, engine_name):
    with db.transaction(actor="root") as s:
        operator = identity.create_service_user(
            s,
            ServiceUserCreate(email="Ops@Example.com", password=PASSWORD, role="operator"),
        )
    assert (operator.email, operator.role) == ("ops@example.com", ServiceRole.OPERATOR)
    with pytest.raises(Conflict), db.transaction(actor="root") as s:
        identity.create_service_user(
            s, ServiceUserCreate(email="OPS@example.com", password=PASSWORD)
        )
    # The same email may be a dashboard user too: different tables, different people.
    with db.transaction(actor="root") as s:
        identity.create_user(s, UserCreate(email="ops@example.com", password=PASSWORD))
    with db.transaction(actor="root") as s:
        identity.update_service_user(
            s, "ops@example.com", ServiceUserUpdate(role="administrator", password=NEW_PASSWORD)
        )
    with db.session() as s:
        loaded = identity.get_service_user(s, "OPS@example.com")
        assert loaded.role is ServiceRole.ADMINISTRATOR
        assert verify_password(NEW_PASSWORD, loaded.password_hash)[0]
        assert [x.email for x in identity.list_service_users(s)] == ["ops@example.com"]
    with pytest.raises(ValidationError):
        ServiceUserUpdate(role="superuser")
    with db.transaction(actor="root") as s:
        identity.delete_service_user(s, operator.id)
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(ServiceUser)) == 0
        with pytest.raises(NotFound):
            identity.get_service_user(s, "ops@example.com")
    people = [e for e in entries(db) if e.target_type == "service_user"]
    assert [(e.actor, e.action) for e in people] == [
        ("root", "service_user.create"),
        ("root", "service_user.update"),
        ("root", "service_user.delete"),
    ]
    for entry in entries(db):
        assert_no_password(entry)
