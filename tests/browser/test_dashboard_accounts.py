"""Accounts in a real browser against real processes: a password reset through the
outbox (mail read from disk, link opened, used once), a password change, the instance
limit's message on the launch form, and an instance's API key shown to its owner."""

from __future__ import annotations

import email
import email.policy
import json
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from playwright.sync_api import Page, expect

from dfe.client import ConsoleClient
from dfe.schemas import UserUpdate

if TYPE_CHECKING:
    from tests.browser.conftest import Stack, Ui

pytestmark = pytest.mark.browser

# How long a launch may take to run, a worker's start included (slow on a loaded machine).
PROVISION_WAIT_MS = 120_000

NEW_PASSWORD = "a-brand-new-passphrase"
LINK = re.compile(r"(http://\S+/reset-password/\S+)")


def mail_to(outbox: Path, address: str, timeout: float = 60) -> email.message.EmailMessage:
    """The newest mail in the outbox addressed to `address` (waits for it to arrive)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in sorted(outbox.glob("*.eml"), reverse=True):
            message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            if message["To"] == address:
                return message  # type: ignore[return-value]
        time.sleep(0.2)
    pytest.fail(f"no mail to {address} in {outbox}")


def log_in_fails(page: Page, address: str, password: str) -> None:
    page.goto("/login")
    page.get_by_label("Email").fill(address)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#login-error")).to_have_text("The email or password is wrong.")


def test_password_reset_through_the_outbox(ui: type[Ui], page: Page, stack: Stack) -> None:
    address = ui.unique_email()
    ui.register(page, address)
    page.get_by_role("link", name="Forgot your password?").click()
    expect(page.get_by_role("heading", name="Forgot your password?")).to_be_visible()
    page.get_by_label("Email").fill(address)
    ui.screenshot(page, "forgot-password")
    page.get_by_role("button", name="Mail me a link").click()
    expect(page.locator("[data-role=reset-sent]")).to_contain_text("If an account has this email")

    # An unknown address gets the very same answer (and no mail).
    page.goto("/forgot-password")
    page.get_by_label("Email").fill(ui.unique_email())
    page.get_by_role("button", name="Mail me a link").click()
    expect(page.locator("[data-role=reset-sent]")).to_contain_text("If an account has this email")

    mail = mail_to(stack.data_dir / "outbox", address)
    found = LINK.search(mail.get_content())  # type: ignore[attr-defined]
    assert found, "the mail has no reset link"
    link = found.group(1)
    assert link.startswith(stack.dashboard_url + "/reset-password/")
    token = link.rsplit("/", 1)[1]

    page.goto(link)
    expect(page).to_have_url(re.compile(r"/reset-password$"))  # the token left the address
    page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
    page.get_by_label("Repeat the new password").fill("something else entirely")
    page.get_by_role("button", name="Set the password").click()
    expect(page.locator("#password_confirm-error")).to_have_text("The two passwords differ.")
    ui.screenshot(page, "reset-password")
    page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
    page.get_by_label("Repeat the new password").fill(NEW_PASSWORD)
    page.get_by_role("button", name="Set the password").click()
    expect(page).to_have_url(re.compile(r"/login$"))
    expect(page.get_by_role("status")).to_have_text("Your new password is set: log in with it.")
    expect(page.get_by_label("Email")).to_have_value(address)

    log_in_fails(page, address, ui.PASSWORD)
    ui.log_in(page, address, NEW_PASSWORD)
    page.get_by_role("button", name="Log out").click()

    # The link works once.
    page.goto(link)
    expect(page).to_have_url(re.compile(r"/reset-password$"))
    page.get_by_label("New password", exact=True).fill("a-third-password-here")
    page.get_by_label("Repeat the new password").fill("a-third-password-here")
    page.get_by_role("button", name="Set the password").click()
    expect(page.locator("[data-role=reset-error]")).to_contain_text("invalid, used or expired")
    expect(page.get_by_role("link", name="Ask for a new link")).to_be_visible()
    ui.log_in(page, address, NEW_PASSWORD)

    for name in ("console", "dashboard", "worker"):
        assert token not in stack.log(name).read_text(errors="replace"), f"token in {name} log"


def test_a_made_up_reset_link_is_refused(ui: type[Ui], page: Page, stack: Stack) -> None:
    page.goto("/reset-password/" + "x" * 43)
    page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
    page.get_by_label("Repeat the new password").fill(NEW_PASSWORD)
    page.get_by_role("button", name="Set the password").click()
    expect(page.locator("[data-role=reset-error]")).to_contain_text("invalid, used or expired")
    page.goto("/reset-password/short")
    expect(page.locator("[data-role=reset-error]")).to_contain_text("invalid, used or expired")


def test_change_password(ui: type[Ui], new_page, stack: Stack) -> None:
    page = new_page()
    address = ui.signed_up(page)
    other = new_page()
    ui.log_in(other, address)

    page.get_by_role("link", name="Profile").click()
    page.get_by_role("link", name="Change your password").click()
    page.get_by_label("Current password").fill("not-my-password")
    page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
    page.get_by_label("Repeat the new password").fill(NEW_PASSWORD)
    page.get_by_role("button", name="Change the password").click()
    expect(page.locator("#current_password-error")).to_have_text("The current password is wrong.")
    ui.screenshot(page, "change-password")
    page.get_by_label("Current password").fill(ui.PASSWORD)
    page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
    page.get_by_label("Repeat the new password").fill(NEW_PASSWORD)
    page.get_by_role("button", name="Change the password").click()
    expect(page.get_by_role("status")).to_contain_text("Your password is changed")
    expect(page.locator("[data-role=email]")).to_have_text(address)  # still logged in here

    other.reload()  # the other session ended
    expect(other).to_have_url(re.compile(r"/login$"))
    page.get_by_role("button", name="Log out").click()
    log_in_fails(page, address, ui.PASSWORD)
    ui.log_in(page, address, NEW_PASSWORD)


def test_the_limit_is_explained_and_the_api_key_is_shown_to_the_owner(
    ui: type[Ui], new_page, stack: Stack
) -> None:
    page = new_page()
    address = ui.signed_up(page)
    with ConsoleClient.from_key_file(stack.data_dir / "console.key") as console:
        console.update_user(address, UserUpdate(instance_limit=1))
    page.get_by_role("link", name="Profile").click()
    expect(page.locator("[data-role=instance-limit]")).to_have_text("1 instance")
    page.get_by_role("link", name="Instances").click()

    first = ui.unique("lim-")
    ui.launch(page, first)
    second = ui.unique("lim-")
    page.get_by_label("Name", exact=True).fill(second)
    page.get_by_role("button", name="Launch").click()
    expect(page.locator("[data-check=problem]")).to_have_text(
        f"The instance limit of {address} is reached (1 of 1): "
        "delete an instance to launch another."
    )
    expect(page.get_by_label("Name", exact=True)).to_have_value(second)
    expect(ui.row(page, second)).to_have_count(0)
    ui.screenshot(page, "limit")

    expect(ui.row(page, first)).to_have_attribute(
        "data-state", "provisioned", timeout=PROVISION_WAIT_MS
    )
    page.get_by_role("link", name=first, exact=True).click()
    expect(page.locator("[data-role=api-key]")).to_have_count(0)
    page.get_by_role("button", name="Show the API key").click()
    shown = page.locator("[data-role=api-key]")
    expect(shown).to_be_visible()
    with ConsoleClient.from_key_file(stack.data_dir / "console.key") as console:
        api_key = console.get_instance_api_key(first).api_key
    expect(shown).to_have_value(api_key)
    expect(page.locator("[data-role=api-example]")).to_contain_text(
        f'curl -H "Authorization: Bearer {api_key}" http://{first}.localhost'
    )
    ui.screenshot(page, "api-key")

    # Another user gets nothing of it, even by posting to its address.
    stranger = new_page()
    ui.signed_up(stranger)
    stranger.goto(f"/instances/{first}")
    expect(stranger.get_by_role("heading", name="Page not found")).to_be_visible()
    csrf = json.loads(stranger.locator("body").get_attribute("hx-headers") or "{}")
    answer = stranger.request.post(f"/instances/{first}/api-key", headers=csrf)
    assert answer.status in (403, 404) and api_key not in answer.text()
    for name in ("console", "dashboard", "worker"):
        assert api_key not in stack.log(name).read_text(errors="replace"), f"key in {name} log"


def test_branding_logo_and_stylesheet(ui: type[Ui], new_page, stack: Stack, tmp_path) -> None:
    from tests.browser.conftest import free_port

    logo = tmp_path / "logo.svg"
    logo.write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" width="40" height="40">'
        '<circle cx="20" cy="20" r="18" fill="#c0392b"/></svg>'
    )
    css = tmp_path / "brand.css"
    css.write_text(".navbar { background-color: rgb(12, 34, 56) !important; }\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    stack.start(
        "dashboard-brand",
        "serve",
        "dashboard",
        env={
            "DFE_DASHBOARD_PORT": str(port),
            "DFE_DASHBOARD_PRODUCT_NAME": "Acme Cloud",
            "DFE_DASHBOARD_LOGO": str(logo),
            "DFE_DASHBOARD_STYLESHEET": str(css),
        },
    )
    try:
        stack.wait_http("dashboard-brand", url + "/login")
        page = new_page(url)
        page.goto("/login")
        expect(page).to_have_title("Log in · Acme Cloud")
        brand = page.locator(".navbar-brand")
        expect(brand).to_have_text("Acme Cloud")
        expect(brand.locator("[data-role=logo]")).to_have_attribute("src", "/branding/logo")
        assert brand.locator("[data-role=logo]").evaluate("img => img.naturalWidth") == 40
        expect(page.locator("nav.navbar")).to_have_css("background-color", "rgb(12, 34, 56)")
        ui.screenshot(page, "branding")
    finally:
        stack.stop("dashboard-brand")
