"""Outgoing mail: SMTP by URL (`DFE_SMTP_URL`) or, by default, an outbox directory.

Without an SMTP URL every mail is written as one `.eml` file into the outbox
(`<data dir>/outbox`), and the path is logged: on one machine an operator (or a
test) reads the mails there. Logs name the recipient, the subject and where the
mail went, never its body: mails carry reset links.

    smtp://user:password@mail.example.com:587?starttls=true
    smtps://user:password@mail.example.com          (TLS from the start, port 465)
    smtp://127.0.0.1:2525                          (no login, no TLS)
"""

from __future__ import annotations

import os
import secrets
import smtplib
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from email.header import Header
from email.message import Message
from email.mime.text import MIMEText
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import structlog

from dfe.config import Settings

log = structlog.get_logger("dfe.mail")

DEFAULT_PORTS = {"smtp": 25, "smtps": 465}
DEFAULT_TIMEOUT = 10.0
_TRUE = frozenset({"1", "true", "yes", "on"})


class MailError(Exception):
    """A mail could not be sent (the message says why, without the mail's body)."""


@dataclass(frozen=True)
class SmtpServer:
    """Where and how to hand mails over, read from an smtp:// or smtps:// URL."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    implicit_tls: bool = False
    starttls: bool = False
    timeout: float = DEFAULT_TIMEOUT

    def __repr__(self) -> str:
        return f"SmtpServer({self.host}:{self.port}, user={self.username!r})"


def parse_smtp_url(url: str) -> SmtpServer:
    """The server an SMTP URL names; ValueError with a one-line reason otherwise."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ValueError("the SMTP URL must start with smtp:// or smtps://")
    if not parts.hostname:
        raise ValueError("the SMTP URL names no host")
    try:
        port = parts.port or DEFAULT_PORTS[scheme]
    except ValueError:
        raise ValueError("the SMTP URL's port is not a number from 1 to 65535") from None
    options = {key.lower(): values[-1] for key, values in parse_qs(parts.query).items()}
    unknown = set(options) - {"starttls", "timeout"}
    if unknown:
        raise ValueError(f"unknown SMTP URL option(s): {', '.join(sorted(unknown))}")
    starttls = options.get("starttls", "false").lower() in _TRUE
    if starttls and scheme == "smtps":
        raise ValueError("smtps:// is TLS already: drop ?starttls")
    try:
        timeout = float(options.get("timeout", DEFAULT_TIMEOUT))
    except ValueError:
        raise ValueError("the SMTP URL's timeout is not a number of seconds") from None
    return SmtpServer(
        host=parts.hostname,
        port=port,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        implicit_tls=scheme == "smtps",
        starttls=starttls,
        timeout=timeout,
    )


class Mailer(Protocol):
    def send(self, message: Message) -> str:
        """Send the mail; where it went (for the log)."""


class OutboxMailer:
    """Writes each mail as `<time>-<random>.eml` (mode 0600) into a directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def send(self, message: Message) -> str:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        path = self.directory / f"{stamp}-{secrets.token_hex(4)}.eml"
        partial = path.with_suffix(".eml.part")
        # Written aside, then renamed: a reader of *.eml never sees half a mail.
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(message.as_bytes())
        partial.rename(path)
        return str(path)


class SmtpMailer:
    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    def send(self, message: Message) -> str:
        server = self.server
        context = ssl.create_default_context()
        smtp: smtplib.SMTP
        if server.implicit_tls:
            smtp = smtplib.SMTP_SSL(
                server.host, server.port, timeout=server.timeout, context=context
            )
        else:
            smtp = smtplib.SMTP(server.host, server.port, timeout=server.timeout)
        with smtp:
            if server.starttls:
                smtp.starttls(context=context)
            if server.username is not None:
                smtp.login(server.username, server.password or "")
            smtp.send_message(message)
        return f"smtp://{server.host}:{server.port}"


def mailer_for(settings: Settings) -> Mailer:
    if settings.smtp_url:
        return SmtpMailer(parse_smtp_url(settings.smtp_url))
    return OutboxMailer(settings.effective_outbox_dir)


def compose(settings: Settings, to: str, subject: str, text: str) -> Message:
    """A plain-text mail (7bit when ASCII, else UTF-8).

    Built with the compat32 classes, a quarter of EmailMessage's cost (every launch
    mails its owner); they do not refuse line breaks in headers, so this does."""
    if any("\r" in value or "\n" in value for value in (settings.mail_from, to, subject)):
        raise ValueError("a mail header holds a line break")
    message = MIMEText(text, "plain", "us-ascii" if text.isascii() else "utf-8")
    message["From"] = settings.mail_from
    message["To"] = to
    message["Subject"] = subject if subject.isascii() else Header(subject, "utf-8").encode()
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = make_msgid(domain="dfe.invalid")
    return message


def send_mail(settings: Settings, to: str, subject: str, text: str) -> str:
    """Compose and send one plain-text mail; where it went. MailError if it could not go."""
    try:
        where = mailer_for(settings).send(compose(settings, to, subject, text))
    except (OSError, smtplib.SMTPException, ValueError) as error:
        reason = type(error).__name__ if isinstance(error, smtplib.SMTPException) else str(error)
        log.warning("mail not sent", to=to, subject=subject, reason=reason)
        raise MailError(f"the mail to {to} could not be sent: {reason}") from None
    log.info("mail sent", to=to, subject=subject, where=where)
    return where
