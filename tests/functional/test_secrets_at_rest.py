"""No secret is ever stored in clear: scan the raw storage for every plaintext secret."""

from __future__ import annotations

import secrets
from datetime import timedelta
from pathlib import Path

from sqlalchemy import inspect, select

from dfe.db.session import Database
from dfe.models import AuditEntry, Instance, OwnerType, ServerType
from dfe.schemas import (
    ClusterCreate,
    MountCreate,
    ServerCreate,
    ServerUpdate,
    ServiceUserCreate,
    UserCreate,
    UserUpdate,
)
from dfe.services import identity, infrastructure, instances, keys


def _secret(label: str) -> str:
    return f"{label}-{secrets.token_hex(16)}"


def raw_storage(db: Database) -> bytes:
    """Everything the database holds, as bytes: the SQLite files or a text dump of every
    column of every table (values cast to text by the server itself)."""
    if db.dialect == "sqlite":
        with db.engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        path = Path(str(db.engine.url.database))
        data = path.read_bytes()
        for suffix in ("-wal", "-journal"):
            extra = Path(f"{path}{suffix}")
            if extra.exists():
                data += extra.read_bytes()
        return data
    chunks: list[str] = []
    with db.engine.connect() as connection:
        quote = connection.dialect.identifier_preparer.quote
        target = "TEXT" if db.dialect == "postgresql" else "CHAR"
        for table in inspect(connection).get_table_names():
            columns = [c["name"] for c in inspect(connection).get_columns(table)]
            casts = ", ".join(f"CAST({quote(c)} AS {target})" for c in columns)
            for row in connection.exec_driver_sql(f"SELECT {casts} FROM {quote(table)}"):
                chunks.append("\t".join("" if v is None else str(v) for v in row))
    return "\n".join(chunks).encode()


def test_no_plaintext_secret_anywhere_in_storage(db, engine_name):
    user_password = _secret("user-password")
    new_user_password = _secret("new-user-password")
    operator_password = _secret("operator-password")
    admin_password = _secret("db-admin-password")
    new_admin_password = _secret("rotated-admin-password")
    instance_db_password = _secret("instance-db-password")
    visible_marker = _secret("not-a-secret")  # plain JSON: the scan must find it
    plaintexts = [
        user_password,
        new_user_password,
        operator_password,
        admin_password,
        new_admin_password,
        instance_db_password,
    ]

    with db.transaction(actor="ops") as s:
        mount = infrastructure.create_mount(
            s, MountCreate(name="mnt", root_path="/srv/mnt", config={"label": visible_marker})
        )
        cluster = infrastructure.create_cluster(
            s, ClusterCreate(name="clu", subdomain="apps.example.com")
        )
        config = {"driver": "postgresql", "port": 5432, "admin_user": "dfeadmin"}
        servers = {
            ServerType.DB: infrastructure.create_server(
                s,
                ServerCreate(
                    name="db-1",
                    server_type=ServerType.DB,
                    host="10.0.0.5",
                    config={**config, "admin_password": admin_password},
                ),
            ),
            ServerType.WEB: infrastructure.create_server(
                s,
                ServerCreate(
                    name="web-1", server_type=ServerType.WEB, host="10.0.0.6", mount=mount.name
                ),
            ),
            ServerType.APP: infrastructure.create_server(
                s, ServerCreate(name="app-1", server_type=ServerType.APP, host="10.0.0.7")
            ),
        }
        user = identity.create_user(
            s, UserCreate(email="owner@example.com", password=user_password)
        )
        identity.create_service_user(
            s, ServiceUserCreate(email="ops@example.com", password=operator_password)
        )
        instance = instances.create_instance_record(s, "alpha", user, cluster, servers)
        instance.db_password = instance_db_password
        s.flush()
        created_keys = [
            keys.create_key(s, OwnerType.SERVER, servers[ServerType.DB].id),
            keys.create_key(s, OwnerType.CONSOLE, label="console"),
            keys.create_key(s, OwnerType.INSTANCE, instance.id),
        ]
    with db.transaction(actor="ops") as s:
        identity.update_user(
            s, "owner@example.com", UserUpdate(password=new_user_password, first_name="Ann")
        )
        infrastructure.update_server(
            s, "db-1", ServerUpdate(config={**config, "admin_password": new_admin_password})
        )
        rotated = keys.rotate_key(s, created_keys[1].client_id, grace=timedelta(hours=1))
    with db.session() as s:
        client_secrets = [key.client_secret for key in keys.list_keys(s)]
        assert rotated.client_secret in client_secrets
        # The application itself still reads them back (encrypted, not lost).
        assert s.get(Instance, instance.id).db_password == instance_db_password
        assert infrastructure.get_server(s, "db-1").config["admin_password"] == new_admin_password
    assert len(client_secrets) >= 6
    plaintexts += client_secrets

    def assert_no_plaintext(stage: str) -> None:
        storage = raw_storage(db)
        assert len(storage) > 1000
        # The scan does see ordinary data, JSON documents included.
        assert b"owner@example.com" in storage
        assert visible_marker.encode() in storage
        for plaintext in plaintexts:
            assert plaintext.encode() not in storage, f"{stage}: a secret is stored in clear"

    assert_no_plaintext("live")

    with db.transaction(actor="ops") as s:
        instances.delete_instance_record(s, "alpha")
        infrastructure.delete_server(s, "db-1")
        identity.delete_user(s, "owner@example.com")
    with db.session() as s:
        entries = s.scalars(select(AuditEntry)).all()
        assert {"instance.delete", "server.delete", "user.update", "server.update"} <= {
            e.action for e in entries
        }
        for entry in entries:
            document = repr(entry.before) + repr(entry.after)
            for plaintext in plaintexts:
                assert plaintext not in document, entry.action

    assert_no_plaintext("after deleting into the archive")
