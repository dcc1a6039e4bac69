"""Provisioning: where an instance's database, its user and its files are made and removed.

`driver_for(server.config)` gives the db server's driver; `LocalStorage(mount.root_path)`
the web server's mount. Every operation may be repeated after a crash half-way.
"""

from __future__ import annotations

from dfe.provisioning.drivers import (
    DatabaseDriver,
    DatabaseState,
    InstanceDatabase,
    MysqlDriver,
    PostgresqlDriver,
    SqliteDriver,
    driver_for,
)
from dfe.provisioning.errors import DriverError, ProvisioningError, StorageError
from dfe.provisioning.names import (
    DEFAULT_PREFIX,
    generate_password,
    instance_database_names,
    instance_id_from_name,
    validate_identifier,
)
from dfe.provisioning.storage import InstancePaths, LocalStorage, owner_hash, validate_label

__all__ = [
    "DEFAULT_PREFIX",
    "DatabaseDriver",
    "DatabaseState",
    "DriverError",
    "InstanceDatabase",
    "InstancePaths",
    "LocalStorage",
    "MysqlDriver",
    "PostgresqlDriver",
    "ProvisioningError",
    "SqliteDriver",
    "StorageError",
    "driver_for",
    "generate_password",
    "instance_database_names",
    "instance_id_from_name",
    "owner_hash",
    "validate_identifier",
    "validate_label",
]
