"""The enumerations shared by the models, the API schemas and the ops client.

They live apart from the models so that `dfe.schemas` and `dfe.client` import
without SQLAlchemy.
"""

from __future__ import annotations

import enum


class ServiceRole(enum.StrEnum):
    ADMINISTRATOR = "administrator"
    OPERATOR = "operator"  # read-only


class ServerType(enum.StrEnum):
    DB = "db"
    WEB = "web"
    APP = "app"


class ProvisionState(enum.StrEnum):
    CREATED = "created"
    PROVISIONING = "provisioning"
    PROVISIONED = "provisioned"
    PROVISIONING_ERROR = "provisioning_error"
    DEPROVISIONING = "deprovisioning"
    DEPROVISIONED = "deprovisioned"
    DEPROVISIONING_ERROR = "deprovisioning_error"


class OperationalState(enum.StrEnum):
    NOT_ACTIVATED = "not_activated"
    ACTIVATED = "activated"
    LOCKED = "locked"
    MAINTENANCE = "maintenance"
    TOS_VIOLATION = "tos_violation"
    DEACTIVATED = "deactivated"


class OwnerType(enum.StrEnum):
    CONSOLE = "console"
    DASHBOARD = "dashboard"
    USER = "user"
    SERVICE_USER = "service_user"
    INSTANCE = "instance"
    SERVER = "server"
    MOUNT = "mount"
    CLUSTER = "cluster"


class MountType(enum.StrEnum):
    LOCAL = "local"


class ReadyState(enum.StrEnum):
    """What the instance's application needs before it serves (the original's InstanceStates)."""

    ADMIN_REQUIRED = "admin_required"
    DATA_REQUIRED = "data_required"
    INIT_REQUIRED = "init_required"
    SCHEMA_REQUIRED = "schema_required"
    UPGRADE_REQUIRED = "upgrade_required"
    DATABASE_READY = "database_ready"
    READY = "ready"


class GuestLocation(enum.StrEnum):
    DFE_CLUSTER = "dfe_cluster"
    LOCAL = "local"


class JobKind(enum.StrEnum):
    PROVISION = "provision"
    DEPROVISION = "deprovision"
    EXPORT = "export"
    IMPORT = "import"
    MOVE = "move"


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class LimitPeriod(enum.StrEnum):
    """Rate-limit windows; the value's seconds are in `LIMIT_PERIOD_SECONDS`."""

    MINUTE = "minute"
    HOUR = "hour"
    DAY = "day"
    SEVEN_DAYS = "7-days"
    THIRTY_DAYS = "30-days"


LIMIT_PERIOD_SECONDS = {
    LimitPeriod.MINUTE: 60,
    LimitPeriod.HOUR: 3600,
    LimitPeriod.DAY: 86400,
    LimitPeriod.SEVEN_DAYS: 7 * 86400,
    LimitPeriod.THIRTY_DAYS: 30 * 86400,
}


class LimitScope(enum.StrEnum):
    CLUSTER = "cluster"  # each instance of a cluster
    INSTANCE = "instance"
    KEY = "key"  # one API key of an instance
