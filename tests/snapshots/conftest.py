"""Snapshot tests whose instance engines vary (the Console's own database is SQLite)."""

from tests.functional.conftest import console

__all__ = ["console"]
