"""Browser tests: real Console, worker and Dashboard processes on loopback, driven by
Debian's Chromium through Playwright (never a downloaded browser).

One stack per test session (on each xdist worker that runs browser tests): `dfe
setup` in a temporary data directory, then `dfe serve console`, `dfe worker` and
`dfe serve dashboard`, each a separate process on a free port, stopped at the end. Without /usr/bin/chromium the
browser tests are skipped on a laptop and fail in CI (CI=true).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
import pytest
from cryptography.fernet import Fernet
from playwright.sync_api import Browser, BrowserContext, Locator, Page, expect, sync_playwright

CHROMIUM = Path(os.environ.get("DFE_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
IN_CI = os.environ.get("CI", "").lower() == "true"
REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "docs" / "screenshots"
VIEWPORT = {"width": 1100, "height": 800}
PASSWORD = "correct-horse-battery"
ADMIN_EMAIL = "admin@example.com"
# Generous: on a loaded machine four Python processes take a while to import and bind.
STARTUP_SECONDS = 120

expect.set_options(timeout=15_000)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Stack:
    """The processes of one DFE system on loopback, sharing one data directory."""

    root: Path
    env: dict[str, str]
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def data_dir(self) -> Path:
        return self.root / "var"

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.env[f'DFE_{name.upper()}_PORT']}"

    @property
    def dashboard_url(self) -> str:
        return self.url("dashboard")

    def log(self, name: str) -> Path:
        return self.root / f"{name}.log"

    def run(self, *args: str) -> None:
        result = subprocess.run(
            [sys.executable, "-m", "dfe", *args],
            env=self.env,
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, (
            f"dfe {' '.join(args)} failed:\n{result.stdout}{result.stderr}"
        )

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> None:
        """Start `python -m dfe ARGS` as process `name`, its output in <root>/<name>.log."""
        with self.log(name).open("ab") as log:
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", "dfe", *args],
                env={**self.env, **(env or {})},
                cwd=self.root,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def start_worker(self) -> None:
        self.start("worker", "worker", "--concurrency", "1")

    @contextmanager
    def worker_stopped(self) -> Iterator[None]:
        """No worker during the block (jobs wait in the queue), a fresh one after it.
        The idle worker is killed: a polite stop takes Celery seconds."""
        self.stop("worker", kill=True)
        try:
            yield
        finally:
            self.start_worker()

    def wait_http(self, name: str, url: str) -> None:
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            self._check_alive(name)
            try:
                if httpx2.get(url, timeout=2).status_code < 500:
                    return
            except httpx2.TransportError:
                pass
            time.sleep(0.2)
        pytest.fail(f"{name} did not answer at {url}:\n{self.tail(name)}")

    def wait_log(self, name: str, text: str) -> None:
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            self._check_alive(name)
            if text in self.log(name).read_text(errors="replace"):
                return
            time.sleep(0.2)
        pytest.fail(f"{name} never logged {text!r}:\n{self.tail(name)}")

    def _check_alive(self, name: str) -> None:
        if self.processes[name].poll() is not None:
            pytest.fail(f"{name} exited early:\n{self.tail(name)}")

    def tail(self, name: str, lines: int = 40) -> str:
        text = self.log(name).read_text(errors="replace") if self.log(name).exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, name: str, *, kill: bool = False) -> None:
        process = self.processes.pop(name, None)
        if process is None or process.poll() is not None:
            return
        if kill:
            process.kill()
        else:
            process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)

    def stop_all(self) -> None:
        for process in self.processes.values():
            process.terminate()
        for name in list(self.processes):
            self.stop(name)


def _environment(root: Path, **ports: int) -> dict[str, str]:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("DFE_")}
    data_dir = root / "var"
    return {
        **inherited,
        "DFE_DATA_DIR": str(data_dir),
        "DFE_DATABASE_URL": f"sqlite:///{data_dir / 'dfe.db'}",
        "DFE_QUEUE_EAGER": "false",
        "DFE_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "DFE_ARGON2_TIME_COST": "1",
        "DFE_ARGON2_MEMORY_COST": "1024",
        "DFE_CONSOLE_HOST": "127.0.0.1",
        "DFE_DASHBOARD_HOST": "127.0.0.1",
        **{f"DFE_{name.upper()}_PORT": str(port) for name, port in ports.items()},
    }


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Console, worker and Dashboard, set up with `dfe setup --local-cluster`."""
    root = tmp_path_factory.mktemp("dfe-browser")
    (root / "var").mkdir()
    system = Stack(root, _environment(root, console=free_port(), dashboard=free_port()))
    password_file = root / "admin-password"
    password_file.write_text(PASSWORD + "\n")
    system.run(
        "setup", "--email", ADMIN_EMAIL, "--password-file", str(password_file), "--local-cluster"
    )
    try:
        system.start("console", "serve", "console")
        system.start_worker()
        system.start("dashboard", "serve", "dashboard")
        system.wait_http("console", system.url("console") + "/api/v1/health")
        system.wait_http("dashboard", system.dashboard_url + "/login")
        system.wait_log("worker", "ready.")
        yield system
    finally:
        system.stop_all()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Chromium, for one test module at a time: while the Playwright sync API is up, the
    thread counts as running an event loop, and other tests' asyncio.run() would fail."""
    if not CHROMIUM.exists():
        message = f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)"
        if IN_CI:
            pytest.fail(message + " (CI=true: a missing browser is a failure)")
        pytest.skip(message)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        yield chromium
        chromium.close()


class PageErrors:
    """Script errors and content-security-policy violations seen by the pages of a test."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def watch(self, page: Page) -> None:
        page.on("pageerror", lambda error: self.seen.append(f"page error: {error}"))
        page.on(
            "console",
            lambda message: (
                self.seen.append(f"console: {message.text}")
                if message.type == "error" and "Content Security Policy" in message.text
                else None
            ),
        )


@pytest.fixture
def new_page(browser: Browser, stack: Stack) -> Iterator[Callable[..., Page]]:
    """A factory of pages, each in a fresh browser context (its own cookies)."""
    contexts: list[BrowserContext] = []
    errors = PageErrors()

    def make(base_url: str | None = None) -> Page:
        context = browser.new_context(viewport=VIEWPORT, base_url=base_url or stack.dashboard_url)
        contexts.append(context)
        page = context.new_page()
        errors.watch(page)
        return page

    yield make
    for context in contexts:
        context.close()
    assert errors.seen == []


@pytest.fixture
def page(new_page: Callable[..., Page]) -> Page:
    return new_page()


class Ui:
    """What the tests do through the browser, as one fixture (`ui`)."""

    PASSWORD = PASSWORD

    @staticmethod
    def screenshot(page: Page, name: str) -> None:
        """Save the page as docs/screenshots/dashboard-<name>.png (used by docs/dashboard.md)."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=SCREENSHOTS / f"dashboard-{name}.png")

    @staticmethod
    def unique(prefix: str) -> str:
        return f"{prefix}{uuid.uuid4().hex[:8]}"

    @classmethod
    def unique_email(cls) -> str:
        return f"{cls.unique('user-')}@example.com"

    @staticmethod
    def register(page: Page, email: str, password: str = PASSWORD) -> None:
        page.goto("/register")
        page.get_by_label("Email").fill(email)
        page.get_by_label("Password", exact=True).fill(password)
        page.get_by_label("Repeat the password").fill(password)
        page.get_by_role("button", name="Create the account").click()
        expect(page).to_have_url(re.compile(r"/login$"))

    @staticmethod
    def log_in(page: Page, email: str, password: str = PASSWORD) -> None:
        page.goto("/login")
        page.get_by_label("Email").fill(email)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_role("heading", name="Your instances")).to_be_visible()

    @classmethod
    def signed_up(cls, page: Page) -> str:
        """Register a new user and log in as them; their email."""
        email = cls.unique_email()
        cls.register(page, email)
        cls.log_in(page, email)
        return email

    @classmethod
    def launch(cls, page: Page, name: str) -> None:
        page.get_by_label("Name", exact=True).fill(name)
        page.get_by_role("button", name="Launch").click()
        expect(cls.row(page, name)).to_be_visible()

    @staticmethod
    def row(page: Page, name: str) -> Locator:
        return page.locator(f"tr[data-name='{name}']")


@pytest.fixture
def ui() -> type[Ui]:
    return Ui


@pytest.fixture
def second_dashboard(stack: Stack) -> Iterator[tuple[str, Callable[[bool], None]]]:
    """A second Console and a Dashboard that talks to it only, with registration closed;
    the test can stop and start that Console (same database as the main one)."""
    console_port, dashboard_port = free_port(), free_port()
    console_env = {"DFE_CONSOLE_PORT": str(console_port)}
    console_url = f"http://127.0.0.1:{console_port}"

    def console(running: bool) -> None:
        if running:
            stack.start("console-2", "serve", "console", env=console_env)
            stack.wait_http("console-2", console_url + "/api/v1/health")
        else:
            stack.stop("console-2")

    console(True)
    stack.start(
        "dashboard-2",
        "serve",
        "dashboard",
        env={
            "DFE_CONSOLE_URL": console_url,
            "DFE_DASHBOARD_PORT": str(dashboard_port),
            "DFE_DASHBOARD_OPEN_REGISTRATION": "false",
        },
    )
    dashboard_url = f"http://127.0.0.1:{dashboard_port}"
    stack.wait_http("dashboard-2", dashboard_url + "/login")
    try:
        yield dashboard_url, console
    finally:
        stack.stop("dashboard-2")
        stack.stop("console-2")
