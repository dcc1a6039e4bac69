"""Errors of the provisioning layer: each carries a one-line message fit for a job's record."""

from __future__ import annotations


class ProvisioningError(Exception):
    """A provisioning step failed for a reason outside the caller's control."""


class DriverError(ProvisioningError):
    """A database server refused or could not be reached.

    The message is one line and never holds a password: it ends up in `job_t`,
    in the API's answers and in the logs.
    """


class StorageError(ProvisioningError):
    """The storage tree is not what it must be (a planted symbolic link, a file, ...)."""
