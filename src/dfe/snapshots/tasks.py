"""The daily task of snapshots (registered with `dfe.jobs.daily`)."""

from __future__ import annotations

from dfe.config import Settings
from dfe.db.session import Database
from dfe.jobs.daily import daily_task
from dfe.services import snapshots


@daily_task("snapshots.purge")
def purge_snapshots(database: Database, settings: Settings) -> str:
    """Delete the snapshots past their expiry (as `dfe snapshot purge` does)."""
    del settings
    purged = snapshots.purge_expired(database)
    return f"{len(purged)} expired snapshot(s) purged"
