"""Gauges the Console computes when scraped: jobs by status, instances by state.

The worker has no HTTP port: its work shows here, as the jobs' statuses in the
database every worker shares.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from dfe.db.session import Database
from dfe.enums import JobStatus, ProvisionState
from dfe.metrics.prometheus import GaugeFamily
from dfe.models import Instance, Job


def console_gauges(database: Database) -> Callable[[], list[GaugeFamily]]:
    def collect() -> list[GaugeFamily]:
        try:
            with database.session() as session:
                jobs = dict(
                    session.execute(select(Job.status, func.count()).group_by(Job.status)).all()
                )
                states = dict(
                    session.execute(
                        select(Instance.provision_state, func.count()).group_by(
                            Instance.provision_state
                        )
                    ).all()
                )
        except SQLAlchemyError:
            return [("dfe_database_up", "Whether the Console's database answered.", [({}, 0)])]
        return [
            ("dfe_database_up", "Whether the Console's database answered.", [({}, 1)]),
            (
                "dfe_jobs",
                "Jobs by status (all workers).",
                [({"status": status.value}, jobs.get(status, 0)) for status in JobStatus],
            ),
            (
                "dfe_instances",
                "Live instances by provisioning state.",
                [({"state": state.value}, states.get(state, 0)) for state in ProvisionState],
            ),
        ]

    return collect
