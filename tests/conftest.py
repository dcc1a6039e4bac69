"""Test-wide set-up: fast password hashing, a test keyring, and the database servers.

PostgreSQL and MariaDB are found through DFE_TEST_PG_URL and DFE_TEST_MYSQL_URL
(defaults: the servers on 127.0.0.1). A missing server skips its tests on a
laptop and fails them in CI (CI=true).
"""

from __future__ import annotations

import functools
import inspect
import io
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
import structlog
from cryptography.fernet import Fernet
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import OperationalError

os.environ.setdefault("DFE_ARGON2_TIME_COST", "1")
os.environ.setdefault("DFE_ARGON2_MEMORY_COST", "1024")
os.environ.setdefault("DFE_QUEUE_EAGER", "true")

from dfe.config import get_settings
from dfe.crypto import Keyring, install_keyring
from dfe.db.base import Base
from dfe.db.migrate import upgrade
from dfe.db.session import Database
from dfe.models import ARCHIVED_TABLES

TEST_ENCRYPTION_KEY = Fernet.generate_key().decode()
SERVER_URLS = {
    "postgresql": os.environ.get(
        "DFE_TEST_PG_URL", "postgresql+psycopg://root@127.0.0.1:5432/test"
    ),
    "mysql": os.environ.get("DFE_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test"),
}
IN_CI = os.environ.get("CI", "").lower() == "true"


@pytest.fixture(autouse=True, scope="session")
def _test_keyring() -> None:
    get_settings.cache_clear()
    install_keyring(Keyring([TEST_ENCRYPTION_KEY]))


@pytest.fixture(autouse=True)
def _data_dir_of_the_test(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`Settings()` without a data directory gets one of the test's own, never the
    checkout's `./var` (a job run there would leave its mail in it)."""
    monkeypatch.setenv("DFE_DATA_DIR", str(tmp_path_factory.mktemp("var")))
    get_settings.cache_clear()


def _unavailable(engine_name: str, reason: str) -> None:
    message = f"{engine_name} server unavailable: {reason}"
    if IN_CI:
        pytest.fail(message + " (CI=true: a missing server is a failure)")
    pytest.skip(message)


class ServerDatabase:
    """A database of our own on a real server, created and dropped by the tests."""

    def __init__(self, engine_name: str) -> None:
        self.engine_name = engine_name
        self.admin_url = make_url(SERVER_URLS[engine_name])
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        self.name = f"dfe_t_{worker}_{uuid.uuid4().hex[:8]}"
        self.url: URL = self.admin_url.set(database=self.name)

    def _execute(self, statement: str) -> None:
        engine = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection:
                connection.execute(text(statement))
        finally:
            engine.dispose()

    def create(self) -> None:
        try:
            self._execute(f"CREATE DATABASE {self.name}")
        except OperationalError as exc:
            _unavailable(self.engine_name, str(exc.orig).splitlines()[0])

    def drop(self) -> None:
        force = " WITH (FORCE)" if self.engine_name == "postgresql" else ""
        self._execute(f"DROP DATABASE IF EXISTS {self.name}{force}")


@pytest.fixture(scope="session")
def server_database() -> Iterator[Callable[[str], ServerDatabase]]:
    """A factory of fresh server databases, all dropped at the end of the session."""
    created: list[ServerDatabase] = []

    def make(engine_name: str) -> ServerDatabase:
        database = ServerDatabase(engine_name)
        database.create()
        created.append(database)
        return database

    yield make
    for database in created:
        database.drop()


@pytest.fixture(scope="session")
def migrated_urls(
    server_database: Callable[[str], ServerDatabase], tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], str]:
    """Per engine, one database upgraded to the current schema (made on first use)."""
    urls: dict[str, str] = {}

    def url_for(engine_name: str) -> str:
        if engine_name not in urls:
            if engine_name == "sqlite":
                path = tmp_path_factory.mktemp("template") / "dfe.db"
                url = f"sqlite:///{path}"
            else:
                url = server_database(engine_name).url.render_as_string(hide_password=False)
            database = Database(url)
            upgrade(database)
            database.dispose()
            urls[engine_name] = url
        return urls[engine_name]

    return url_for


@pytest.fixture
def engine_name() -> str:
    """The engine a test runs on; functional tests are parametrized over all three."""
    return "sqlite"


def _wipe(database: Database) -> None:
    """Empty every table (live tables children first, then the archives they filled)."""
    archives = {table.name for table in ARCHIVED_TABLES.values()}
    live = [t for t in reversed(Base.metadata.sorted_tables) if t.name not in archives]
    with database.engine.begin() as connection:
        for table in live:
            connection.execute(table.delete())
        for table in ARCHIVED_TABLES.values():
            connection.execute(table.delete())


@pytest.fixture
def db(engine_name: str, migrated_urls: Callable[[str], str], tmp_path: Path) -> Iterator[Database]:
    """An empty, migrated database on the test's engine."""
    template = migrated_urls(engine_name)
    if engine_name == "sqlite":
        path = tmp_path / "dfe.db"
        shutil.copyfile(make_url(template).database or "", path)
        database = Database(f"sqlite:///{path}")
    else:
        database = Database(template)
        _wipe(database)
    yield database
    database.dispose()


@pytest.fixture
def cli_env(db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Environment that points the `dfe` command at the test database and a data dir."""
    env = {
        "DFE_DATABASE_URL": db.engine.url.render_as_string(hide_password=False),
        "DFE_DATA_DIR": str(tmp_path / "var"),
        "DFE_ENCRYPTION_KEYS": TEST_ENCRYPTION_KEY,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    yield env
    get_settings.cache_clear()
    install_keyring(Keyring([TEST_ENCRYPTION_KEY]))


# No secret in any response or log line: every plaintext that is encrypted at rest or
# hashed as a password is remembered, and everything the API answers or the code logs
# during a test is scanned for it when the test ends.

# Secrets in the order they were made; a test is checked against those made since it began
# (its own fixtures included), so a weak value from another test raises no false alarm.
_SECRETS: dict[str, int] = {}
_OUTPUTS: list[str] = []
_SECRET_HINTS = ("password", "secret", "token", "key", "credential")
# Responses that hand out a secret by design: a new key's secret (once), an instance's
# config (its database password, to its web server) and its runtime API key (to its owner).
_SECRET_ISSUING = re.compile(
    r"^(POST .*/api/v1/keys(/[^/]+/rotate)?|GET .*/api/v1/instances/[^/]+/(config|api-key)"
    r"|POST .*/ui/keys(/[^/]+/rotate)?)$"
)


def _remember_secret(value: str) -> None:
    # Degenerate values (say a generated password of ten zeros) would "leak" into any
    # output with a run of zeros; real secrets are long and varied.
    if len(value) >= 8 and len(set(value)) >= 5:
        _SECRETS.setdefault(value, len(_SECRETS))


def _remember_document_secrets(plaintext: str) -> None:
    try:
        document = json.loads(plaintext)
    except ValueError:
        _remember_secret(plaintext)
        return
    stack = [document]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if isinstance(value, dict):
                    stack.append(value)
                elif isinstance(value, str) and any(h in key.lower() for h in _SECRET_HINTS):
                    _remember_secret(value)


class _RecordingStream(io.StringIO):
    def write(self, text: str) -> int:
        _OUTPUTS.append(text)
        return len(text)


def pytest_configure(config: pytest.Config) -> None:
    import dfe.auth.passwords as passwords
    import dfe.crypto as crypto

    original_encrypt = crypto.Keyring.encrypt

    def encrypt(self: crypto.Keyring, plaintext: str) -> str:
        _remember_document_secrets(plaintext)
        return original_encrypt(self, plaintext)

    crypto.Keyring.encrypt = encrypt  # type: ignore[method-assign]
    original_hash = passwords.hash_password

    def hash_password(password: str) -> str:
        _remember_secret(password)
        return original_hash(password)

    passwords.hash_password = hash_password
    import dfe.services.identity as identity

    identity.hash_password = hash_password  # type: ignore[assignment]
    import dfe.services.accounts as accounts

    original_reset_token = accounts.new_reset_token

    def new_reset_token() -> str:
        token = original_reset_token()
        _remember_secret(token)
        return token

    accounts.new_reset_token = new_reset_token

    for client_class in (httpx2.Client, httpx2.AsyncClient):
        _record_responses(client_class)
    stream = _RecordingStream()
    structlog.configure(
        processors=[structlog.processors.add_log_level, structlog.processors.JSONRenderer()],
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream)
    handler.setLevel(logging.DEBUG)
    logging.getLogger().addHandler(handler)


def _record_responses(client_class: type) -> None:
    original_send = client_class.send
    if inspect.iscoroutinefunction(original_send):

        async def send_async(self: Any, request: httpx2.Request, **kwargs: Any) -> Any:
            response = await original_send(self, request, **kwargs)
            _record_response(request, response)
            return response

        client_class.send = send_async
    else:

        def send(self: Any, request: httpx2.Request, **kwargs: Any) -> Any:
            response = original_send(self, request, **kwargs)
            _record_response(request, response)
            return response

        client_class.send = send


def _record_response(request: httpx2.Request, response: httpx2.Response) -> None:
    if _SECRET_ISSUING.match(f"{request.method} {request.url.path}"):
        return
    try:
        _OUTPUTS.append(response.text)
    except httpx2.ResponseNotRead:
        return
    _OUTPUTS.append(" ".join(f"{k}: {v}" for k, v in response.headers.items()))


@functools.cache
def _api_path_words() -> frozenset[str]:
    """The words of the Console API's own paths ("service-users", ...). A fuzzer may pick
    one as a password; it then shows up in every request log line for that path, which is
    not a leak and cannot be told apart from one."""
    import tempfile

    from dfe.config import Settings
    from dfe.console.app import create_app

    with tempfile.TemporaryDirectory() as directory:
        database = Database(f"sqlite:///{Path(directory) / 'dfe.db'}")
        try:
            paths = create_app(Settings(data_dir=Path(directory)), database).openapi()["paths"]
        finally:
            database.dispose()
    return frozenset(word for path in paths for word in path.split("/") if word)


class SecretScanner:
    """What the autouse leak check sees, for the test that proves the check works."""

    def mark(self) -> int:
        return len(_OUTPUTS)

    def secrets_mark(self) -> int:
        return len(_SECRETS)

    def leaks(self, since: int, secrets_since: int = 0) -> list[str]:
        produced = _OUTPUTS[since:]
        recent = [
            secret
            for secret, order in _SECRETS.items()
            if order >= secrets_since and secret not in _api_path_words()
        ]
        return sorted({secret for secret in recent for text in produced if secret in text})

    def forget(self, since: int) -> None:
        del _OUTPUTS[since:]


@pytest.fixture
def secret_scanner() -> SecretScanner:
    return SecretScanner()


@pytest.fixture(autouse=True)
def no_secret_in_responses_or_logs() -> Iterator[None]:
    scanner = SecretScanner()
    start, secrets_start = scanner.mark(), scanner.secrets_mark()
    yield
    leaks = scanner.leaks(start, secrets_start)
    if leaks:
        pytest.fail(
            f"{len(leaks)} secret(s) appeared in a response or a log line: "
            f"{[leak[:4] + '...' for leak in leaks]}"
        )
