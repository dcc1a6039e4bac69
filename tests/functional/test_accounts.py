"""Accounts through the signed API on every engine: password resets by mail (through the
outbox), password changes, per-user instance limits (also under parallel launches), and
the mails sent when an instance is ready or failed."""

from __future__ import annotations

import email
import email.policy
import re
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update
from tests.functional.test_provisioning_api import ANN, BOB, RecordingDispatcher, build_estate
from tests.functional.test_provisioning_concurrency import (
    OWNER,
    build_cluster,
    in_parallel,
    live_instances,
)
from typer.testing import CliRunner

from dfe.cli.main import app as cli_app
from dfe.client import AppKeyAuth
from dfe.config import Settings, get_settings
from dfe.db.base import utcnow
from dfe.models import Instance, PasswordReset, User
from dfe.provisioning.engine import JobRunner
from dfe.schemas import UserCreate
from dfe.services import accounts, identity
from dfe.services.instance_limits import InstanceLimitReached, effective_limit

PASSWORD = "a-long-enough-password"
NEW_PASSWORD = "another-long-password"
LINK = re.compile(r"http://\S+/reset-password/(\S+)")


def outbox(root: Path) -> list[email.message.EmailMessage]:
    directory = root / "outbox"
    if not directory.exists():
        return []
    return [
        email.message_from_bytes(path.read_bytes(), policy=email.policy.default)  # type: ignore[misc]
        for path in sorted(directory.glob("*.eml"))
    ]


def reset_token(mail) -> str:
    found = LINK.search(mail.get_content())
    assert found, mail.get_content()
    return found.group(1)


def make_user(db, address: str = ANN) -> None:
    with db.transaction(actor="test") as s:
        identity.create_user(s, UserCreate(email=address, password=PASSWORD))


def ask_reset(console, address: str, ip: str | None = None):
    body = {"email": address} | ({"address": ip} if ip else {})
    return console.as_(console.dashboard).post("/api/v1/password-resets", json=body)


def confirm(console, token: str, password: str = NEW_PASSWORD):
    return console.as_(console.dashboard).post(
        "/api/v1/password-resets/confirm", json={"token": token, "password": password}
    )


def login_status(console, address: str, password: str) -> int:
    return (
        console.as_(console.dashboard)
        .post("/api/v1/logins", json={"email": address, "password": password})
        .status_code
    )


def test_a_reset_mail_sets_a_new_password_once_and_ends_every_session(console, db, tmp_path):
    make_user(db)
    session_before = console.login(ANN, PASSWORD)
    assert console.as_(session_before).get("/api/v1/account").status_code == 200

    known = ask_reset(console, ANN.upper())
    unknown = ask_reset(console, "nobody@example.com")
    assert known.status_code == unknown.status_code == 202
    assert known.json() == unknown.json() == {"detail": accounts.RESET_ACCEPTED}

    [mail] = outbox(tmp_path)
    assert mail["To"] == ANN
    assert "password" in mail["Subject"]
    first = reset_token(mail)
    ask_reset(console, ANN)
    second = reset_token(outbox(tmp_path)[1])
    assert first != second
    with db.session() as s:
        stored = set(s.scalars(select(PasswordReset.token_hash)))
    assert first not in stored and accounts.token_digest(first) in stored

    short = confirm(console, second, "short")
    assert short.status_code == 422
    answer = confirm(console, second)
    assert answer.status_code == 200, answer.text
    assert answer.json()["email"] == ANN

    assert login_status(console, ANN, PASSWORD) == 401
    assert login_status(console, ANN, NEW_PASSWORD) == 200
    ended = console.as_(session_before).get("/api/v1/account")
    assert ended.status_code == 401
    for used_or_killed in (second, first, "not-a-token-at-all-0000"):
        refused = confirm(console, used_or_killed, "yet-another-password")
        assert refused.status_code == 422
        assert "invalid, used or expired" in refused.json()["detail"]
    assert login_status(console, ANN, NEW_PASSWORD) == 200


def test_an_expired_reset_link_is_refused(console, db, tmp_path):
    make_user(db)
    ask_reset(console, ANN)
    token = reset_token(outbox(tmp_path)[0])
    with db.transaction(actor="test") as s:
        s.execute(update(PasswordReset).values(expires_at=utcnow() - timedelta(seconds=1)))
    refused = confirm(console, token)
    assert refused.status_code == 422
    assert login_status(console, ANN, PASSWORD) == 200


def test_the_link_lives_as_long_as_configured(db):
    make_user(db)
    settings = Settings(password_reset_ttl_seconds=90)
    with db.transaction(actor="test") as s:
        mail = accounts.request_reset(s, settings, ANN, None)
    assert mail is not None and "ResetMail" in repr(mail) and mail.token not in repr(mail)
    with db.session() as s:
        row = s.scalars(select(PasswordReset)).one()
        assert row.expires_at is not None
        assert timedelta(seconds=89) < row.expires_at - row.created_at <= timedelta(seconds=90)
    assert "1 minutes" in accounts.reset_mail_text(settings, mail.token)


def test_resets_are_throttled_per_account_silently_and_per_address_openly(console, db, tmp_path):
    make_user(db)
    limit = Settings().password_reset_max_per_account
    for _ in range(limit + 2):
        assert ask_reset(console, ANN).status_code == 202
    assert len(outbox(tmp_path)) == limit

    per_address = Settings().password_reset_max_per_address
    answers = Counter(
        ask_reset(console, f"u{n}@example.com", "192.0.2.9").status_code
        for n in range(per_address + 1)
    )
    assert answers == Counter({202: per_address, 429: 1})
    assert ask_reset(console, "other@example.com", "192.0.2.10").status_code == 202


def test_an_inactive_account_gets_no_mail(console, db, tmp_path):
    with db.transaction(actor="test") as s:
        identity.create_user(s, UserCreate(email=ANN, password=PASSWORD, is_active=False))
    assert ask_reset(console, ANN).status_code == 202
    assert outbox(tmp_path) == []


def test_a_password_change_needs_the_current_password_and_ends_other_sessions(console, db):
    make_user(db)
    this_session = console.login(ANN, PASSWORD)
    other_session = console.login(ANN, PASSWORD)
    wrong = console.as_(this_session).post(
        "/api/v1/account/password",
        json={"current_password": "not-the-password", "password": NEW_PASSWORD},
    )
    assert wrong.status_code == 422
    assert wrong.json()["detail"] == accounts.WRONG_PASSWORD
    changed = console.as_(this_session).post(
        "/api/v1/account/password",
        json={"current_password": PASSWORD, "password": NEW_PASSWORD},
    )
    assert changed.status_code == 200, changed.text
    renewed = AppKeyAuth(
        console.dashboard.client_id, console.dashboard._client_secret, changed.json()["token"]
    )
    assert console.as_(renewed).get("/api/v1/account").json()["email"] == ANN
    assert console.as_(this_session).get("/api/v1/account").status_code == 401
    assert console.as_(other_session).get("/api/v1/account").status_code == 401
    assert login_status(console, ANN, PASSWORD) == 401
    assert login_status(console, ANN, NEW_PASSWORD) == 200


def test_wrong_current_passwords_are_throttled(console, db):
    make_user(db)
    session = console.login(ANN, PASSWORD)
    statuses = [
        console.as_(session)
        .post(
            "/api/v1/account/password",
            json={"current_password": f"wrong-{n}", "password": NEW_PASSWORD},
        )
        .status_code
        for n in range(Settings().login_max_failures_per_account + 1)
    ]
    assert statuses[-1] == 429 and set(statuses[:-1]) == {422}


# Instance limits


def test_effective_limit():
    assert effective_limit(None, 0) is None
    assert effective_limit(None, 3) == 3
    assert effective_limit(0, 3) is None
    assert effective_limit(2, 0) == 2


def test_a_user_at_their_limit_gets_409_with_a_message(console, db, tmp_path):
    build_estate(db, tmp_path)
    console.app.state.dispatcher = RecordingDispatcher()
    patched = console.client.patch(f"/api/v1/users/{ANN}", json={"instance_limit": 1})
    assert patched.status_code == 200 and patched.json()["instance_limit"] == 1
    ann = console.login(ANN, PASSWORD)
    assert console.as_(ann).post("/api/v1/instances", json={"name": "one"}).status_code == 202
    refused = console.as_(ann).post("/api/v1/instances", json={"name": "two"})
    assert refused.status_code == 409
    assert refused.json()["code"] == "instance_limit_reached"
    assert refused.json()["detail"] == (
        f"the instance limit of {ANN} is reached (1 of 1): delete an instance to launch another"
    )
    # Administrators launching for her meet the same limit; Bob has none.
    for_her = console.client.post("/api/v1/instances", json={"name": "three", "owner": ANN})
    assert for_her.status_code == 409
    bob = console.login(BOB, PASSWORD)
    assert console.as_(bob).post("/api/v1/instances", json={"name": "four"}).status_code == 202
    # Back to the default (none): she may launch again.
    reset = console.client.patch(f"/api/v1/users/{ANN}", json={"instance_limit": None})
    assert reset.json()["instance_limit"] is None
    assert console.as_(ann).post("/api/v1/instances", json={"name": "five"}).status_code == 202
    # Users cannot raise their own limit.
    assert (
        console.as_(ann).patch(f"/api/v1/users/{ANN}", json={"instance_limit": 9}).status_code
        == 403
    )
    negative = console.client.patch(f"/api/v1/users/{ANN}", json={"instance_limit": -1})
    assert negative.status_code == 422


def test_the_default_limit_applies_to_users_without_their_own(console, db, tmp_path, monkeypatch):
    build_estate(db, tmp_path)
    console.app.state.dispatcher = RecordingDispatcher()
    monkeypatch.setenv("DFE_DEFAULT_INSTANCE_LIMIT", "2")
    get_settings.cache_clear()
    try:
        console.client.patch(f"/api/v1/users/{BOB}", json={"instance_limit": 0})
        for owner, expected in ((ANN, [202, 202, 409]), (BOB, [202, 202, 202])):
            statuses = [
                console.client.post(
                    "/api/v1/instances", json={"name": f"{owner[:3]}-{n}", "owner": owner}
                ).status_code
                for n in range(3)
            ]
            assert statuses == expected, owner
    finally:
        get_settings.cache_clear()


def limited_launch(db, name: str) -> str:
    from dfe.provisioning import engine
    from dfe.services import infrastructure

    try:
        with db.transaction(actor="test") as s:
            user = identity.get_user(s, OWNER)
            engine.launch(s, user, name, infrastructure.get_cluster(s, "local").id)
    except InstanceLimitReached:
        return "limit"
    return "ok"


def test_parallel_launches_by_one_user_never_exceed_the_limit(db, tmp_path):
    build_cluster(db, tmp_path)
    with db.transaction(actor="test") as s:
        s.execute(update(User).where(User.email == OWNER).values(instance_limit=3))
    outcomes = in_parallel(24, lambda n: limited_launch(db, f"par-{n:02d}"))
    assert outcomes == Counter({"ok": 3, "limit": 21}), outcomes
    assert len(live_instances(db)) == 3


def test_cli_sets_and_clears_a_users_limit(cli_env, db):
    make_user(db)
    runner = CliRunner()
    result = runner.invoke(cli_app, ["user", "update", ANN, "--instance-limit", "4"])
    assert result.exit_code == 0, result.output
    shown = runner.invoke(cli_app, ["user", "show", ANN, "--json"])
    assert '"instance_limit": 4' in shown.output
    cleared = runner.invoke(cli_app, ["user", "update", ANN, "--instance-limit", "default"])
    assert cleared.exit_code == 0
    assert (
        '"instance_limit": null' in runner.invoke(cli_app, ["user", "show", ANN, "--json"]).output
    )
    bad = runner.invoke(cli_app, ["user", "update", ANN, "--instance-limit", "lots"])
    assert bad.exit_code == 2
    assert "neither a number nor 'default'" in bad.output


# Mails about instances


def test_the_owner_gets_a_mail_when_the_instance_is_ready_or_failed(console, db, tmp_path):
    build_estate(db, tmp_path)
    dispatcher = RecordingDispatcher()
    console.app.state.dispatcher = dispatcher
    ann = console.login(ANN, PASSWORD)
    assert console.as_(ann).post("/api/v1/instances", json={"name": "good"}).status_code == 202
    assert (
        console.as_(ann)
        .post("/api/v1/instances", json={"name": "bad", "cluster": "broken"})
        .status_code
        == 202
    )
    settings = Settings(data_dir=tmp_path)
    runner = JobRunner(db, settings)
    for job_id in dispatcher.jobs:
        runner.run(job_id)
    mails = {mail["Subject"]: mail for mail in outbox(tmp_path)}
    assert set(mails) == {
        "Your instance good is ready",
        "Your instance bad could not be created",
    }
    assert all(mail["To"] == ANN for mail in mails.values())
    assert (
        "http://good.local.example.com:8080/" in mails["Your instance good is ready"].get_content()
    )
    assert "could not be created: " in mails["Your instance bad could not be created"].get_content()


def test_a_mail_that_cannot_be_sent_does_not_fail_the_job(console, db, tmp_path):
    build_estate(db, tmp_path)
    dispatcher = RecordingDispatcher()
    console.app.state.dispatcher = dispatcher
    ann = console.login(ANN, PASSWORD)
    console.as_(ann).post("/api/v1/instances", json={"name": "good"})
    # Nobody listens on port 1.
    settings = Settings(data_dir=tmp_path, smtp_url="smtp://127.0.0.1:1?timeout=2")
    [job_id] = dispatcher.jobs
    assert JobRunner(db, settings).run(job_id).value == "succeeded"
    with db.session() as s:
        assert s.scalars(select(Instance.provision_state)).one().value == "provisioned"


def test_reset_settings_are_validated():
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        Settings(password_reset_ttl_seconds=0)
