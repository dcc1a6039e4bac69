"""Snapshots in the Dashboard, in process against a real Console (its own app over
ASGI, jobs run inline): export with its job page, download through a signed link
(owner only), import, and uploads refused (damaged, too large)."""

from __future__ import annotations

import io
import json
import re
import tarfile

import httpx2
from fastapi.testclient import TestClient
from tests.functional import snapshot_estate as estate

from dfe.client import AsyncConsoleClient
from dfe.config import Settings
from dfe.dashboard.app import create_app


def dashboard(console, tmp_path, **values) -> TestClient:
    data_dir = tmp_path / "dashboard"
    data_dir.mkdir(exist_ok=True)
    key = console.dashboard
    document = {
        "client_id": key.client_id,
        "client_secret": key._client_secret,
        "console_url": "http://console.test",
    }
    (data_dir / "dashboard.key").write_text(json.dumps(document))
    client = AsyncConsoleClient(
        "http://console.test",
        key.client_id,
        key._client_secret,
        transport=httpx2.ASGITransport(app=console.app),
        retries=0,
    )
    app = create_app(Settings(data_dir=data_dir, **values), console=client)
    return TestClient(app, follow_redirects=False)


def csrf(page) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found, page.text[:500]
    return found.group(1)


def log_in(web: TestClient, email: str) -> None:
    answer = web.post(
        "/login",
        data={"email": email, "password": estate.PASSWORD, "csrf_token": csrf(web.get("/login"))},
    )
    assert answer.status_code == 303, answer.text


def job_status(web: TestClient, answer) -> tuple[str, str]:
    assert answer.status_code == 303, answer.text
    page = web.get(answer.headers["location"])
    assert page.status_code == 200
    status = re.search(r'data-status="(\w+)"', page.text)
    assert status, page.text
    return status.group(1), page.text


def test_export_download_import_and_refused_uploads(console, db, tmp_path):
    estate.build(db, tmp_path, "sqlite", "sqlite")
    launched = console.client.post(
        "/api/v1/instances", json={"name": "alpha", "owner": estate.OWNER, "cluster": "c-src"}
    )
    assert launched.status_code == 202
    # New instances (an import into a new name) launch on the Console's default cluster.
    console.app.state.settings = Settings(data_dir=tmp_path, default_cluster="c-dst")
    web = dashboard(console, tmp_path, snapshot_max_upload_bytes=200_000)
    log_in(web, estate.OWNER)

    page = web.get("/snapshots")
    assert page.status_code == 200
    assert 'data-role="empty"' in page.text and '<option value="alpha">' in page.text
    token = csrf(page)
    status, _ = job_status(
        web, web.post("/snapshots/export", data={"instance": "alpha", "csrf_token": token})
    )
    assert status == "succeeded"

    page = web.get("/snapshots")
    [snapshot_id] = re.findall(r'data-snapshot="(\d+)"', page.text)
    link = web.get(f"/snapshots/{snapshot_id}/link")
    assert link.status_code == 303
    assert re.fullmatch(
        rf"/snapshots/{snapshot_id}/download\?expires=\d+&sig=[0-9a-f]{{64}}",
        link.headers["location"],
    )
    archive = web.get(link.headers["location"])
    assert archive.status_code == 200
    assert archive.headers["content-type"] == "application/x-tar"
    assert "attachment" in archive.headers["content-disposition"]
    with tarfile.open(fileobj=io.BytesIO(archive.content)) as tar:
        assert tar.getnames()[-1] == "manifest.json"

    # The link is the owner's: another user gets nothing from it.
    other = dashboard(console, tmp_path)
    log_in(other, estate.OTHER)
    assert other.get(link.headers["location"]).status_code == 404

    status, _ = job_status(
        web,
        web.post(
            "/snapshots/import",
            data={"snapshot_id": snapshot_id, "instance": "beta", "csrf_token": token},
        ),
    )
    assert status == "succeeded"

    damaged = archive.content.replace(b"dfe-snapshot", b"xyz-snapshot")
    status, text = job_status(
        web,
        web.post(
            "/snapshots/upload",
            data={"instance": "beta", "csrf_token": token},
            files={"archive": ("beta.dfe.tar", damaged, "application/x-tar")},
        ),
    )
    assert status == "failed"
    assert "does not describe a DFE snapshot" in text

    too_large = web.post(
        "/snapshots/upload",
        data={"instance": "beta", "csrf_token": token},
        files={"archive": ("big.dfe.tar", b"x" * 300_000, "application/x-tar")},
    )
    assert too_large.status_code == 413
    assert "The archive is too large" in too_large.text
