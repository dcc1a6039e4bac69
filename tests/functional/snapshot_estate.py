"""An estate for snapshot tests: two clusters sharing a web server (and its mount), each
with a db server of its own kind, so an instance can be exported from one engine and
imported on another; and instance data made through the instance runtime's own tables."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select
from tests.functional.test_provisioning import require_server, server_config

from dfe.host.runtime.tables import ColumnSpec, Tables, TableSpec
from dfe.models import Instance
from dfe.schemas import ClusterCreate, MountCreate, ServerCreate, UserCreate
from dfe.services import identity, infrastructure, instances
from dfe.snapshots.dump import describe_database, dump_rows, open_engine

PASSWORD = "a-long-enough-password"
OWNER = "ann@example.com"
OTHER = "bob@example.com"


@dataclass
class SnapshotEstate:
    root: Path
    kinds: dict[str, str]  # cluster -> engine kind


def build(db, root: Path, source: str, target: str) -> SnapshotEstate:
    """Clusters `c-src` (db server `db-src` of kind `source`) and `c-dst` (`db-dst`, kind
    `target`); web and app servers shared; users ann and bob."""
    require_server(source, root)
    require_server(target, root)
    with db.transaction(actor="test") as s:
        infrastructure.create_mount(s, MountCreate(name="disk", root_path=str(root / "storage")))
        infrastructure.create_server(
            s, ServerCreate(name="web-1", server_type="web", host="localhost", mount="disk")
        )
        infrastructure.create_server(s, ServerCreate(name="app-1", server_type="app", host="lh"))
        for cluster, kind in (("c-src", source), ("c-dst", target)):
            host, config = server_config(kind, root / cluster)
            server = f"db-{cluster[2:]}"
            infrastructure.create_server(
                s, ServerCreate(name=server, server_type="db", host=host, config=config)
            )
            made = infrastructure.create_cluster(
                s, ClusterCreate(name=cluster, subdomain=f"{cluster}.example.com")
            )
            for name in (server, "web-1", "app-1"):
                infrastructure.assign_server(s, made.id, name)
        identity.create_user(s, UserCreate(email=OWNER, password=PASSWORD))
        identity.create_user(s, UserCreate(email=OTHER, password=PASSWORD))
    return SnapshotEstate(root, {"c-src": source, "c-dst": target})


def instance_engine(db, name: str) -> Engine:
    with db.session() as s:
        config = instances.instance_config(s, name)
    assert config.database_url is not None
    return open_engine(config.database_url)


def files_root(db, name: str) -> Path:
    with db.session() as s:
        config = instances.instance_config(s, name)
    assert config.storage_root is not None
    return Path(config.storage_root)


def instance_id(db, name: str) -> int:
    with db.session() as s:
        return s.scalars(select(Instance.id).where(Instance.name == name)).one()


def populate(engine: Engine, files: Path, rows: int = 40) -> None:
    """Tables made as the runtime makes them (every portable type), rows with awkward
    values, and files (nested, binary, empty)."""
    tables = Tables(engine)
    tables.create(
        TableSpec(
            name="notes",
            columns=[
                ColumnSpec(name="title", type="string", nullable=False, unique=True),
                ColumnSpec(name="body", type="text"),
                ColumnSpec(name="count", type="integer"),
                ColumnSpec(name="score", type="number"),
                ColumnSpec(name="done", type="boolean"),
                ColumnSpec(name="due", type="datetime"),
            ],
        )
    )
    tables.create(TableSpec(name="empty_one", columns=[ColumnSpec(name="x", type="string")]))
    documents: list[dict[str, Any]] = []
    for i in range(rows):
        documents.append(
            {
                "title": f"note {i} \u2013 ünïcødé ✓ '\"\\",
                "body": None if i % 7 == 0 else "line\nbreak\t" * (i % 5) + "😀",
                "count": [0, -1, 2**62, -(2**62), 7][i % 5] + i,
                "score": [0.1, 1e300, -2.5e-300, 3.141592653589793, None][i % 5],
                "done": None if i % 3 == 0 else bool(i % 2),
                "due": None
                if i % 4 == 0
                else datetime(2024, 2, 29, 23, 59, 58, 123456 + i).isoformat() + "Z",
            }
        )
    tables.insert_rows("notes", documents)
    tables.delete_row("notes", "3")  # a gap in the ids
    (files / "docs" / "deep").mkdir(parents=True, exist_ok=True)
    (files / "docs" / "deep" / "a.txt").write_text("hello files\n")
    (files / "blob.bin").write_bytes(os.urandom(70_000))
    (files / "empty.txt").write_bytes(b"")


def file_sums(root: Path) -> dict[str, str]:
    found = {}
    for directory, _dirs, names in os.walk(root):
        for name in names:
            path = Path(directory) / name
            if path.is_file() and not path.is_symlink():
                found[path.relative_to(root).as_posix()] = hashlib.sha256(
                    path.read_bytes()
                ).hexdigest()
    return found


def canonical_rows(engine: Engine) -> dict[str, list[bytes]]:
    """Every row of every table in its canonical form (format.py), in key order."""
    with engine.connect() as connection:
        return {
            description["name"]: list(dump_rows(connection, description))
            for description in describe_database(connection)
        }
