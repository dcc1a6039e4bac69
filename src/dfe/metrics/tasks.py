"""The daily tasks of usage metrics (registered with `dfe.jobs.daily`)."""

from __future__ import annotations

from dfe.config import Settings
from dfe.db.session import Database
from dfe.jobs.daily import daily_task
from dfe.services import metrics


@daily_task("metrics.gather")
def gather_metrics(database: Database, settings: Settings) -> str:
    """Measure every instance's database and storage (as `dfe metrics gather` does)."""
    del settings
    result = metrics.gather(database)
    failed = f", {len(result.failures)} failed" if result.failures else ""
    return f"{result.instances} instances measured for {result.day.isoformat()}{failed}"
