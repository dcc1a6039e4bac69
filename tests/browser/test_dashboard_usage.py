"""The Dashboard's usage page in Chromium: the user's own instances' requests, database
and storage per day, as server-drawn SVG charts (no script)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import httpx2
import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import create_engine, text

from dfe.client import ConsoleClient
from dfe.schemas import InstanceCreate, RequestCount, RequestCounts, UserCreate

if TYPE_CHECKING:
    from tests.browser.conftest import Stack, Ui

pytestmark = pytest.mark.browser


def test_usage_shows_the_users_own_instances_as_charts(
    ui: type[Ui], page: Page, stack: Stack
) -> None:
    ui.signed_up(page)
    mine = ui.unique("used-")
    ui.launch(page, mine)
    expect(ui.row(page, mine)).to_have_attribute("data-state", "provisioned", timeout=30_000)
    theirs = ui.unique("other-")
    with ConsoleClient.from_key_file(stack.data_dir / "console.key") as console:
        owner = ui.unique_email()
        console.register_user(UserCreate(email=owner, password=ui.PASSWORD))
        console.launch_instance(InstanceCreate(name=theirs, owner=owner))
        ids = {name: console.get_instance(name).id for name in (mine, theirs)}
    stack.run("metrics", "gather")
    # What the web tier reports, signed with the local web server's key.
    today = datetime.now(UTC).date()
    with ConsoleClient.from_key_file(stack.data_dir / "host.key") as web_server:
        for day, requests in ((today - timedelta(days=1), 1200), (today, 345)):
            web_server.report_requests(
                RequestCounts(
                    day=day,
                    items=[
                        RequestCount(instance_id=ids[mine], requests=requests),
                        RequestCount(instance_id=ids[theirs], requests=99),
                    ],
                )
            )

    page.get_by_role("link", name="Usage").click()
    expect(page.get_by_role("heading", name="Usage", exact=True)).to_be_visible()
    charts = page.locator("[data-role=chart]")
    expect(charts).to_have_count(3)
    expect(charts.nth(0).get_by_role("heading")).to_contain_text("Requests per day 1,545 in all")
    expect(charts.nth(1).locator("svg rect")).to_have_count(30)  # one bar a day
    bars = charts.nth(0).locator("svg rect title")
    expect(bars.last).to_have_text(f"{today.isoformat()}: 345")
    expect(charts.nth(1).locator("svg rect title").last).to_contain_text(today.isoformat())
    options = page.get_by_label("Instance").locator("option")
    expect(options).to_have_text(["All instances", mine])  # not the other user's
    ui.screenshot(page, "usage")

    page.get_by_label("Instance").select_option(mine)
    page.get_by_role("button", name="Show").click()
    expect(page.get_by_text(f"only {mine}")).to_be_visible()
    expect(charts.nth(0).get_by_role("heading")).to_contain_text("1,545 in all")
    page.goto(f"/usage?instance={theirs}")  # another user's instance: not shown
    expect(page.get_by_text(f"only {theirs}")).to_have_count(0)


def test_every_process_serves_prometheus_metrics_to_loopback(stack: Stack) -> None:
    httpx2.get(stack.dashboard_url + "/login", timeout=10)
    dashboard = httpx2.get(stack.dashboard_url + "/metrics", timeout=10)
    assert dashboard.status_code == 200
    assert 'component="dashboard",route="/login",method="GET",status="200"}' in dashboard.text
    console = httpx2.get(stack.url("console") + "/metrics", timeout=10)
    assert console.status_code == 200
    assert "dfe_jobs{status=" in console.text
    assert "dfe_instances{state=" in console.text
    # Through a proxy (it says so), loopback is not enough.
    proxied = httpx2.get(
        stack.url("console") + "/metrics", headers={"X-Forwarded-For": "203.0.113.7"}, timeout=10
    )
    assert proxied.status_code == 404


def test_the_worker_runs_the_daily_tasks_once(stack: Stack) -> None:
    engine = create_engine(f"sqlite:///{stack.data_dir / 'dfe.db'}")
    query = text("SELECT task, day, succeeded FROM daily_run_t WHERE task = 'metrics.gather'")
    deadline = time.monotonic() + 30
    try:
        while True:
            with engine.connect() as connection:
                runs = connection.execute(query).all()
            if runs and runs[0][2] is not None:
                break
            assert time.monotonic() < deadline, "the worker ran no daily task"
            time.sleep(0.5)
    finally:
        engine.dispose()
    assert len(runs) == 1
    # Today's, or yesterday's when the stack came up before midnight (UTC).
    today = datetime.now(UTC).date()
    days = {today.isoformat(), (today - timedelta(days=1)).isoformat()}
    assert str(runs[0][1]) in days and bool(runs[0][2]) is True
