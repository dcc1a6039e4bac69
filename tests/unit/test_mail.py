"""The mailer: an outbox directory by default, a real SMTP server (aiosmtpd, in-process)
by URL, and URLs that are refused with a reason."""

from __future__ import annotations

import email
import email.policy
import json
import re
import socket
import stat
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from hypothesis import given
from hypothesis import strategies as st

from dfe.config import Settings
from dfe.mail import MailError, SmtpServer, parse_smtp_url, send_mail

BODY = "Open https://dashboard.example.com/reset-password/SECRET-TOKEN-123 to go on."


class Inbox:
    def __init__(self) -> None:
        self.mails: list[EmailMessage] = []
        self.logins: list[str] = []

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.mails.append(message)
        return "250 OK"

    def authenticate(self, _server: Any, _session: Any, _envelope: Any, mechanism: str, data: Any):
        if isinstance(data, LoginPassword) and (data.login, data.password) == (
            b"mailer",
            b"p@ss/word",
        ):
            self.logins.append(mechanism)
            return AuthResult(success=True)
        return AuthResult(success=False, handled=False)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def smtp_server() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=port,
        authenticator=inbox.authenticate,
        auth_require_tls=False,
    )
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


def test_without_smtp_url_each_mail_is_a_file_in_the_outbox(tmp_path: Path, capsys) -> None:
    settings = Settings(data_dir=tmp_path)
    where = send_mail(settings, "ann@example.com", "Reset your password", BODY)
    second = send_mail(settings, "bob@example.com", "Your instance is ready", "Hello")

    path = Path(where)
    assert path.parent == tmp_path / "outbox"
    assert path.suffix == ".eml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert second != where
    assert sorted(p.name for p in path.parent.iterdir()) == sorted([path.name, Path(second).name])
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert message["To"] == "ann@example.com"
    assert message["Subject"] == "Reset your password"
    assert message["From"] == settings.mail_from
    assert message.get_content().strip() == BODY  # type: ignore[attr-defined]


def test_the_log_names_the_file_but_never_the_body(tmp_path: Path) -> None:
    from tests.conftest import _OUTPUTS

    start = len(_OUTPUTS)
    where = send_mail(Settings(data_dir=tmp_path), "ann@example.com", "Reset", BODY)
    logged = "".join(_OUTPUTS[start:])
    lines = [json.loads(line) for line in logged.splitlines() if line.strip()]
    assert any(line.get("where") == where for line in lines)
    assert "SECRET-TOKEN-123" not in logged


def test_a_configured_outbox_directory_is_used(tmp_path: Path) -> None:
    outbox = tmp_path / "mails" / "out"
    where = send_mail(Settings(data_dir=tmp_path, mail_outbox_dir=outbox), "a@b.example", "S", "T")
    assert Path(where).parent == outbox


def test_smtp_url_sends_through_a_real_server_with_login(
    tmp_path: Path, smtp_server: tuple[Inbox, int]
) -> None:
    inbox, port = smtp_server
    settings = Settings(
        data_dir=tmp_path,
        smtp_url=f"smtp://mailer:p%40ss%2Fword@127.0.0.1:{port}",
        mail_from="Portal <portal@example.com>",
    )
    where = send_mail(settings, "ann@example.com", "Your instance is ready", BODY)

    assert where == f"smtp://127.0.0.1:{port}"
    assert inbox.logins, "the client did not log in"
    [mail] = inbox.mails
    assert mail["To"] == "ann@example.com"
    assert mail["From"] == "Portal <portal@example.com>"
    assert mail.get_content().strip() == BODY
    assert not (tmp_path / "outbox").exists()


def test_a_wrong_smtp_password_is_a_mail_error_without_the_body(
    tmp_path: Path, smtp_server: tuple[Inbox, int]
) -> None:
    inbox, port = smtp_server
    settings = Settings(data_dir=tmp_path, smtp_url=f"smtp://mailer:wrong@127.0.0.1:{port}")
    with pytest.raises(MailError, match="could not be sent") as raised:
        send_mail(settings, "ann@example.com", "Reset", BODY)
    assert "SECRET" not in str(raised.value)
    assert inbox.mails == []


def test_an_unreachable_smtp_server_is_a_mail_error(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, smtp_url=f"smtp://127.0.0.1:{free_port()}?timeout=2")
    with pytest.raises(MailError, match=r"ann@example\.com could not be sent"):
        send_mail(settings, "ann@example.com", "Reset", BODY)


def test_smtp_urls_are_read() -> None:
    assert parse_smtp_url("smtp://mail.example.com") == SmtpServer("mail.example.com", 25)
    assert parse_smtp_url("smtps://u:p@mail.example.com") == SmtpServer(
        "mail.example.com", 465, "u", "p", implicit_tls=True
    )
    server = parse_smtp_url("smtp://u%40x:p%3Aw@mail.example.com:587?starttls=true&timeout=3")
    assert (server.port, server.username, server.password) == (587, "u@x", "p:w")
    assert server.starttls and not server.implicit_tls and server.timeout == 3
    assert "p:w" not in repr(server)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://mail.example.com", "must start with smtp:// or smtps://"),
        ("smtp://", "names no host"),
        ("smtp://mail.example.com:99999", "port is not a number"),
        ("smtps://mail.example.com?starttls=true", "TLS already"),
        ("smtp://mail.example.com?tls=1", "unknown SMTP URL option"),
        ("smtp://mail.example.com?timeout=soon", "timeout is not a number"),
    ],
)
def test_bad_smtp_urls_are_refused_with_a_reason(url: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        parse_smtp_url(url)
    with pytest.raises(ValueError, match=re.escape(reason)):
        Settings(smtp_url=url)


@given(st.text(max_size=60))
def test_any_text_is_an_smtp_url_or_a_value_error(text: str) -> None:
    try:
        server = parse_smtp_url(text)
    except ValueError:
        return
    assert server.host and 0 < server.port < 65536


@pytest.mark.parametrize("field", ["to", "subject"])
def test_a_line_break_in_a_header_is_refused_and_nothing_is_written(
    tmp_path: Path, field: str
) -> None:
    """The compat32 message classes would write a header's line break as it is: a
    second header (or a body) smuggled in. The mailer refuses it instead."""
    values = {"to": "ann@example.com", "subject": "Your instance is ready"}
    values[field] += "\r\nBcc: eve@example.com"
    with pytest.raises(MailError, match="line break"):
        send_mail(Settings(data_dir=tmp_path), values["to"], values["subject"], "Hello")
    assert not list((tmp_path / "outbox").glob("*.eml"))


def test_a_mail_with_non_ascii_text_reads_back_the_same(tmp_path: Path) -> None:
    where = send_mail(Settings(data_dir=tmp_path), "ann@example.com", "Prêt: ünïcode", "Grüße ✓")
    message = email.message_from_bytes(Path(where).read_bytes(), policy=email.policy.default)
    assert message["Subject"] == "Prêt: ünïcode"
    assert message.get_content().strip() == "Grüße ✓"  # type: ignore[attr-defined]
