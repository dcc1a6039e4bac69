"""The one error of the snapshot layer: a one-line message fit for a job and an API answer."""

from __future__ import annotations

from dfe.provisioning.errors import ProvisioningError


class SnapshotError(ProvisioningError):
    """An archive that cannot be made, read or trusted (corrupt, tampered, foreign)."""
