"""Mails to users about their instances: ready, or failed to be created.

`instance_finished` is the provisioning engine's one hook: it never raises, so a
mail that cannot be sent never fails the job (it is logged instead). The engine
hands over what the mail says (read when the job was claimed): no query here.
"""

from __future__ import annotations

import structlog

from dfe.config import Settings
from dfe.mail import MailError, send_mail

log = structlog.get_logger("dfe.notifications")


def instance_finished(
    settings: Settings, *, to: str, name: str, host: str, error: str | None
) -> None:
    """Mail the owner that their instance is ready (`error` None) or could not be made."""
    try:
        send_mail(settings, to, *_instance_mail(settings, name, host, error))
    except MailError:
        pass  # logged by the mailer
    except Exception as problem:
        log.warning("instance mail not sent", instance=name, error=type(problem).__name__)


def _instance_mail(settings: Settings, name: str, host: str, error: str | None) -> tuple[str, str]:
    """(subject, text)."""
    product = settings.dashboard_product_name
    dashboard = settings.effective_dashboard_url + "/"
    if error is None:
        url = settings.effective_instance_url.replace("{host}", host)
        return (
            f"Your instance {name} is ready",
            f"Your {product} instance {name} is up and running at\n\n{url}\n\n"
            f"Manage it on your dashboard: {dashboard}\n",
        )
    return (
        f"Your instance {name} could not be created",
        f"Your {product} instance {name} could not be created: {error}"
        f"\n\nNothing of it is left running. Delete it on your dashboard and launch it "
        f"again, or ask the operator for help: {dashboard}\n",
    )
