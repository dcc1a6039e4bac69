"""Who is calling: the principal a verified app key (and maybe a user token) stands for."""

from __future__ import annotations

from dataclasses import dataclass

from dfe.enums import OwnerType, ServiceRole


@dataclass(frozen=True)
class Principal:
    """The caller of one request.

    `user_id` is the dashboard user the request acts for: the owner of a user
    key, or the user named by a user token the Dashboard presented.
    """

    client_id: str
    key_owner: OwnerType
    owner_id: int | None = None
    role: ServiceRole | None = None
    user_id: int | None = None
    label: str = ""

    @property
    def acts_for_user(self) -> bool:
        return self.user_id is not None

    @property
    def is_administrator(self) -> bool:
        return self.key_owner is OwnerType.CONSOLE or (
            self.key_owner is OwnerType.SERVICE_USER and self.role is ServiceRole.ADMINISTRATOR
        )

    @property
    def is_operator(self) -> bool:
        """May read everything the administrators manage."""
        return self.is_administrator or self.key_owner is OwnerType.SERVICE_USER

    @property
    def actor(self) -> str:
        """How the audit log and the archive name this caller."""
        who = f"key:{self.client_id} ({self.key_owner.value}"
        if self.label:
            who += f" {self.label}"
        if self.user_id is not None and self.key_owner is OwnerType.DASHBOARD:
            who += f" for user {self.user_id}"
        return who + ")"
