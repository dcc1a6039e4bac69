"""Input and output shapes of every entity, shared by the API, the CLI and the UI.

Create/Update validate what callers send; Public is what may leave the system:
it never holds a password hash, a client secret or a server's credentials.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    SecretStr,
    field_validator,
)

from dfe.enums import (
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

_RESOURCE_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
MIN_PASSWORD_LENGTH, MAX_PASSWORD_LENGTH = 10, 1024
SECRET_FIELD_HINTS = ("password", "secret", "token", "key", "credential")
MASK = "********"


def _resource_name(value: str) -> str:
    value = value.strip().lower()
    if not _RESOURCE_NAME.fullmatch(value):
        raise ValueError(
            "must be 1-64 characters: letters, digits, '.', '_' or '-', starting with a letter "
            "or digit"
        )
    return value


def _dns_name(value: str) -> str:
    value = value.strip().lower().rstrip(".")
    labels = value.split(".")
    if len(value) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in labels):
        raise ValueError("must be a DNS name such as 'apps.example.com'")
    return value


def _lower_email(value: str) -> str:
    return value.lower()


ResourceName = Annotated[str, AfterValidator(_resource_name)]
DnsName = Annotated[str, AfterValidator(_dns_name)]
Email = Annotated[EmailStr, AfterValidator(_lower_email)]
Password = Annotated[
    SecretStr, Field(min_length=MIN_PASSWORD_LENGTH, max_length=MAX_PASSWORD_LENGTH)
]
Capacity = Annotated[int, Field(ge=0, le=10_000_000)]
MaxInstances = Annotated[int, Field(ge=0, le=1_000_000)]
Host = Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9.:\[\]_-]+$")]


def mask_secrets(document: dict[str, Any]) -> dict[str, Any]:
    """A copy of a config document with every secret-looking value masked, recursively."""
    masked: dict[str, Any] = {}
    for key, value in document.items():
        if isinstance(value, dict):
            masked[key] = mask_secrets(value)
        elif any(hint in key.lower() for hint in SECRET_FIELD_HINTS) and value not in (None, ""):
            masked[key] = MASK
        else:
            masked[key] = value
    return masked


class Input(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Output(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# Mounts


class MountCreate(Input):
    name: ResourceName
    mount_type: MountType = MountType.LOCAL
    root_path: str = Field(min_length=1, max_length=1024)
    config: dict[str, Any] = Field(default_factory=dict)

    @field_validator("root_path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must be an absolute path")
        return value


class MountUpdate(Input):
    root_path: str | None = Field(default=None, min_length=1, max_length=1024)
    config: dict[str, Any] | None = None


class MountPublic(Output):
    id: int
    name: str
    mount_type: MountType
    root_path: str
    config: dict[str, Any]
    created_at: datetime
    updated_at: datetime


# Servers


class ServerCreate(Input):
    name: ResourceName
    server_type: ServerType
    host: Host
    mount: str | None = Field(default=None, description="Mount name or id (web servers).")
    config: dict[str, Any] = Field(default_factory=dict)
    max_instances: Capacity | None = None
    is_enabled: bool = True


class ServerUpdate(Input):
    host: Host | None = None
    mount: str | None = None
    config: dict[str, Any] | None = None
    max_instances: Capacity | None = None
    is_enabled: bool | None = None


class ServerPublic(Output):
    id: int
    name: str
    server_type: ServerType
    host: str
    mount: str | None
    config: dict[str, Any]
    max_instances: int | None
    is_enabled: bool
    created_at: datetime
    updated_at: datetime


# Clusters


class ClusterCreate(Input):
    name: ResourceName
    subdomain: DnsName
    max_instances: Capacity | None = None


class ClusterUpdate(Input):
    subdomain: DnsName | None = None
    max_instances: Capacity | None = None


class ClusterPublic(Output):
    id: int
    name: str
    subdomain: str
    max_instances: int | None
    owner_type: str
    owner_id: int | None
    servers: list[str]
    created_at: datetime
    updated_at: datetime


# People


class UserCreate(Input):
    email: Email
    password: Password
    first_name: str = Field(default="", max_length=64)
    last_name: str = Field(default="", max_length=64)
    nickname: str | None = Field(default=None, max_length=128)
    is_admin: bool = False
    is_active: bool = True


class UserUpdate(Input):
    email: Email | None = None
    password: Password | None = None
    first_name: str | None = Field(default=None, max_length=64)
    last_name: str | None = Field(default=None, max_length=64)
    nickname: str | None = Field(default=None, max_length=128)
    is_admin: bool | None = None
    is_active: bool | None = None
    instance_limit: MaxInstances | None = Field(
        default=None, description="0: no limit; null: the default (DFE_DEFAULT_INSTANCE_LIMIT)."
    )


class UserPublic(Output):
    id: int
    email: str
    first_name: str
    last_name: str
    nickname: str | None
    is_admin: bool
    is_active: bool
    instance_limit: int | None = None
    last_login_at: datetime | None
    created_at: datetime
    updated_at: datetime


class ServiceUserCreate(Input):
    email: Email
    password: Password
    first_name: str = Field(default="", max_length=64)
    last_name: str = Field(default="", max_length=64)
    role: ServiceRole = ServiceRole.ADMINISTRATOR
    is_active: bool = True


class ServiceUserUpdate(Input):
    email: Email | None = None
    password: Password | None = None
    first_name: str | None = Field(default=None, max_length=64)
    last_name: str | None = Field(default=None, max_length=64)
    role: ServiceRole | None = None
    is_active: bool | None = None


class ServiceUserPublic(Output):
    id: int
    email: str
    first_name: str
    last_name: str
    role: ServiceRole
    is_active: bool
    last_login_at: datetime | None
    created_at: datetime
    updated_at: datetime


# App keys


class KeyCreate(Input):
    owner_type: OwnerType
    owner: str | None = Field(default=None, description="Owner name, email or id.")
    label: str = Field(default="", max_length=128)
    expires_at: datetime | None = None


class KeyPublic(Output):
    id: int
    client_id: str
    owner_type: OwnerType
    owner_id: int | None
    label: str
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    replaced_by_id: int | None


class KeyWithSecret(KeyPublic):
    """Returned once, when a key is created or rotated in."""

    client_secret: str


# Instances


class InstancePublic(Output):
    id: int
    name: str
    host: str
    owner: str
    cluster: str
    db_server: str
    web_server: str
    app_server: str
    provision_state: ProvisionState
    ready_state: ReadyState
    operational_state: OperationalState
    state_changed_at: datetime
    created_at: datetime
    updated_at: datetime
    archived: bool = False


class InstanceCreate(Input):
    name: str = Field(min_length=1, max_length=63, description="A DNS label: the host name.")
    cluster: str | None = Field(default=None, description="Default: the configured cluster.")
    owner: str | None = Field(
        default=None, description="The owning user's email (administrators only)."
    )


class InstanceAppKey(BaseModel):
    """One of the instance's app keys as the web tier knows it: `Bearer <client_secret>`
    is accepted, and is what the key's own rate limits count."""

    client_id: str
    secret_sha256: str = Field(description="SHA-256 (hex) of the key's secret.")
    expires_at: datetime | None = None


class InstanceLimit(BaseModel):
    """A rate limit as the web tier enforces it on one instance."""

    id: int
    label: str
    scope: LimitScope
    period: LimitPeriod
    max_requests: int
    client_id: str | None = Field(default=None, description="Scope 'key': the key it counts.")
    generation: int = Field(
        default=0, description="Raised by a counter reset: part of every counter's key."
    )


class InstanceConfig(BaseModel):
    """What the web tier needs to serve an instance (`GET /instances/{name}/config`).

    The one response that carries a database password (in `database_url`): it goes
    to the web server the instance is placed on, and to administrators, only.
    """

    id: int
    name: str
    host: str = Field(description="The host name it answers to: <name>.<cluster subdomain>.")
    cluster: str
    provision_state: ProvisionState
    ready_state: ReadyState
    operational_state: OperationalState
    database_url: str | None = Field(
        default=None,
        repr=False,
        description="SQLAlchemy URL with the instance's own credentials; null until provisioned.",
    )
    storage_root: str | None = Field(
        default=None, description="The instance's directory on the web server's mount."
    )
    api_key_sha256: str | None = Field(
        default=None,
        description="SHA-256 (hex) of the instance's API key: the web tier compares hashes.",
    )
    app_keys: list[InstanceAppKey] = Field(
        default_factory=list,
        description="The instance's own app keys, which its API accepts too (as hashes).",
    )
    limits: list[InstanceLimit] = Field(
        default_factory=list, description="The active rate limits that apply to the instance."
    )
    read_only: bool = Field(
        default=False,
        description="Writes are refused (503 + Retry-After) while the instance is being moved.",
    )
    version: str = Field(description="Changes whenever anything above changes.")
    changed_at: datetime = Field(description="When the instance's record last changed.")


class InstanceChange(BaseModel):
    id: int
    name: str
    changed_at: datetime
    archived: bool = False


class InstanceChanges(BaseModel):
    """Instances whose config changed since a cursor (`GET /instances/changes`)."""

    cursor: str = Field(description="Pass as ?since= on the next call.")
    changes: list[InstanceChange]
    reset: bool = Field(
        default=False, description="Too many changes to list: drop every cached config."
    )


class InstanceApiKey(BaseModel):
    """The key clients of an instance's runtime API present (`Authorization: Bearer ...`)."""

    name: str
    api_key: str = Field(repr=False)


# Archive


class ArchivedPublic(BaseModel):
    kind: str
    archive_id: int
    id: int
    name: str
    archived_at: datetime
    archived_by: str | None
    archive_batch: str
    row: dict[str, Any]


# Limits


class LimitCreate(Input):
    label: ResourceName
    scope: LimitScope
    cluster: str | None = Field(default=None, description="Cluster name (scope 'cluster').")
    instance: str | None = Field(default=None, description="Instance name (scope 'instance').")
    client_id: str | None = Field(
        default=None, max_length=64, description="An instance key (scope 'key')."
    )
    period: LimitPeriod
    max_requests: Capacity
    is_active: bool = True


class LimitUpdate(Input):
    period: LimitPeriod | None = None
    max_requests: Capacity | None = None
    is_active: bool | None = None


class LimitPublic(Output):
    id: int
    label: str
    scope: LimitScope
    cluster: str | None
    instance: str | None
    client_id: str | None
    period: LimitPeriod
    max_requests: int
    is_active: bool
    created_at: datetime
    updated_at: datetime


class LimitsReset(Output):
    """The limits whose counters start again from zero (`POST /limits/{ref}/reset`)."""

    limits: list[LimitPublic]


# Usage metrics


class MetricPublic(Output):
    """One instance's usage on one day (UTC)."""

    instance: str
    instance_id: int
    day: date
    requests: int
    database_bytes: int | None
    storage_bytes: int | None


class MetricsPage(BaseModel):
    items: list[MetricPublic]


class RequestCount(Input):
    instance_id: int = Field(ge=1)
    requests: int = Field(ge=1, le=10**12)


class RequestCounts(Input):
    """Requests a web-tier process served per instance on one day (added to metrics_t)."""

    day: date
    items: list[RequestCount] = Field(max_length=10_000)


class MetricsGathered(BaseModel):
    day: date
    instances: int = Field(description="Instances measured.")
    failures: list[str] = Field(description="Instances that could not be measured, and why.")


# Jobs and the audit log


class JobPublic(Output):
    id: int
    kind: JobKind
    status: JobStatus
    instance_name: str | None
    step: str | None
    progress: int
    message: str | None
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class AuditPublic(Output):
    id: int
    at: datetime
    actor: str
    action: str
    target_type: str
    target_id: int | None
    target_name: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None


class InstanceLaunched(BaseModel):
    """A launch or deletion accepted: the instance as it stands and the job doing the work."""

    instance: InstancePublic
    job: JobPublic


# Accounts: password resets and changes


class PasswordResetRequest(Input):
    email: str = Field(min_length=3, max_length=192)
    address: str | None = Field(
        default=None, max_length=64, description="The end user's IP address, for throttling."
    )


class PasswordResetAccepted(BaseModel):
    """The one answer to a reset request, whether or not the account exists."""

    detail: str


class PasswordResetConfirm(Input):
    token: SecretStr = Field(min_length=16, max_length=256)
    password: Password


class PasswordChange(Input):
    current_password: SecretStr = Field(min_length=1, max_length=MAX_PASSWORD_LENGTH)
    password: Password
    address: str | None = Field(default=None, max_length=64)


# Snapshots


class SnapshotPublic(Output):
    """An exported (or uploaded) instance archive, kept until `expires_at`."""

    id: int
    instance_name: str
    origin: str = Field(description="export or upload")
    size: int
    sha256: str | None
    format_version: int | None
    source_engine: str | None
    created_at: datetime
    expires_at: datetime
    summary: dict[str, Any] = Field(default_factory=dict, description="tables, rows, files")


class SnapshotJob(BaseModel):
    """An export, import or move accepted: the job doing the work."""

    job: JobPublic


class ImportRequest(Input):
    snapshot_id: int = Field(
        ge=1, le=2**63 - 1, description="One of your snapshots (an export or an upload)."
    )
    cluster: str | None = Field(
        default=None, description="Where a new instance launches (default cluster if unset)."
    )


class MoveRequest(Input):
    db_server: str = Field(min_length=1, max_length=64, description="The target db server.")


class SnapshotLink(BaseModel):
    """A signed download link: valid until `expires_at`, for the snapshot's owner only."""

    url: str
    expires: int = Field(description="Unix time the link stops working.")
    signature: str
