"""Database-server drivers: where an instance's database and its own user are made."""

from __future__ import annotations

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


def driver_for(config: dict[str, Any]) -> DatabaseDriver:
    """The driver a db server's config names, e.g. {"driver": "sqlite", "path": "/var/dfe/db"}."""
    name = config.get("driver")
    driver = DRIVERS.get(ALIASES.get(name, name)) if isinstance(name, str) else None
    if driver is None:
        known = ", ".join(sorted(DRIVERS))
        raise ValueError(f"unknown database driver {name!r}: known drivers are {known}")
    return driver(config)


__all__ = [
    "DRIVERS",
    "DatabaseDriver",
    "DatabaseState",
    "InstanceDatabase",
    "MysqlDriver",
    "PostgresqlDriver",
    "SqliteDriver",
    "driver_for",
]
