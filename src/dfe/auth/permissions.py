"""Who may do what: the one place the Console decides.

Every API route names one action; `allowed` answers for a principal. Rows a
principal may act on but does not own (another user's instance) are hidden by
the services' scoping, which answers 404, not 403.
"""

from __future__ import annotations

import enum

from dfe.auth.principals import Principal
from dfe.enums import OwnerType


class Action(enum.StrEnum):
    ESTATE_READ = "estate.read"  # clusters, servers, mounts
    ESTATE_WRITE = "estate.write"
    PEOPLE_READ = "people.read"  # users, service users
    PEOPLE_WRITE = "people.write"
    KEYS_READ = "keys.read"
    KEYS_WRITE = "keys.write"
    ARCHIVE_READ = "archive.read"
    ARCHIVE_WRITE = "archive.write"
    LIMITS_READ = "limits.read"
    LIMITS_WRITE = "limits.write"
    AUDIT_READ = "audit.read"
    REGISTER_USER = "users.register"
    CHECK_LOGIN = "logins.check"
    # Ask for a reset mail, set a password with its token.
    RESET_PASSWORD = "passwords.reset"  # noqa: S105 (an action's name)
    OWN_ACCOUNT = "account.own"  # the acting user's own profile
    INSTANCES_READ = "instances.read"  # lists; a user sees their own
    INSTANCES_WRITE = "instances.write"  # launch and delete; a user, their own
    INSTANCE_STATUS = "instances.status"  # one instance: its owner, or the instance itself
    JOBS_READ = "jobs.read"  # a user sees their own
    INSTANCE_CONFIG = "instances.config"  # web servers: instances placed on them
    INSTANCE_API_KEY = "instances.api_key"  # the runtime API key: its owner (not operators)
    METRICS_READ = "metrics.read"  # usage per instance per day; a user sees their own
    METRICS_REPORT = "metrics.report"  # web servers add the requests they served
    SNAPSHOTS_READ = "snapshots.read"  # a user sees (and downloads) their own
    SNAPSHOTS_WRITE = "snapshots.write"  # export, import, delete; a user, their own
    INSTANCES_MOVE = "instances.move"  # to another db server: administrators

    @property
    def is_read(self) -> bool:
        return self.value.endswith(".read")


_USER_ACTIONS = frozenset(
    {
        Action.OWN_ACCOUNT,
        Action.INSTANCES_READ,
        Action.INSTANCES_WRITE,
        Action.JOBS_READ,
        Action.INSTANCE_STATUS,
        Action.INSTANCE_API_KEY,
        Action.METRICS_READ,
        Action.SNAPSHOTS_READ,
        Action.SNAPSHOTS_WRITE,
    }
)
_DASHBOARD_ACTIONS = frozenset({Action.REGISTER_USER, Action.CHECK_LOGIN, Action.RESET_PASSWORD})


def allowed(principal: Principal, action: Action) -> bool:
    if principal.is_administrator:
        return True
    if principal.is_operator:
        return action.is_read
    if principal.acts_for_user:
        return action in _USER_ACTIONS
    if principal.key_owner is OwnerType.DASHBOARD:
        return action in _DASHBOARD_ACTIONS
    if principal.key_owner is OwnerType.SERVER:
        return action in (Action.INSTANCE_CONFIG, Action.METRICS_REPORT)
    if principal.key_owner is OwnerType.INSTANCE:
        return action is Action.INSTANCE_STATUS
    return False
