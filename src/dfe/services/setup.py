"""First-time setup: the first operator and the Console's and Dashboard's own keys."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from dfe.models import AppKey, OwnerType, ServerType, ServiceRole, ServiceUser
from dfe.schemas import (
    ClusterCreate,
    KeyWithSecret,
    MountCreate,
    ServerCreate,
    ServiceUserCreate,
    ServiceUserUpdate,
)
from dfe.services import identity, infrastructure
from dfe.services.errors import Conflict
from dfe.services.keys import create_key, revoke_key

KEY_FILES = {OwnerType.CONSOLE: "console.key", OwnerType.DASHBOARD: "dashboard.key"}
LOCAL_CLUSTER = "local"


@dataclass
class SetupResult:
    admin: ServiceUser
    keys: dict[OwnerType, KeyWithSecret]


def is_set_up(session: Session) -> bool:
    return bool(
        session.scalar(select(exists().where(ServiceUser.id.is_not(None))))
        or session.scalar(
            select(exists().where(AppKey.owner_type.in_([OwnerType.CONSOLE, OwnerType.DASHBOARD])))
        )
    )


def run_setup(session: Session, admin: ServiceUserCreate, *, force: bool) -> SetupResult:
    """Create the first administrator and the system keys (write them out after commit).

    Refuses, changing nothing, when the system is set up already, unless `force`:
    then the system keys are replaced and the administrator is created or reset.
    """
    if is_set_up(session) and not force:
        raise Conflict("DFE is set up already; run again with --force to replace the system keys")
    person = session.scalar(select(ServiceUser).where(ServiceUser.email == admin.email))
    if person is None:
        person = identity.create_service_user(
            session, admin.model_copy(update={"role": ServiceRole.ADMINISTRATOR})
        )
    else:
        update = ServiceUserUpdate(
            password=admin.password, role=ServiceRole.ADMINISTRATOR, is_active=True
        )
        person = identity.update_service_user(session, person.id, update)
    keys = {}
    for owner_type in KEY_FILES:
        for old in session.scalars(select(AppKey).where(AppKey.owner_type == owner_type)):
            revoke_key(session, old.client_id)
        keys[owner_type] = create_key(session, owner_type, label=f"{owner_type.value} (setup)")
    return SetupResult(admin=person, keys=keys)


def write_key_files(result: SetupResult, data_dir: Path, console_url: str) -> list[Path]:
    return [
        write_key_file(data_dir / KEY_FILES[owner_type], key, console_url)
        for owner_type, key in result.keys.items()
    ]


def write_key_file(path: Path, key: KeyWithSecret, console_url: str) -> Path:
    """Write a key as JSON, readable by its owner only (mode 0600), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.unlink(missing_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(
            {
                "client_id": key.client_id,
                "client_secret": key.client_secret,
                "console_url": console_url,
            },
            handle,
            indent=2,
        )
        handle.write("\n")
    temporary.replace(path)
    return path


def create_local_cluster(session: Session, data_dir: Path) -> KeyWithSecret:
    """The embedded default estate: one machine, SQLite instance databases, local storage.

    Returns a new key of the local web server, for the web tier: write it, after the
    commit, where `Settings.effective_host_key_file` says (`host.key` by default)."""
    mount = infrastructure.create_mount(
        session, MountCreate(name="local", root_path=str(data_dir / "storage"))
    )
    servers = [
        ServerCreate(
            name="local-db",
            server_type="db",
            host="localhost",
            config={"driver": "sqlite", "path": str(data_dir / "instances")},
        ),
        ServerCreate(name="local-web", server_type="web", host="localhost", mount=mount.name),
        ServerCreate(name="local-app", server_type="app", host="localhost"),
    ]
    cluster = infrastructure.create_cluster(
        session, ClusterCreate(name=LOCAL_CLUSTER, subdomain="localhost")
    )
    created = {}
    for data in servers:
        server = infrastructure.create_server(session, data)
        infrastructure.assign_server(session, cluster.id, server.id)
        created[server.server_type] = server
    web = created[ServerType.WEB]
    return create_key(session, OwnerType.SERVER, web.id, label=f"{web.name} (setup)")
