"""Database-server drivers: where an instance's database and its own user are made."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from typing import Any

from dfe.provisioning.drivers.base import DatabaseDriver, DatabaseState, InstanceDatabase
from dfe.provisioning.drivers.mysql import MysqlDriver
from dfe.provisioning.drivers.postgresql import PostgresqlDriver
from dfe.provisioning.drivers.sqlite import SqliteDriver

DRIVERS: dict[str, type[SqliteDriver | PostgresqlDriver | MysqlDriver]] = {
    "sqlite": SqliteDriver,
    "postgresql": PostgresqlDriver,
    "mysql": MysqlDriver,
}
ALIASES = {"postgres": "postgresql", "mariadb": "mysql"}


def driver_for(config: dict[str, Any], *, pooled: bool = False) -> DatabaseDriver:
    """The driver a db server's config names, e.g. {"driver": "sqlite", "path": "/var/dfe/db"}.

    Unpooled, each call opens (and closes) its own admin connection; `server_driver`
    keeps pooled ones."""
    name = config.get("driver")
    driver = DRIVERS.get(ALIASES.get(name, name)) if isinstance(name, str) else None
    if driver is None:
        known = ", ".join(sorted(DRIVERS))
        raise ValueError(f"unknown database driver {name!r}: known drivers are {known}")
    return driver(config, pooled=pooled)


MAX_KEPT_DRIVERS = 8
_kept: OrderedDict[str, DatabaseDriver] = OrderedDict()
_kept_lock = threading.Lock()


def server_driver(host: str, config: dict[str, Any]) -> DatabaseDriver:
    """The driver of a db server, kept for the process so that its admin connections are
    reused from job to job (a changed config is another key, so another driver); the
    least recently used beyond MAX_KEPT_DRIVERS is closed."""
    key = json.dumps({"host": host, **config}, sort_keys=True, default=str)
    with _kept_lock:
        found = _kept.get(key)
        if found is not None:
            _kept.move_to_end(key)
            return found
    made = driver_for({"host": host, **config}, pooled=True)
    evicted: list[DatabaseDriver] = []
    with _kept_lock:
        found = _kept.setdefault(key, made)
        _kept.move_to_end(key)
        while len(_kept) > MAX_KEPT_DRIVERS:
            evicted.append(_kept.popitem(last=False)[1])
    if found is not made:
        evicted.append(made)  # another thread kept its own first
    for driver in evicted:
        driver.close()
    return found


__all__ = [
    "DRIVERS",
    "DatabaseDriver",
    "DatabaseState",
    "InstanceDatabase",
    "MysqlDriver",
    "PostgresqlDriver",
    "SqliteDriver",
    "driver_for",
    "server_driver",
]
