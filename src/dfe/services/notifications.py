"""Mails to users about their instances: ready, or failed to be created.

`job_finished` is the provisioning engine's one hook: it never raises, so a mail
that cannot be sent never fails the job (it is logged instead).
"""

from __future__ import annotations

import structlog

from dfe.config import Settings
from dfe.db.session import Database
from dfe.enums import JobKind, JobStatus
from dfe.mail import MailError, send_mail
from dfe.models import Cluster, Instance, Job, User

log = structlog.get_logger("dfe.notifications")


def job_finished(database: Database, settings: Settings, job_id: int) -> None:
    """Mail the owner of the instance a finished provisioning job was for."""
    try:
        mail = _instance_mail(database, settings, job_id)
        if mail is not None:
            send_mail(settings, *mail)
    except MailError:
        pass  # logged by the mailer
    except Exception as error:
        log.warning("instance mail not sent", job_id=job_id, error=type(error).__name__)


def _instance_mail(
    database: Database, settings: Settings, job_id: int
) -> tuple[str, str, str] | None:
    """(to, subject, text) for a provisioning job that ended, or None."""
    with database.session() as session:
        job = session.get(Job, job_id)
        if job is None or job.kind is not JobKind.PROVISION or job.user_id is None:
            return None
        if job.status not in (JobStatus.SUCCEEDED, JobStatus.FAILED):
            return None
        user = session.get(User, job.user_id)
        instance = session.get(Instance, job.instance_id) if job.instance_id else None
        if user is None or instance is None:
            return None
        cluster = session.get_one(Cluster, instance.cluster_id)
        host = f"{instance.name}.{cluster.subdomain}"
        name, email, message = instance.name, user.email, job.message
    product = settings.dashboard_product_name
    dashboard = settings.effective_dashboard_url + "/"
    if job.status is JobStatus.SUCCEEDED:
        url = settings.effective_instance_url.replace("{host}", host)
        return (
            email,
            f"Your instance {name} is ready",
            f"Your {product} instance {name} is up and running at\n\n{url}\n\n"
            f"Manage it on your dashboard: {dashboard}\n",
        )
    return (
        email,
        f"Your instance {name} could not be created",
        f"Your {product} instance {name} could not be created"
        + (f": {message}" if message else ".")
        + f"\n\nNothing of it is left running. Delete it on your dashboard and launch it "
        f"again, or ask the operator for help: {dashboard}\n",
    )
