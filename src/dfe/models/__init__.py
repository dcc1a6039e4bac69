"""SQLAlchemy models by aggregate. Importing this package registers every table."""

from dfe.enums import (
    GuestLocation,
    JobKind,
    JobStatus,
    LimitPeriod,
    LimitScope,
    MountType,
    OperationalState,
    OwnerType,
    ProvisionState,
    ReadyState,
    ServerType,
    ServiceRole,
)
from dfe.models.archive import ARCHIVED_TABLES, archive_table
from dfe.models.identity import PasswordReset, ServiceUser, User
from dfe.models.infrastructure import Cluster, ClusterServer, Mount, Server
from dfe.models.instances import Instance, InstanceGuest, InstanceServer
from dfe.models.keys import AppKey
from dfe.models.operations import (
    AuditEntry,
    DailyRun,
    Job,
    Limit,
    LoginFailure,
    Metric,
    SeenNonce,
)
from dfe.models.snapshots import Snapshot

__all__ = [
    "ARCHIVED_TABLES",
    "AppKey",
    "AuditEntry",
    "Cluster",
    "ClusterServer",
    "DailyRun",
    "GuestLocation",
    "Instance",
    "InstanceGuest",
    "InstanceServer",
    "Job",
    "JobKind",
    "JobStatus",
    "Limit",
    "LimitPeriod",
    "LimitScope",
    "LoginFailure",
    "Metric",
    "Mount",
    "MountType",
    "OperationalState",
    "OwnerType",
    "PasswordReset",
    "ProvisionState",
    "ReadyState",
    "SeenNonce",
    "Server",
    "ServerType",
    "ServiceRole",
    "ServiceUser",
    "Snapshot",
    "User",
    "archive_table",
]
