"""The database-server drivers against the real servers of the machine, and SQLite.

PostgreSQL and MariaDB are found through DFE_TEST_PG_URL and DFE_TEST_MYSQL_URL
(an admin URL, as in tests/conftest.py). A missing server skips its tests on a
laptop and fails them in CI (CI=true).

Note: the test PostgreSQL trusts local connections, so a login there proves
nothing about a password; the role's stored SCRAM verifier is checked instead.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import random
import string
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pymysql
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.pool import NullPool

from dfe.provisioning import (
    DatabaseDriver,
    DatabaseState,
    DriverError,
    InstanceDatabase,
    driver_for,
    generate_password,
    instance_database_names,
    instance_id_from_name,
)
from dfe.provisioning.drivers import DRIVERS
from dfe.provisioning.drivers.base import AdminConnection

SERVER_URLS = {
    "postgresql": os.environ.get(
        "DFE_TEST_PG_URL", "postgresql+psycopg://root@127.0.0.1:5432/test"
    ),
    "mysql": os.environ.get("DFE_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test"),
}
IN_CI = os.environ.get("CI", "").lower() == "true"
KINDS = ("sqlite", "postgresql", "mysql")
SERVERS = ("postgresql", "mysql")
ABSENT = DatabaseState(database=False, user=False)
COMPLETE = DatabaseState(database=True, user=True)


def _unavailable(kind: str, reason: str) -> None:
    message = f"{kind} server unavailable: {reason}"
    if IN_CI:
        pytest.fail(message + " (CI=true: a missing server is a failure)")
    pytest.skip(message)


def server_config(kind: str, **overrides: Any) -> dict[str, Any]:
    """A db server's config for the test server's admin URL."""
    url = make_url(SERVER_URLS[kind])
    config = {
        "driver": kind,
        "host": url.host or "127.0.0.1",
        "port": url.port or (5432 if kind == "postgresql" else 3306),
        "admin_user": url.username,
        "admin_password": url.password,
    }
    if kind == "postgresql" and url.database:
        config["admin_database"] = url.database
    return {**config, **overrides}


def config_for(kind: str, tmp_path: Path) -> dict[str, Any]:
    if kind == "sqlite":
        return {"driver": "sqlite", "path": str(tmp_path / "instances")}
    return server_config(kind)


def _available(kind: str, tmp_path: Path) -> DatabaseDriver:
    driver = driver_for(config_for(kind, tmp_path))
    try:
        driver.check()
    except DriverError as exc:
        _unavailable(kind, str(exc))
    return driver


@pytest.fixture(params=KINDS)
def driver(request: pytest.FixtureRequest, tmp_path: Path) -> DatabaseDriver:
    return _available(request.param, tmp_path)


@pytest.fixture(params=SERVERS)
def server_driver(request: pytest.FixtureRequest, tmp_path: Path) -> DatabaseDriver:
    return _available(request.param, tmp_path)


@contextmanager
def admin(kind: str) -> Iterator[Connection]:
    """The test's own admin connection, to set up what a crash would leave."""
    engine = create_engine(SERVER_URLS[kind], poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            yield connection
    finally:
        engine.dispose()


NewNames = Callable[[DatabaseDriver], tuple[str, str]]


def _new_names() -> tuple[str, str]:
    return instance_database_names(f"test-{uuid.uuid4().hex[:8]}", random.randrange(1, 2**40))


@pytest.fixture
def names() -> Iterator[NewNames]:
    """Fresh (database, user) names on a driver, all dropped after the test, however it ended."""
    made: list[tuple[DatabaseDriver, str, str]] = []

    def make(driver: DatabaseDriver) -> tuple[str, str]:
        database_name, user_name = _new_names()
        made.append((driver, database_name, user_name))
        return database_name, user_name

    yield make
    for driver, database_name, user_name in made:
        driver.drop(database_name, user_name)


@contextmanager
def connect_as(driver: DatabaseDriver, database: InstanceDatabase) -> Iterator[Connection]:
    """A connection with the instance's own credentials, never the admin's."""
    engine = create_engine(driver.url_for(database), poolclass=NullPool)
    try:
        with engine.connect() as connection:
            yield connection
    finally:
        engine.dispose()


def current_user(connection: Connection) -> str:
    if connection.dialect.name == "sqlite":
        return ""
    return str(connection.execute(text("SELECT current_user")).scalar()).split("@")[0]


def scram_verifier_matches(verifier: str, password: str) -> bool:
    """Whether a PostgreSQL SCRAM-SHA-256 verifier was made from `password` (RFC 5802)."""
    _, iterations_salt, keys = verifier.split("$")
    iterations, salt = iterations_salt.split(":")
    stored_key = keys.split(":")[0]
    salted = hashlib.pbkdf2_hmac(
        "sha256", password.encode(), base64.b64decode(salt), int(iterations)
    )
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    return base64.b64encode(hashlib.sha256(client_key).digest()).decode() == stored_key


def assert_clean_error(exc: DriverError, *secrets: str | None) -> None:
    message = str(exc)
    assert message and "\n" not in message
    for secret in secrets:
        if secret:
            assert secret not in message
            assert secret not in repr(exc)
    # The original exception may quote a statement: it is not chained.
    assert exc.__cause__ is None
    assert exc.__suppress_context__


# -- the full cycle, on every engine -----------------------------------------------------------


def test_create_gives_a_database_the_instance_uses_with_its_own_credentials(
    driver: DatabaseDriver, names: NewNames
) -> None:
    database_name, user_name = names(driver)
    password = generate_password()

    database = driver.create(database_name, user_name, password)

    assert (database.kind, database.database_name, database.user_name) == (
        driver.kind,
        database_name,
        user_name,
    )
    assert database.password == password
    assert password not in repr(database)
    assert make_url(driver.url_for(database)).password == (
        None if driver.kind == "sqlite" else password
    )
    with connect_as(driver, database) as connection:
        if driver.kind != "sqlite":
            assert current_user(connection) == user_name
            connection.rollback()
        with connection.begin():
            connection.execute(text("CREATE TABLE note (id INTEGER PRIMARY KEY, body VARCHAR(40))"))
            connection.execute(text("INSERT INTO note (id, body) VALUES (1, 'héllo ✓')"))
        assert connection.execute(text("SELECT body FROM note")).scalar() == "héllo ✓"


def test_exists_tells_database_and_user_apart(driver: DatabaseDriver, names: NewNames) -> None:
    database_name, user_name = names(driver)
    assert driver.exists(database_name, user_name) == ABSENT
    assert driver.exists(database_name, user_name).absent

    driver.create(database_name, user_name, generate_password())

    state = driver.exists(database_name, user_name)
    assert state == COMPLETE
    assert state.complete
    assert database_name in driver.list_databases()
    if driver.kind == "sqlite":
        assert driver.list_users() == set()  # no users in SQLite: none can be left over
    else:
        assert user_name in driver.list_users()
    assert database_name not in driver.list_databases(prefix="other_")


def test_create_again_keeps_the_data_and_takes_the_new_password(
    driver: DatabaseDriver, names: NewNames
) -> None:
    database_name, user_name = names(driver)
    first = driver.create(database_name, user_name, generate_password())
    with connect_as(driver, first) as connection, connection.begin():
        connection.execute(text("CREATE TABLE kept (id INTEGER PRIMARY KEY)"))
        connection.execute(text("INSERT INTO kept (id) VALUES (7)"))

    second = driver.create(database_name, user_name, generate_password())

    assert driver.exists(database_name, user_name) == COMPLETE
    with connect_as(driver, second) as connection:
        assert connection.execute(text("SELECT id FROM kept")).scalar() == 7
    if driver.kind == "mysql":
        with pytest.raises(OperationalError, match="Access denied"), connect_as(driver, first):
            pass
    if driver.kind == "postgresql":
        with admin("postgresql") as connection:
            verifier = connection.execute(
                text("SELECT rolpassword FROM pg_authid WHERE rolname = :name"),
                {"name": user_name},
            ).scalar_one()
        assert verifier.startswith("SCRAM-SHA-256$")  # no plain text reached the server
        assert scram_verifier_matches(verifier, second.password)
        assert not scram_verifier_matches(verifier, first.password)


def test_drop_removes_database_and_user_even_in_use_and_again(
    driver: DatabaseDriver, names: NewNames
) -> None:
    database_name, user_name = names(driver)
    database = driver.create(database_name, user_name, generate_password())
    engine = create_engine(driver.url_for(database), poolclass=NullPool)
    busy = engine.connect()
    try:
        # An open transaction holding a lock: a plain DROP DATABASE would wait for it.
        busy.begin()
        busy.execute(text("CREATE TABLE busy (id INTEGER PRIMARY KEY)"))
        busy.execute(text("INSERT INTO busy (id) VALUES (1)"))

        driver.drop(database_name, user_name)

        assert driver.exists(database_name, user_name) == ABSENT
        assert database_name not in driver.list_databases()
        assert user_name not in driver.list_users()
        driver.drop(database_name, user_name)  # gone already: fine
        assert driver.exists(database_name, user_name) == ABSENT
    finally:
        busy.invalidate()  # its session was ended by the drop: no rollback to attempt
        busy.close()
        engine.dispose()


def test_invalid_names_are_refused_before_any_sql(driver: DatabaseDriver) -> None:
    bad = [
        "",
        "Upper",
        "1starts_with_digit",
        "has-hyphen",
        "semi;colon",
        "quote'",
        'double"quote',
        "back`tick",
        "trailing\n",
        "é",
        "a" * 64,
        "x; DROP DATABASE postgres",
    ]
    for name in bad:
        with pytest.raises(ValueError, match="invalid database name"):
            driver.create(name, "dfe_i_ok_1", "pw")
        with pytest.raises(ValueError, match="invalid user name"):
            driver.exists("dfe_i_ok_1", name)
        with pytest.raises(ValueError, match="invalid"):
            driver.drop(name, name)


# -- isolation and partial states, on the servers ----------------------------------------------


def test_an_instance_user_cannot_reach_another_instance_database(
    server_driver: DatabaseDriver, names: NewNames
) -> None:
    mine = server_driver.create(*names(server_driver), generate_password())
    theirs = server_driver.create(*names(server_driver), generate_password())
    trespass = InstanceDatabase(
        mine.kind, theirs.database_name, mine.user_name, mine.password, mine.host, mine.port
    )

    if server_driver.kind == "postgresql":
        # CONNECT is revoked from PUBLIC: only the owner may connect.
        denied = pytest.raises(OperationalError, match="permission denied for database")
        with denied, connect_as(server_driver, trespass):
            pass
    else:
        denied = pytest.raises(OperationalError, match=r"Access denied .*" + theirs.database_name)
        with denied, connect_as(server_driver, trespass):
            pass
        with connect_as(server_driver, mine) as connection:
            visible = set(connection.execute(text("SHOW DATABASES")).scalars())
            assert theirs.database_name not in visible
            with pytest.raises(DBAPIError, match="denied"):
                connection.execute(text(f"CREATE TABLE `{theirs.database_name}`.t (id INT)"))


def test_create_completes_what_a_crashed_attempt_left(
    server_driver: DatabaseDriver, names: NewNames
) -> None:
    """A worker killed after the role was created, before the database was."""
    database_name, user_name = names(server_driver)
    kind = server_driver.kind
    with admin(kind) as connection:
        if kind == "postgresql":
            connection.execute(text(f'CREATE ROLE "{user_name}" LOGIN'))
        else:
            connection.execute(text(f"CREATE USER '{user_name}'@'%' IDENTIFIED BY 'old-password'"))
    assert server_driver.exists(database_name, user_name) == DatabaseState(
        database=False, user=True
    )

    database = server_driver.create(database_name, user_name, generate_password())

    assert server_driver.exists(database_name, user_name) == COMPLETE
    with connect_as(server_driver, database) as connection, connection.begin():
        connection.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY)"))


def test_drop_finishes_what_a_crashed_drop_left(
    server_driver: DatabaseDriver, names: NewNames
) -> None:
    """A worker killed after the database was dropped, before the user was."""
    database_name, user_name = names(server_driver)
    server_driver.create(database_name, user_name, generate_password())
    with admin(server_driver.kind) as connection:
        force = " WITH (FORCE)" if server_driver.kind == "postgresql" else ""
        connection.execute(text(f"DROP DATABASE {database_name}{force}"))
    assert server_driver.exists(database_name, user_name) == DatabaseState(
        database=False, user=True
    )

    server_driver.drop(database_name, user_name)

    assert server_driver.exists(database_name, user_name) == ABSENT


# -- failures: one clear line, no password -----------------------------------------------------


@pytest.mark.parametrize("kind", SERVERS)
def test_a_closed_port_gives_a_clear_driver_error(kind: str, tmp_path: Path) -> None:
    admin_password = "admin-" + generate_password()
    instance_password = generate_password()
    driver = driver_for(
        server_config(kind, host="127.0.0.1", port=1, admin_password=admin_password)
    )
    database_name, user_name = _new_names()
    calls: list[Callable[[], object]] = [
        driver.check,
        lambda: driver.create(database_name, user_name, instance_password),
        lambda: driver.exists(database_name, user_name),
        lambda: driver.drop(database_name, user_name),
        driver.list_databases,
        driver.list_users,
    ]
    for call in calls:
        with pytest.raises(DriverError) as caught:
            call()
        assert f"{kind} server 127.0.0.1:1: cannot connect as admin" in str(caught.value)
        assert "refused" in str(caught.value).lower()
        assert_clean_error(caught.value, admin_password, instance_password)


def test_a_sqlite_directory_that_cannot_be_made_gives_a_driver_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    driver = driver_for({"driver": "sqlite", "path": str(blocker / "instances")})
    with pytest.raises(DriverError, match=r"sqlite directory .*a-file/instances"):
        driver.check()
    with pytest.raises(DriverError, match="create database"):
        driver.create(*_new_names(), "pw")


@pytest.fixture
def mysql_admin(tmp_path: Path) -> Iterator[Callable[[str], tuple[str, str]]]:
    """Temporary MariaDB admins with a password; dropped afterwards."""
    _available("mysql", tmp_path)
    made: list[str] = []

    def make(grants: str) -> tuple[str, str]:
        name = f"dfe_t_adm_{uuid.uuid4().hex[:8]}"
        password = "adm-" + generate_password()
        made.append(name)
        with admin("mysql") as connection:
            connection.execute(
                text("CREATE USER :user@'%' IDENTIFIED BY :password"),
                {"user": name, "password": password},
            )
            if grants:
                connection.execute(text(f"GRANT {grants} ON *.* TO '{name}'@'%'"))
        return name, password

    yield make
    with admin("mysql") as connection:
        for name in made:
            connection.execute(text(f"DROP USER IF EXISTS '{name}'@'%'"))


def test_a_wrong_mysql_admin_password_gives_a_clear_driver_error(
    mysql_admin: Callable[[str], tuple[str, str]],
) -> None:
    name, password = mysql_admin("ALL PRIVILEGES")
    wrong = "wrong-" + generate_password()
    driver = driver_for(server_config("mysql", admin_user=name, admin_password=wrong))

    with pytest.raises(DriverError) as caught:
        driver.check()

    message = str(caught.value)
    assert "cannot connect as admin" in message
    assert "Access denied" in message
    assert_clean_error(caught.value, wrong, password)


def test_a_mysql_admin_with_a_password_runs_the_whole_cycle(
    mysql_admin: Callable[[str], tuple[str, str]],
) -> None:
    name, password = mysql_admin("ALL PRIVILEGES")
    with admin("mysql") as connection:
        connection.execute(text(f"GRANT ALL PRIVILEGES ON *.* TO '{name}'@'%' WITH GRANT OPTION"))
    driver = driver_for(server_config("mysql", admin_user=name, admin_password=password))
    database_name, user_name = _new_names()
    try:
        driver.check()
        database = driver.create(database_name, user_name, generate_password())
        with connect_as(driver, database) as connection:
            assert current_user(connection) == user_name
    finally:
        driver.drop(database_name, user_name)
    assert driver.exists(database_name, user_name) == ABSENT


def test_a_mysql_admin_without_rights_gives_a_clear_driver_error(
    mysql_admin: Callable[[str], tuple[str, str]],
) -> None:
    name, password = mysql_admin("")
    instance_password = generate_password()
    driver = driver_for(server_config("mysql", admin_user=name, admin_password=password))

    with pytest.raises(DriverError) as caught:
        driver.create(*_new_names(), instance_password)

    assert "create database" in str(caught.value)
    assert "denied" in str(caught.value)
    assert_clean_error(caught.value, password, instance_password)


@pytest.fixture
def pg_role(tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """Temporary PostgreSQL roles (admins with fewer rights); dropped afterwards."""
    _available("postgresql", tmp_path)
    made: list[str] = []

    def make(options: str) -> str:
        name = f"dfe_t_adm_{uuid.uuid4().hex[:8]}"
        made.append(name)
        with admin("postgresql") as connection:
            connection.execute(text(f'CREATE ROLE "{name}" LOGIN {options}'))
        return name

    yield make
    with admin("postgresql") as connection:
        for name in made:
            connection.execute(text(f'DROP ROLE IF EXISTS "{name}"'))


def test_an_unknown_postgresql_admin_gives_a_clear_driver_error(tmp_path: Path) -> None:
    _available("postgresql", tmp_path)
    password = "admin-" + generate_password()
    driver = driver_for(
        server_config("postgresql", admin_user="dfe_t_nobody", admin_password=password)
    )
    with pytest.raises(DriverError) as caught:
        driver.check()
    assert 'role "dfe_t_nobody" does not exist' in str(caught.value)
    assert_clean_error(caught.value, password)


def test_a_postgresql_admin_without_rights_gives_a_clear_driver_error(
    pg_role: Callable[[str], str],
) -> None:
    name = pg_role("")
    instance_password = generate_password()
    driver = driver_for(server_config("postgresql", admin_user=name, admin_password=None))

    with pytest.raises(DriverError, match="needs CREATEDB and CREATEROLE"):
        driver.check()
    with pytest.raises(DriverError) as caught:
        driver.create(*_new_names(), instance_password)

    assert "permission denied to create role" in str(caught.value)
    assert_clean_error(caught.value, instance_password)


def test_a_postgresql_admin_with_createdb_and_createrole_runs_the_whole_cycle(
    pg_role: Callable[[str], str],
) -> None:
    """Not every operator hands out a superuser: CREATEDB + CREATEROLE must do."""
    name = pg_role("CREATEDB CREATEROLE")
    driver = driver_for(server_config("postgresql", admin_user=name, admin_password=None))
    database_name, user_name = _new_names()
    try:
        driver.check()
        database = driver.create(database_name, user_name, generate_password())
        driver.create(database_name, user_name, generate_password())
        with connect_as(driver, database) as connection:
            assert current_user(connection) == user_name
            connection.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY)"))
    finally:
        driver.drop(database_name, user_name)
    assert driver.exists(database_name, user_name) == ABSENT


# -- names and configs (no server needed) ------------------------------------------------------


def test_instance_database_names_are_deterministic_and_carry_the_id() -> None:
    assert instance_database_names("my-shop", 42) == ("dfe_i_my_shop_16", "dfe_i_my_shop_16")
    assert instance_database_names("my-shop", 42) == instance_database_names("my-shop", 42)
    # A name reused after its instance was archived gets other databases.
    assert instance_database_names("my-shop", 43) != instance_database_names("my-shop", 42)
    database_name, user_name = instance_database_names("a" * 63, 2**63 - 1)
    assert len(database_name) == 63
    assert len(user_name) == 32
    assert instance_id_from_name(database_name) == instance_id_from_name(user_name) == 2**63 - 1
    assert instance_id_from_name("dfe_local") is None
    assert instance_id_from_name("dfe_t_gw0_1234abcd") is None
    assert instance_database_names("shop", 1, prefix="acme_") == ("acme_shop_1", "acme_shop_1")
    for bad_id in (0, -1, True):
        with pytest.raises(ValueError, match="instance id"):
            instance_database_names("shop", bad_id)
    with pytest.raises(ValueError, match="prefix"):
        instance_database_names("shop", 1, prefix="Bad-")


@given(name=st.text(max_size=80), instance_id=st.integers(min_value=1, max_value=2**63 - 1))
def test_instance_database_names_are_always_safe(name: str, instance_id: int) -> None:
    database_name, user_name = instance_database_names(name, instance_id)
    allowed = set(string.ascii_lowercase + string.digits + "_")
    for identifier, limit in ((database_name, 63), (user_name, 32)):
        assert identifier.startswith("dfe_i_")
        assert set(identifier) <= allowed
        assert len(identifier) <= limit
        assert instance_id_from_name(identifier) == instance_id


def test_generated_passwords_are_long_and_fresh() -> None:
    passwords = {generate_password() for _ in range(100)}
    assert len(passwords) == 100
    assert all(len(p) == 40 and set(p) <= set(string.hexdigits) for p in passwords)


def test_driver_for_names_the_known_drivers() -> None:
    with pytest.raises(ValueError, match="known drivers are mysql, postgresql, sqlite"):
        driver_for({"driver": "oracle"})
    with pytest.raises(ValueError, match="unknown database driver None"):
        driver_for({})
    with pytest.raises(ValueError, match="needs 'host'"):
        driver_for({"driver": "postgresql", "admin_user": "root"})
    with pytest.raises(ValueError, match="invalid port"):
        driver_for({"driver": "mysql", "host": "h", "admin_user": "root", "port": "x"})
    assert driver_for({"driver": "mariadb", "host": "h", "admin_user": "root"}).kind == "mysql"
    assert set(DRIVERS) == set(KINDS)
    sqlite = driver_for({"driver": "sqlite", "path": "/nonexistent"})
    assert isinstance(sqlite, DatabaseDriver)


def test_a_password_the_server_echoes_back_is_scrubbed() -> None:
    """A syntax error quotes the statement near the error: a password must not get through."""
    errors = AdminConnection("mysql server db:3306", ["admin-secret"])
    echo = "You have an error in your SQL syntax near 'instance-secret' and 'admin-secret'"
    with pytest.raises(DriverError) as caught, errors.step("create user", "instance-secret"):
        raise pymysql.err.ProgrammingError(1064, echo + "\nat line 1")
    assert str(caught.value) == (
        "mysql server db:3306: create user: You have an error in your SQL syntax near '***'"
        " and '***' at line 1 (error 1064)"
    )
    assert_clean_error(caught.value, "instance-secret", "admin-secret")


def test_urls_for_the_instance_runtime(tmp_path: Path) -> None:
    database = InstanceDatabase("x", "dfe_i_shop_1", "dfe_i_shop_1", "p@ss/w:rd")
    sqlite = driver_for({"driver": "sqlite", "path": str(tmp_path)})
    assert sqlite.url_for(database) == f"sqlite:///{tmp_path}/dfe_i_shop_1.db"
    postgresql = driver_for(
        {
            "driver": "postgresql",
            "host": "db1",
            "port": 5433,
            "admin_user": "a",
            "sslmode": "require",
        }
    )
    url = make_url(postgresql.url_for(database))
    assert (url.drivername, url.host, url.port, url.database) == (
        "postgresql+psycopg",
        "db1",
        5433,
        "dfe_i_shop_1",
    )
    assert (url.username, url.password, url.query) == (
        "dfe_i_shop_1",
        "p@ss/w:rd",
        {"sslmode": "require"},
    )
    mysql = driver_for({"driver": "mysql", "host": "db2", "admin_user": "a"})
    url = make_url(mysql.url_for(database))
    assert (url.drivername, url.host, url.port, url.password) == (
        "mysql+pymysql",
        "db2",
        3306,
        "p@ss/w:rd",
    )
