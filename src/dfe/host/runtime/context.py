"""One instance as the runtime sees it: its database engine, its files and its key.

Built from the `InstanceConfig` the Console gives the web tier; the web tier keeps
one per instance (per config version) and disposes of it when the config changes.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

from dfe.host.runtime.files import InstanceFiles
from dfe.host.runtime.tables import Tables
from dfe.schemas import InstanceAppKey, InstanceConfig, InstanceLimit

CONNECT_TIMEOUT = 5  # seconds: a database that is down answers 503 quickly
SCOPE_KEY = "dfe.instance"  # where the ASGI scope carries the context to the runtime


def instance_engine(database_url: str) -> Engine:
    """An engine on the instance's own database, with the instance's own credentials.

    SQLite files are opened read-write but never created: a file dropped by
    deprovisioning must not come back empty because a request arrived late.
    """
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        path = quote(url.database or "")
        engine = create_engine(
            f"sqlite:///file:{path}?mode=rw&uri=true",
            hide_parameters=True,
            connect_args={"timeout": 15},
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(
        url,
        hide_parameters=True,
        # Small: a web tier holds a pool per instance; bursts open (and close) more.
        pool_size=2,
        max_overflow=8,
        pool_pre_ping=True,
        pool_recycle=300,
        connect_args={"connect_timeout": CONNECT_TIMEOUT},
    )


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")  # readers do not wait for the writer
    cursor.close()


def _source(config: InstanceConfig) -> str:
    """What the engine and files are built from (a digest: the URL holds a password)."""
    material = f"{config.database_url}\n{config.storage_root}"
    return hashlib.sha256(material.encode()).hexdigest()


@dataclass
class InstanceContext:
    name: str
    host: str
    version: str
    api_key_sha256: str | None
    engine: Engine | None
    files: InstanceFiles | None
    tables: Tables | None = field(default=None)
    instance_id: int = 0
    limits: list[InstanceLimit] = field(default_factory=list)
    app_keys: list[InstanceAppKey] = field(default_factory=list)
    source: str = ""

    @classmethod
    def from_config(cls, config: InstanceConfig, *, max_upload_bytes: int) -> InstanceContext:
        engine = instance_engine(config.database_url) if config.database_url else None
        files = (
            InstanceFiles(config.storage_root, max_upload_bytes) if config.storage_root else None
        )
        return cls(
            name=config.name,
            host=config.host,
            version=config.version,
            api_key_sha256=config.api_key_sha256,
            engine=engine,
            files=files,
            tables=Tables(engine) if engine is not None else None,
            instance_id=config.id,
            limits=list(config.limits),
            app_keys=list(config.app_keys),
            source=_source(config),
        )

    def updated(self, config: InstanceConfig) -> InstanceContext | None:
        """This context for a newer config that keeps the same database and files (a limit
        or a key changed): the engine is kept. None when the engine must be rebuilt."""
        if self.source != _source(config) or self.instance_id != config.id:
            return None
        return replace(
            self,
            host=config.host,
            version=config.version,
            api_key_sha256=config.api_key_sha256,
            limits=list(config.limits),
            app_keys=list(config.app_keys),
        )

    def identify(self, presented: str) -> str | None:
        """Which of the instance's keys `presented` is: "api-key" (the runtime API key) or
        an app key's client id; None for no key of this instance. Hashes are compared in
        constant time."""
        digest = hashlib.sha256(presented.encode()).hexdigest()
        found = None
        if self.api_key_sha256 and hmac.compare_digest(digest, self.api_key_sha256):
            found = "api-key"
        now = datetime.now(UTC)
        for key in self.app_keys:
            usable = key.expires_at is None or key.expires_at > now
            if hmac.compare_digest(digest, key.secret_sha256) and usable:
                found = key.client_id
        return found

    def key_matches(self, presented: str) -> bool:
        """Whether `presented` is one of the instance's keys."""
        return self.identify(presented) is not None

    def close(self) -> None:
        if self.engine is not None:
            self.engine.dispose()
