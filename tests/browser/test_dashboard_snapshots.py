"""Snapshots in the Dashboard, in a real browser: export with progress, download, import
into a new instance, and an upload that is refused with a clear message."""

from __future__ import annotations

import tarfile
from typing import TYPE_CHECKING

import pytest
from playwright.sync_api import Page, expect

if TYPE_CHECKING:
    from tests.browser.conftest import Stack, Ui

pytestmark = pytest.mark.browser


def wait_for_job(page: Page, status: str) -> None:
    expect(page.locator("#job")).to_have_attribute("data-status", status, timeout=60_000)


def test_export_download_import_and_a_refused_upload(
    ui: type[Ui], page: Page, stack: Stack, tmp_path
) -> None:
    ui.signed_up(page)
    name = ui.unique("snap-")
    ui.launch(page, name)
    expect(ui.row(page, name)).to_have_attribute("data-state", "provisioned", timeout=30_000)

    page.get_by_role("link", name="Snapshots").click()
    expect(page.locator("[data-role=empty]")).to_be_visible()
    page.get_by_label("Instance", exact=True).select_option(name)
    page.get_by_role("button", name="Export", exact=True).click()
    wait_for_job(page, "succeeded")
    expect(page.locator("progress")).to_have_attribute("value", "100")

    page.get_by_role("link", name="Back to your snapshots").click()
    row = page.locator("#snapshots tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text(name)
    ui.screenshot(page, "snapshots")

    with page.expect_download() as download:
        row.get_by_role("link", name="Download").click()
    archive = tmp_path / "archive.dfe.tar"
    download.value.save_as(archive)
    with tarfile.open(archive) as tar:
        assert tar.getnames()[-1] == "manifest.json"

    copy = ui.unique("copy-")
    page.locator("#import-instance").fill(copy)
    page.get_by_role("button", name="Import", exact=True).click()
    wait_for_job(page, "succeeded")

    junk = tmp_path / "junk.dfe.tar"
    junk.write_bytes(b"this is not a snapshot" * 50)
    page.goto("/snapshots")
    page.locator("#upload-archive").set_input_files(str(junk))
    page.locator("#upload-instance").fill(copy)
    page.get_by_role("button", name="Upload and import").click()
    wait_for_job(page, "failed")
    expect(page.locator("[data-role=failure]")).to_contain_text("not a readable snapshot archive")
    ui.screenshot(page, "import-refused")

    page.goto("/")
    expect(ui.row(page, copy)).to_have_attribute("data-state", "provisioned")
