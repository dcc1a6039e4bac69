"""SQLAlchemy models by aggregate. Importing this package registers every table."""

from dfe.models.archive import ARCHIVED_TABLES, archive_table
from dfe.models.identity import ServiceRole, ServiceUser, User
from dfe.models.infrastructure import Cluster, ClusterServer, Mount, MountType, Server, ServerType
from dfe.models.instances import (
    GuestLocation,
    Instance,
    InstanceGuest,
    InstanceServer,
    OperationalState,
    ProvisionState,
    ReadyState,
)
from dfe.models.keys import AppKey, OwnerType
from dfe.models.operations import AuditEntry

__all__ = [
    "ARCHIVED_TABLES",
    "AppKey",
    "AuditEntry",
    "Cluster",
    "ClusterServer",
    "GuestLocation",
    "Instance",
    "InstanceGuest",
    "InstanceServer",
    "Mount",
    "MountType",
    "OperationalState",
    "OwnerType",
    "ProvisionState",
    "ReadyState",
    "Server",
    "ServerType",
    "ServiceRole",
    "ServiceUser",
    "User",
    "archive_table",
]
