"""Rows inserted as statements (`new_row`, `insert_row`) and made objects (`add_inserted`)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, insert, select

from dfe.db.base import Base
from dfe.db.session import Database
from dfe.enums import JobKind, JobStatus
from dfe.models import Job
from dfe.services.base import add_inserted, insert_row, new_row


@pytest.fixture
def database(tmp_path: Path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'rows.db'}")
    Base.metadata.create_all(database.engine)
    return database


def test_a_new_row_has_every_column_but_its_key_with_the_defaults() -> None:
    row = new_row(Job, kind=JobKind.PROVISION, instance_name="shop", progress=7)
    assert "id" not in row
    assert set(row) == {column.key for column in Job.__table__.columns} - {"id"}
    assert row["progress"] == 7  # given
    assert row["status"] is JobStatus.QUEUED  # the column's default
    assert isinstance(row["created_at"], datetime)  # a callable default, called
    assert row["message"] is None  # no default


def test_a_new_row_refuses_a_column_the_table_lacks() -> None:
    with pytest.raises(ValueError, match="job_t has no column colour"):
        new_row(Job, kind=JobKind.PROVISION, colour="red")


def test_an_inserted_object_is_as_if_loaded(database: Database) -> None:
    statements: list[str] = []
    with database.transaction() as session:
        row = new_row(Job, kind=JobKind.PROVISION, instance_name="shop")
        job = add_inserted(session, Job(id=insert_row(session, insert(Job), row), **row))
        event.listen(database.engine, "before_cursor_execute", _record(statements))
        assert not session.new and not session.dirty  # nothing to flush
        assert session.get(Job, job.id) is job  # in the identity map
        assert job.status is JobStatus.QUEUED and job.created_at == row["created_at"]
        assert statements == []  # all of it read without a query
        job.progress = 50  # and changed as any loaded object
    with database.session() as session:
        assert session.scalar(select(Job.progress).where(Job.id == job.id)) == 50


def _record(statements: list[str]) -> Callable[..., None]:
    def before_cursor_execute(_connection: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    return before_cursor_execute
