"""The Dashboard in a real browser: a user's whole journey, isolation between users,
CSRF, keyboard use and labels, bad input, throttling and a Console that goes away."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

import httpx2
import pytest
from playwright.sync_api import Page, expect

from dfe.client import ConsoleClient
from dfe.schemas import UserUpdate

if TYPE_CHECKING:
    from tests.browser.conftest import Stack, Ui

pytestmark = pytest.mark.browser

# How long a launch may take to run, a worker's start included (slow on a loaded machine).
PROVISION_WAIT_MS = 120_000

SAME_PAGE = "window.__dfeSamePage"


def mark_page(page: Page) -> None:
    """Put a marker on the window: it survives only while the page is not reloaded."""
    page.evaluate(f"{SAME_PAGE} = true")


def still_same_page(page: Page) -> bool:
    return bool(page.evaluate(f"{SAME_PAGE} === true"))


def test_register_launch_watch_open_delete_and_log_out(
    ui: type[Ui], page: Page, stack: Stack
) -> None:
    email = ui.unique_email()
    page.goto("/register")
    ui.screenshot(page, "register")
    ui.register(page, email)
    expect(page.get_by_role("status")).to_contain_text("Your account is ready")
    expect(page.get_by_label("Email")).to_have_value(email)
    ui.screenshot(page, "login")
    ui.log_in(page, email)
    expect(page.locator("[data-role=empty]")).to_be_visible()

    # The name is checked as it is typed, with the host it would get.
    name_field = page.get_by_label("Name", exact=True)
    name_field.press_sequentially("My_App", delay=20)
    expect(page.locator("[data-check=problem]")).to_have_text("The name must be lower case.")
    name = ui.unique("app-")
    name_field.fill(name)
    expect(page.locator("[data-role=host-preview]")).to_have_text(f"{name}.localhost")

    # Launched with no worker running: the pending instance shows at once, and turns
    # "running" on this very page once a worker runs the job.
    with stack.worker_stopped():
        page.get_by_role("button", name="Launch").click()
        expect(ui.row(page, name)).to_have_attribute("data-state", "created")
        expect(ui.row(page, name).locator("[data-role=state]")).to_have_text("being created")
        expect(page.get_by_role("status")).to_contain_text(f"Launching {name}")
        expect(page.locator("#instances")).to_have_attribute("data-polling", "true")
        ui.screenshot(page, "launching")
        mark_page(page)
    expect(ui.row(page, name)).to_have_attribute(
        "data-state", "provisioned", timeout=PROVISION_WAIT_MS
    )
    expect(ui.row(page, name).locator("[data-role=state]")).to_have_text("running")
    assert still_same_page(page), "the page was reloaded instead of updated in place"
    expect(page.locator("#instances")).not_to_have_attribute("data-polling", "true")

    link = ui.row(page, name).get_by_role("link", name=f"{name}.localhost")
    expect(link).to_have_attribute("href", re.compile(rf"^http://{name}\.localhost[:/]"))
    page.get_by_label("Name", exact=True).fill(ui.unique("next-"))
    expect(page.locator("[data-role=host-preview]")).to_be_visible()
    ui.screenshot(page, "home")

    page.get_by_role("link", name=name, exact=True).click()
    expect(page.get_by_role("heading", name=name)).to_be_visible()
    expect(page.locator("[data-role=state]")).to_have_text("running")

    # Delete: the name must be typed; a wrong one keeps what was typed and says why.
    page.get_by_role("link", name="Delete this instance").click()
    confirm = page.get_by_label(f"Type {name} to confirm")
    confirm.fill(name)
    ui.screenshot(page, "delete")
    confirm.fill(name + "x")
    page.get_by_role("button", name="Delete the instance").click()
    expect(page.locator("#confirm-error")).to_contain_text(f"Type the instance's name, {name}")
    expect(confirm).to_have_value(name + "x")
    confirm.fill(name)
    with stack.worker_stopped():
        page.get_by_role("button", name="Delete the instance").click()
        expect(page.get_by_role("status")).to_contain_text(f"Deleting {name}")
        expect(ui.row(page, name).locator("[data-role=state]")).to_have_text("being deleted")
        mark_page(page)
    expect(ui.row(page, name)).to_have_count(0, timeout=PROVISION_WAIT_MS)
    assert still_same_page(page)
    expect(page.locator("[data-role=empty]")).to_be_visible()

    page.get_by_role("link", name="Profile").click()
    expect(page.locator("[data-role=email]")).to_have_text(email)
    ui.screenshot(page, "profile")

    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("status")).to_have_text("You are logged out.")
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login$"))


def test_a_user_cannot_see_or_touch_another_users_instance(
    ui: type[Ui], new_page: Callable[..., Page], stack: Stack
) -> None:
    alice = new_page()
    ui.signed_up(alice)
    name = ui.unique("alice-")
    ui.launch(alice, name)
    expect(ui.row(alice, name)).to_have_attribute(
        "data-state", "provisioned", timeout=PROVISION_WAIT_MS
    )

    bob = new_page()
    ui.signed_up(bob)
    expect(ui.row(bob, name)).to_have_count(0)
    for path in (f"/instances/{name}", f"/instances/{name}/delete"):
        response = bob.goto(path)
        assert response is not None and response.status == 404, path
        expect(bob.get_by_role("heading", name="Page not found")).to_be_visible()
    bob.goto(f"/fragments/name-check?name={name}")
    expect(bob.locator("[data-check=ok]")).to_be_visible()  # no hint that it exists

    # A forged form: Bob's own page and CSRF token, Alice's instance name.
    bob.goto("/")
    with bob.expect_navigation():
        bob.evaluate(
            """([name, field]) => {
                const form = document.querySelector("form[action='/instances']");
                form.action = `/instances/${name}/delete`;
                const confirm = document.createElement("input");
                confirm.name = "confirm_name";
                confirm.value = name;
                form.append(confirm);
                form.submit();
            }""",
            [name, "confirm_name"],
        )
    expect(bob.get_by_role("heading", name="Page not found")).to_be_visible()

    alice.reload()
    expect(ui.row(alice, name)).to_have_attribute("data-state", "provisioned")


def test_posts_without_the_csrf_token_are_refused(ui: type[Ui], page: Page, stack: Stack) -> None:
    ui.signed_up(page)
    name = ui.unique("csrf-")
    statuses = page.evaluate(
        """async (name) => {
            const post = (headers, body) =>
                fetch("/instances", {method: "POST", headers, body: new URLSearchParams(body)})
                    .then((response) => response.status);
            return [
                await post({}, {name}),
                await post({"X-CSRF-Token": "forged"}, {name}),
                await post({}, {name, csrf_token: "forged"}),
                await fetch("/logout", {method: "POST"}).then((response) => response.status),
            ];
        }""",
        name,
    )
    assert statuses == [403, 403, 403, 403]
    page.reload()
    expect(page.get_by_role("heading", name="Your instances")).to_be_visible()  # still in
    expect(ui.row(page, name)).to_have_count(0)

    # Another site's form (no session, no token) cannot log anyone in either.
    refused = httpx2.post(
        stack.dashboard_url + "/login", data={"email": "a@example.com", "password": ui.PASSWORD}
    )
    assert refused.status_code == 403
    assert "This form has expired" in refused.text


def test_launch_by_keyboard_alone(ui: type[Ui], page: Page, stack: Stack) -> None:
    ui.signed_up(page)
    page.goto("/")
    name = ui.unique("keys-")
    for _ in range(30):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "name":
            break
    else:
        pytest.fail("the name field cannot be reached with Tab")
    page.keyboard.type(name, delay=10)
    expect(page.locator("[data-role=host-preview]")).to_have_text(f"{name}.localhost")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent.trim()") == "Launch"
    page.keyboard.press("Enter")
    expect(ui.row(page, name)).to_be_visible()
    expect(ui.row(page, name)).to_have_attribute(
        "data-state", "provisioned", timeout=PROVISION_WAIT_MS
    )


LABEL_CHECK = """() => Array.from(document.querySelectorAll("input, select, textarea"))
    .filter((field) => !["hidden", "submit", "button"].includes(field.type))
    .filter((field) => !(field.labels && Array.from(field.labels).some(
        (label) => label.textContent.trim().length > 0)))
    .map((field) => field.name || field.id || field.outerHTML)"""


def test_every_form_field_has_a_label(
    ui: type[Ui], new_page: Callable[..., Page], stack: Stack
) -> None:
    page = new_page()
    for path in ("/login", "/register", "/forgot-password", "/reset-password/" + "t" * 43):
        page.goto(path)
        assert page.evaluate(LABEL_CHECK) == [], path
    ui.signed_up(page)
    name = ui.unique("label-")
    ui.launch(page, name)
    expect(ui.row(page, name)).to_have_attribute(
        "data-state", "provisioned", timeout=PROVISION_WAIT_MS
    )
    for path in (
        "/",
        f"/instances/{name}",
        f"/instances/{name}/delete",
        "/account",
        "/account/password",
    ):
        page.goto(path)
        assert page.locator("input:not([type=hidden])").count() + page.locator("button").count()
        assert page.evaluate(LABEL_CHECK) == [], path
    page.goto(f"/instances/{name}")
    page.get_by_role("button", name="Show the API key").click()
    expect(page.locator("[data-role=api-key]")).to_be_visible()
    assert page.evaluate(LABEL_CHECK) == [], "the revealed API key"


def test_bad_input_is_kept_and_explained(ui: type[Ui], page: Page, stack: Stack) -> None:
    email = ui.unique_email()
    page.goto("/register")
    page.get_by_label("Email").fill("not-an-email")
    page.get_by_label("First name (optional)").fill("Ada")
    page.get_by_label("Password", exact=True).fill("short")
    page.get_by_label("Repeat the password").fill("different")
    page.get_by_role("button", name="Create the account").click()
    expect(page.get_by_label("Email")).to_have_value("not-an-email")
    expect(page.get_by_label("First name (optional)")).to_have_value("Ada")
    expect(page.locator("#email-error")).to_contain_text("email")
    expect(page.locator("#password-error")).to_contain_text("at least 10 characters")
    expect(page.locator("#password_confirm-error")).to_have_text("The two passwords differ.")
    expect(page.get_by_label("Email")).to_have_attribute("aria-invalid", "true")
    ui.screenshot(page, "register-errors")

    ui.register(page, email)
    page.goto("/register")
    page.get_by_label("Email").fill(email.upper())
    page.get_by_label("Password", exact=True).fill(ui.PASSWORD)
    page.get_by_label("Repeat the password").fill(ui.PASSWORD)
    page.get_by_role("button", name="Create the account").click()
    expect(page.locator("#email-error")).to_contain_text("already")

    ui.log_in(page, email)
    name_field = page.get_by_label("Name", exact=True)
    name_field.fill("admin")
    page.get_by_role("button", name="Launch").click()
    expect(name_field).to_have_value("admin")
    expect(page.locator("[data-check=problem]")).to_have_text("The name 'admin' is reserved.")
    expect(name_field).to_have_attribute("aria-invalid", "true")


def test_the_consoles_login_throttling_is_shown(ui: type[Ui], page: Page, stack: Stack) -> None:
    email = ui.unique_email()
    ui.register(page, email)
    messages = []
    for _ in range(6):
        page.goto("/login")
        page.get_by_label("Email").fill(email)
        page.get_by_label("Password").fill("wrong-password-1")
        page.get_by_role("button", name="Log in").click()
        messages.append(page.locator("#login-error").text_content())
        expect(page.get_by_label("Email")).to_have_value(email)
    assert messages[0] == "The email or password is wrong."
    assert messages[-1] == "Too many failed logins for this account; try again later."


def test_an_unreachable_console_gets_a_page_that_recovers_by_itself(
    ui: type[Ui],
    new_page: Callable[..., Page],
    second_dashboard: tuple[str, Callable[[bool], None]],
) -> None:
    dashboard_url, console = second_dashboard
    page = new_page(dashboard_url)
    page.goto("/register")
    expect(page.get_by_role("heading", name="Registration is closed")).to_be_visible()
    expect(page.get_by_role("link", name="Create an account")).to_have_count(0)

    email = ui.unique_email()
    ui.register(new_page(), email)  # on the main Dashboard: same database
    ui.log_in(page, email)

    console(False)
    response = page.goto("/")
    assert response is not None and response.status == 503
    expect(
        page.get_by_role("heading", name="The Console is not available right now")
    ).to_be_visible()
    expect(page.get_by_role("link", name="Try again now")).to_have_attribute("href", "/")
    assert "Traceback" not in page.content()
    ui.screenshot(page, "unavailable")

    console(True)
    expect(page.get_by_role("heading", name="Your instances")).to_be_visible(timeout=20_000)


def test_errors_are_plain_pages(ui: type[Ui], page: Page, stack: Stack) -> None:
    response = page.goto("/no-such-page")
    assert response is not None and response.status == 404
    ui.signed_up(page)
    for path in ("/no-such-page", "/instances/NOT_A_NAME", "/instances/no-such-instance"):
        response = page.goto(path)
        assert response is not None and response.status == 404, path
        expect(page.get_by_role("heading", name="Page not found")).to_be_visible()
        assert "Traceback" not in page.content()
    answer = httpx2.put(stack.dashboard_url + "/instances")
    assert answer.status_code in (403, 405)
    assert "Traceback" not in answer.text
    assert answer.headers["content-type"].startswith("text/html")


def test_a_refused_user_token_ends_the_session(ui: type[Ui], page: Page, stack: Stack) -> None:
    email = ui.signed_up(page)
    with ConsoleClient.from_key_file(stack.data_dir / "console.key") as console:
        console.update_user(email, UserUpdate(is_active=False))
    page.reload()
    expect(page).to_have_url(re.compile(r"/login$"))
    expect(page.get_by_role("status")).to_have_text("Your session has ended: please log in again.")
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login$"))
