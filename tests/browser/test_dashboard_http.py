"""The Dashboard in-process, with a fake Console: what a browser cannot easily show
(Secure cookies over https, the session secret, failures of the Console that a real
one does not produce on demand). No browser needed."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import httpx2
import pytest
from fastapi.testclient import TestClient

from dfe.client import AsyncConsoleClient
from dfe.config import Settings
from dfe.dashboard.app import DashboardKeyMissing, create_app
from dfe.dashboard.security import SESSION_COOKIE, session_secret

Handler = Callable[[httpx2.Request], httpx2.Response]
SECRET = "s" * 43
NOW = "2026-01-01T00:00:00Z"
USER = {
    "id": 1,
    "email": "ada@example.com",
    "first_name": "Ada",
    "last_name": "",
    "nickname": None,
    "is_admin": False,
    "is_active": True,
    "last_login_at": None,
    "created_at": NOW,
    "updated_at": NOW,
}


def settings_for(tmp_path: Path, **values: object) -> Settings:
    data_dir = tmp_path / "var"
    data_dir.mkdir(exist_ok=True)
    key = {"client_id": "dash", "client_secret": SECRET, "console_url": "http://console.test"}
    (data_dir / "dashboard.key").write_text(json.dumps(key))
    return Settings(data_dir=data_dir, **values)


def dashboard(
    tmp_path: Path, handler: Handler, base_url: str = "http://testserver", **values: object
) -> TestClient:
    console = AsyncConsoleClient(
        "http://console.test", "dash", SECRET, transport=httpx2.MockTransport(handler), retries=0
    )
    app = create_app(settings_for(tmp_path, **values), console=console)
    return TestClient(app, base_url=base_url, raise_server_exceptions=False, follow_redirects=False)


def console_answering(routes: dict[str, httpx2.Response]) -> Handler:
    def handle(request: httpx2.Request) -> httpx2.Response:
        key = f"{request.method} {request.url.path.removeprefix('/api/v1')}"
        if key in routes:
            return routes[key]
        return httpx2.Response(404, json={"code": "not_found", "detail": "nothing here"})

    return handle


def csrf_of(page: httpx2.Response) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found, "the page has no CSRF field"
    return found.group(1)


def logged_in(client: TestClient) -> None:
    token = csrf_of(client.get("/login"))
    answer = client.post(
        "/login", data={"email": USER["email"], "password": "pw", "csrf_token": token}
    )
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/"


LOGIN = httpx2.Response(200, json={"user": USER, "token": "user-token", "expires_at": 4102444800})


def test_the_session_cookie_is_httponly_lax_and_secure_over_https(tmp_path: Path) -> None:
    plain = dashboard(tmp_path, console_answering({})).get("/login")
    cookie = plain.headers["set-cookie"]
    assert cookie.startswith(SESSION_COOKIE + "=")
    assert "httponly" in cookie and "samesite=lax" in cookie and "secure" not in cookie
    secure = dashboard(tmp_path, console_answering({}), base_url="https://testserver").get("/login")
    assert "secure" in secure.headers["set-cookie"]
    proxied = dashboard(tmp_path, console_answering({}), trusted_proxies="testclient").get(
        "/login", headers={"X-Forwarded-Proto": "https"}
    )
    assert "secure" in proxied.headers["set-cookie"]
    untrusted = dashboard(tmp_path, console_answering({})).get(
        "/login", headers={"X-Forwarded-Proto": "https"}
    )
    assert "secure" not in untrusted.headers["set-cookie"]


def test_the_session_secret_is_configured_or_derived_never_a_constant(tmp_path: Path) -> None:
    derived = session_secret(settings_for(tmp_path), SECRET)
    assert derived not in (SECRET, "")
    assert derived != session_secret(settings_for(tmp_path), SECRET[:-1] + "t")
    configured = settings_for(tmp_path, dashboard_session_secret="c" * 40)
    assert session_secret(configured, SECRET) == "c" * 40
    with pytest.raises(ValueError, match="at least 32"):
        session_secret(settings_for(tmp_path, dashboard_session_secret="short"), SECRET)


def test_no_key_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DashboardKeyMissing, match="run `dfe setup` first"):
        create_app(Settings(data_dir=tmp_path / "empty"))


def test_the_end_users_address_goes_with_the_login(tmp_path: Path) -> None:
    sent: list[dict[str, str]] = []

    def handle(request: httpx2.Request) -> httpx2.Response:
        sent.append(json.loads(request.content))
        return LOGIN

    client = dashboard(tmp_path, handle, trusted_proxies="testclient")
    token = csrf_of(client.get("/login"))
    client.post(
        "/login",
        data={"email": "ada@example.com", "password": "pw", "csrf_token": token},
        headers={"X-Forwarded-For": "203.0.113.9, testclient"},
    )
    assert sent[0]["address"] == "203.0.113.9"


@pytest.mark.parametrize(
    ("answer", "status", "text"),
    [
        (httpx2.Response(200, text="not json"), 502, "Something went wrong"),
        (
            httpx2.Response(500, json={"code": "internal_error", "detail": "boom"}),
            502,
            "Something went wrong",
        ),
        (
            httpx2.Response(429, json={"code": "too_many_requests", "detail": "slow down"}),
            429,
            "slow down",
        ),
    ],
)
def test_console_failures_are_plain_pages(
    tmp_path: Path, answer: httpx2.Response, status: int, text: str
) -> None:
    client = dashboard(
        tmp_path, console_answering({"POST /logins": LOGIN, "GET /instances": answer})
    )
    logged_in(client)
    page = client.get("/")
    assert page.status_code == status
    assert text in page.text
    assert "Traceback" not in page.text and "boom" not in page.text


def test_an_unexpected_error_is_a_plain_500_page(tmp_path: Path) -> None:
    def handle(request: httpx2.Request) -> httpx2.Response:
        if request.url.path.endswith("/logins"):
            return LOGIN
        raise RuntimeError("secret internals")

    client = dashboard(tmp_path, handle)
    logged_in(client)
    page = client.get("/")
    assert page.status_code == 500
    assert "Something went wrong" in page.text
    assert "secret internals" not in page.text and "Traceback" not in page.text


def test_a_polled_fragment_asks_htmx_to_go_to_the_login_page(tmp_path: Path) -> None:
    refused = httpx2.Response(401, json={"code": "invalid_user_token", "detail": "log in again"})
    client = dashboard(
        tmp_path, console_answering({"POST /logins": LOGIN, "GET /instances": refused})
    )
    logged_in(client)
    answer = client.get("/fragments/instances", headers={"HX-Request": "true"})
    assert answer.headers["hx-redirect"] == "/login"
    assert client.get("/").headers["location"] == "/login"  # the session is gone


def test_an_unreachable_console_during_a_poll_leaves_the_page_alone(tmp_path: Path) -> None:
    def handle(request: httpx2.Request) -> httpx2.Response:
        if request.url.path.endswith("/logins"):
            return LOGIN
        raise httpx2.ConnectError("refused")

    client = dashboard(tmp_path, handle)
    logged_in(client)
    answer = client.get("/fragments/instances", headers={"HX-Request": "true"})
    assert answer.status_code == 503  # htmx does not swap an error: the poll tries again
    page = client.get("/")
    assert page.status_code == 503
    assert '<meta http-equiv="refresh" content="5; url=/">' in page.text


def test_branding_from_urls_is_allowed_by_the_security_policy(tmp_path: Path) -> None:
    client = dashboard(
        tmp_path,
        console_answering({}),
        dashboard_logo="https://cdn.example.com/brand/logo.png",
        dashboard_stylesheet="https://styles.example.net/brand.css",
    )
    page = client.get("/login")
    assert '<img src="https://cdn.example.com/brand/logo.png"' in page.text
    assert '<link rel="stylesheet" href="https://styles.example.net/brand.css">' in page.text
    policy = page.headers["content-security-policy"]
    assert "img-src 'self' data: https://cdn.example.com;" in policy
    assert "style-src 'self' https://styles.example.net;" in policy
    assert client.get("/branding/logo").status_code == 404  # nothing served here


def test_without_branding_the_policy_allows_only_the_dashboard(tmp_path: Path) -> None:
    page = dashboard(tmp_path, console_answering({})).get("/login")
    assert 'data-role="logo"' not in page.text
    policy = page.headers["content-security-policy"]
    assert "img-src 'self' data:;" in policy and "style-src 'self';" in policy
    assert dashboard(tmp_path, console_answering({})).get("/branding/style.css").status_code == 404


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("dashboard_logo", "/nonexistent/logo.png", "neither an http(s) URL nor a file"),
        ("dashboard_stylesheet", "https://", "a URL without a host"),
    ],
)
def test_bad_branding_is_a_clear_error(
    tmp_path: Path, setting: str, value: str, message: str
) -> None:
    from dfe.dashboard.branding import BrandingError

    with pytest.raises(BrandingError, match=re.escape(message)):
        create_app(settings_for(tmp_path, **{setting: value}))


def test_reset_tokens_never_reach_the_access_log() -> None:
    import logging

    from dfe.dashboard.passwords import RedactResetTokens

    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/reset-password/abcdefSECRET123456?x=1", "1.1", 303),
        None,
    )
    assert RedactResetTokens().filter(record)
    assert "SECRET" not in record.getMessage()
    assert "/reset-password/[token]?x=1" in record.getMessage()
