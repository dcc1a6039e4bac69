"""The Console's admin UI in Chromium against real Console and worker processes: an
administrator builds an estate, provisions an instance for a user, watches the job,
deprovisions it, finds it in the archive and restores it; a read-only operator sees
everything and can change nothing. Saves docs/screenshots/console-*.png."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable

import pytest
from playwright.sync_api import Page, expect
from tests.browser.conftest import ADMIN_EMAIL, PASSWORD, SCREENSHOTS, Stack

pytestmark = pytest.mark.browser


def shot(page: Page, name: str) -> None:
    """Save the page as docs/screenshots/console-<name>.png (used by docs/console.md)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"console-{name}.png", full_page=True)


def log_in(page: Page, email: str, password: str = PASSWORD) -> None:
    page.goto("/ui/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()


def create(page: Page, path: str, button: str, fields: dict[str, str]) -> None:
    page.goto(f"/ui/{path}")
    for label, value in fields.items():
        field = page.get_by_label(label, exact=True)
        if field.evaluate("e => e.tagName") == "SELECT":
            field.select_option(value)
        else:
            field.fill(value)
    page.get_by_role("button", name=button).click()
    expect(page.locator(".alert-success")).to_be_visible()


def finished_job(page: Page) -> None:
    """Wait on a job's page until htmx's polling shows it succeeded."""
    expect(page.locator("#job-progress")).to_have_attribute("data-status", "succeeded")
    expect(page.locator("[data-role=job-status]")).to_contain_text("succeeded")


@pytest.fixture
def console_page(new_page: Callable[..., Page], stack: Stack) -> Callable[[], Page]:
    return lambda: new_page(stack.url("console"))


def test_login_refuses_a_wrong_password(console_page):
    page = console_page()
    page.goto("/ui/instances")
    expect(page).to_have_url(re.compile(r"/ui/login$"))
    shot(page, "login")
    page.get_by_label("Email").fill(ADMIN_EMAIL)
    page.get_by_label("Password").fill("not-the-password")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#login-error")).to_have_text("The email or password is wrong.")
    expect(page.get_by_label("Email")).to_have_value(ADMIN_EMAIL)


def test_the_administrators_journey(console_page, stack: Stack):
    suffix = uuid.uuid4().hex[:6]
    owner = f"owner-{suffix}@example.com"
    password_file = stack.root / f"pw-{suffix}"
    password_file.write_text(PASSWORD + "\n")
    stack.run("user", "create", owner, "--password-file", str(password_file))
    mount, cluster, name = f"disk-{suffix}", f"journey-{suffix}", f"app-{suffix}"
    page = console_page()
    log_in(page, ADMIN_EMAIL)

    create(
        page,
        "mounts",
        "Create the mount",
        {"Name": mount, "Root path": str(stack.root / f"storage-{suffix}")},
    )
    expect(page.locator(f"tr[data-name='{mount}']")).to_be_visible()
    shot(page, "mounts")
    # A form that fails keeps what was typed.
    page.goto("/ui/servers")
    page.get_by_label("Name", exact=True).fill(f"db-{suffix}")
    page.get_by_label("Host", exact=True).fill("localhost")
    page.get_by_label("Config (JSON)").fill("{not json")
    page.get_by_role("button", name="Create the server").click()
    expect(page.get_by_text("Enter a JSON object")).to_be_visible()
    expect(page.get_by_label("Name", exact=True)).to_have_value(f"db-{suffix}")
    db_config = {"driver": "sqlite", "path": str(stack.root / f"instances-{suffix}")}
    for kind in ("db", "web", "app"):
        fields = {"Name": f"{kind}-{suffix}", "Type": kind, "Host": "localhost"}
        if kind == "db":
            fields["Config (JSON)"] = json.dumps(db_config)
        if kind == "web":
            fields["Mount (web servers)"] = mount
        create(page, "servers", "Create the server", fields)
        expect(page.get_by_role("heading", name=f"Server {kind}-{suffix}")).to_be_visible()
    create(
        page,
        "clusters",
        "Create the cluster",
        {"Name": cluster, "Subdomain": f"{cluster}.localhost", "Most instances": "10"},
    )
    expect(page.get_by_role("heading", name=f"Cluster {cluster}")).to_be_visible()
    for kind in ("db", "web", "app"):
        page.get_by_label("Server", exact=True).select_option(f"{kind}-{suffix}")
        page.get_by_role("button", name="Add the server").click()
        expect(page.locator(f"[data-role=members] tr[data-name='{kind}-{suffix}']")).to_be_visible()
    page.goto("/ui/servers")
    shot(page, "servers")

    # Provision an instance for the user, from the user's page.
    page.goto(f"/ui/users/{owner}")
    page.get_by_role("link", name="Provision an instance").click()
    expect(page.get_by_label("Owner's email")).to_have_value(owner)
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("Cluster").select_option(cluster)
    page.get_by_role("button", name="Provision").click()
    expect(page).to_have_url(re.compile(r"/ui/jobs/\d+$"))
    finished_job(page)
    shot(page, "job")
    page.get_by_role("link", name=name).first.click()
    expect(page.locator("[data-role=provision-state]")).to_contain_text("provisioned")
    page.get_by_role("button", name="Lock").click()
    expect(page.get_by_text(f"Instance {name} is locked.")).to_be_visible()
    page.get_by_role("button", name="Unlock").click()
    shot(page, "instance")
    page.goto(f"/ui/clusters/{cluster}")
    expect(page.locator("[data-role=capacity]")).to_have_text("1 of 10")
    shot(page, "cluster")

    # Deprovision, with the typed name as confirmation.
    page.goto(f"/ui/instances/{name}")
    page.get_by_role("link", name="Deprovision…").click()
    page.get_by_label(re.compile("to confirm")).fill("wrong-name")
    page.get_by_role("button", name="Deprovision").click()
    expect(page.locator("[data-role=form-error]")).to_contain_text("does not match")
    page.get_by_label(re.compile("to confirm")).fill(name)
    page.get_by_role("button", name="Deprovision").click()
    finished_job(page)

    # Find it in the archive, with who archived it, and restore it.
    page.goto(f"/ui/archive/instances?q={name}")
    row = page.locator(f"tr[data-name='{name}']")
    expect(row).to_be_visible()
    shot(page, "archive")
    row.get_by_role("link", name=name).click()
    expect(page.locator("[data-role=archived-by]")).to_contain_text("worker:job")
    page.get_by_role("button", name="Restore").click()
    expect(page.get_by_text(f"Instance {name} is restored.")).to_be_visible()
    expect(page.get_by_role("heading", name=f"Instance {name}")).to_be_visible()

    # Every step is in the audit log, under this administrator's name.
    page.goto(f"/ui/audit?target={cluster}")
    expect(page.locator("#audit-table")).to_contain_text("cluster.create")
    expect(page.locator("#audit-table")).to_contain_text(f"service_user {ADMIN_EMAIL}")
    page.goto("/ui/audit")
    shot(page, "audit")
    for path, shot_name in (
        ("/ui/", "overview"),
        ("/ui/instances", "instances"),
        ("/ui/jobs", "jobs"),
        ("/ui/clusters", "clusters"),
        ("/ui/users", "users"),
        ("/ui/keys", "keys"),
    ):
        page.goto(path)
        shot(page, shot_name)
    expect(page.locator("tr[data-name]").first).to_be_visible()
    page.goto("/ui/")
    expect(page.locator("[data-role=chart] rect[data-kind=launched]").first).to_be_attached()


def test_a_read_only_operator_changes_nothing(console_page, stack: Stack):
    email = f"ops-{uuid.uuid4().hex[:6]}@example.com"
    password_file = stack.root / "ops-password"
    password_file.write_text(PASSWORD + "\n")
    stack.run(
        "service-user", "create", email, "--password-file", str(password_file), "--role", "operator"
    )
    page = console_page()
    log_in(page, email)
    expect(page.locator("[data-role=signed-in]")).to_contain_text("operator")
    for path in ("/ui/clusters/local", "/ui/servers", "/ui/mounts", "/ui/instances", "/ui/keys"):
        page.goto(path)
        expect(page.get_by_role("heading").first).to_be_visible()
        expect(page.get_by_role("button", name=re.compile("^Create"))).to_have_count(0)
        expect(page.get_by_role("link", name="Delete…")).to_have_count(0)
    # A forged post with the operator's own session and CSRF token.
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    answer = page.request.post(
        "/ui/clusters/local/delete", form={"csrf_token": token or "", "confirm": "local"}
    )
    assert answer.status == 403
    page.goto("/ui/clusters/local")
    expect(page.get_by_role("heading", name="Cluster local")).to_be_visible()
    page.goto("/ui/servers/local-web/delete")
    expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()
