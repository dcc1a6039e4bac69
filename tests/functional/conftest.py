"""Functional tests run once per database engine: SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import pytest

ENGINES = ("sqlite", "postgresql", "mysql")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "engine_name" in metafunc.fixturenames:
        metafunc.parametrize("engine_name", ENGINES)
