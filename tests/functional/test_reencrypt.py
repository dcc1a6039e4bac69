"""`dfe db reencrypt`: after it, the newest key alone reads every secret, archived ones too."""

from __future__ import annotations

import secrets

from cryptography.fernet import Fernet
from sqlalchemy import Text, select, type_coerce
from typer.testing import CliRunner

from dfe.cli.main import app
from dfe.config import get_settings
from dfe.crypto import Keyring, KeyringError, install_keyring
from dfe.db.session import Database
from dfe.models import AuditEntry, Instance, OwnerType, Server, ServerType, archive_table
from dfe.schemas import ClusterCreate, MountCreate, ServerCreate, UserCreate
from dfe.services import identity, infrastructure, instances, keys
from dfe.services.reencrypt import reencrypt_secrets


def _estate(db: Database) -> dict[str, str]:
    """A server, an instance and keys with secrets, plus an archived server; the
    plaintexts by what holds them."""
    plain = {
        "admin_password": secrets.token_hex(16),
        "archived_admin_password": secrets.token_hex(16),
        "db_password": secrets.token_hex(16),
    }
    with db.transaction(actor="ops") as s:
        mount = infrastructure.create_mount(s, MountCreate(name="mnt", root_path="/srv/mnt"))
        cluster = infrastructure.create_cluster(
            s, ClusterCreate(name="clu", subdomain="apps.example.com")
        )

        def server(name: str, kind: ServerType, **extra: object) -> Server:
            return infrastructure.create_server(
                s, ServerCreate(name=name, server_type=kind, host="10.0.0.5", **extra)
            )

        servers = {
            ServerType.DB: server(
                "db-1", ServerType.DB, config={"admin_password": plain["admin_password"]}
            ),
            ServerType.WEB: server("web-1", ServerType.WEB, mount=mount.name),
            ServerType.APP: server("app-1", ServerType.APP),
        }
        server("db-old", ServerType.DB, config={"admin_password": plain["archived_admin_password"]})
        user = identity.create_user(s, UserCreate(email="o@example.com", password="pw-123456789"))
        instance = instances.create_instance_record(s, "alpha", user, cluster, servers)
        instance.db_password = plain["db_password"]
        plain["key"] = keys.create_key(s, OwnerType.CONSOLE, label="console").client_secret
    with db.transaction(actor="ops") as s:
        infrastructure.delete_server(s, "db-old")
    return plain


def _read_everything(db: Database) -> dict[str, str]:
    archive = archive_table(Server.__table__)  # type: ignore[arg-type]
    with db.session() as s:
        archived = s.execute(
            select(archive.c.config).where(archive.c.name == "db-old")
        ).scalar_one()
        return {
            "admin_password": infrastructure.get_server(s, "db-1").config["admin_password"],
            "archived_admin_password": archived["admin_password"],
            "db_password": s.scalars(select(Instance.db_password)).one() or "",
            "key": next(k.client_secret for k in keys.list_keys(s) if k.label == "console"),
        }


def test_after_reencrypt_the_new_key_alone_reads_every_secret(db, cli_env):
    old_key = cli_env["DFE_ENCRYPTION_KEYS"]
    plain = _estate(db)
    new_key = Fernet.generate_key().decode()
    with db.session() as s:
        updated_before = s.scalars(select(Server.updated_at).where(Server.name == "db-1")).one()
        stored_before = s.scalars(select(type_coerce(Instance.db_password, Text))).one()

    install_keyring(Keyring([new_key, old_key]))
    counts = reencrypt_secrets(db, actor="ops")
    install_keyring(Keyring([new_key]))

    assert _read_everything(db) == plain
    assert counts["server_t"] == 3  # three live servers with a config (the APP/WEB ones: {})
    assert counts["server_arch_t"] >= 1
    assert counts["instance_t"] >= 1
    with db.session() as s:
        assert s.scalars(select(Server.updated_at).where(Server.name == "db-1")).one() == (
            updated_before
        )
        assert s.scalars(select(type_coerce(Instance.db_password, Text))).one() != stored_before
        entry = s.scalars(select(AuditEntry).where(AuditEntry.action == "secrets.reencrypt")).one()
        assert entry.actor == "ops"
        assert entry.after is not None and entry.after["server_t"] == 3
    # The old key alone no longer reads them: they really were rewritten.
    install_keyring(Keyring([old_key]))
    try:
        _read_everything(db)
    except KeyringError:
        pass
    else:
        raise AssertionError("the old key still decrypts the re-encrypted secrets")
    finally:
        install_keyring(Keyring([old_key]))


def test_cli_reencrypt_without_the_old_key_is_a_clear_error(db, cli_env, monkeypatch):
    old_key = cli_env["DFE_ENCRYPTION_KEYS"]
    _estate(db)
    runner = CliRunner()
    monkeypatch.setenv("DFE_ENCRYPTION_KEYS", Fernet.generate_key().decode())
    get_settings.cache_clear()
    refused = runner.invoke(app, ["db", "reencrypt"])
    assert refused.exit_code == 2, refused.output
    assert "error: a stored secret cannot be decrypted" in refused.output
    assert "Traceback" not in refused.output

    monkeypatch.setenv("DFE_ENCRYPTION_KEYS", f"{Fernet.generate_key().decode()},{old_key}")
    get_settings.cache_clear()
    done = runner.invoke(app, ["db", "reencrypt"])
    assert done.exit_code == 0, done.output
    assert "server_t: 3 secret(s) re-encrypted" in done.output
