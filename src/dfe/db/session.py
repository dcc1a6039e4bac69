"""Engines, sessions, and the archive context every delete carries.

`Database` is the one entry point: it owns the engine and hands out sessions
that know who is acting. Before the ORM deletes anything (flush or bulk
delete) the session tells the database triggers the actor and the batch id of
the current transaction; see `dfe.db.archive_triggers`.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, CursorResult, Engine, Executable, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import ORMExecuteState, Session, SessionTransaction, sessionmaker

from dfe.config import Settings
from dfe.crypto import install_keyring, keyring_from_settings
from dfe.db.archive_triggers import SQLITE_CONTEXT_TABLE
from dfe.db.sqlite_writer import connection_class, writer_lock

ACTOR = "actor"
_BATCH = "archive_batch"
_CONTEXT_SET = "archive_context_set"


SQLITE_BUSY_TIMEOUT = 30  # seconds a writer waits for another's commit


def create_db_engine(url: str, **kwargs: Any) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        connect_args: dict[str, Any] = {"timeout": SQLITE_BUSY_TIMEOUT}
        if parsed.database and parsed.database != ":memory:":
            path = Path(parsed.database)
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            # The file holds encrypted secrets and password hashes: owner only.
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
            lock = writer_lock(str(path), SQLITE_BUSY_TIMEOUT)
            connect_args["factory"] = connection_class(lock)
        engine = create_engine(url, connect_args=connect_args, **kwargs)
        event.listen(engine, "connect", sqlite_pragmas)
        return engine
    if parsed.get_backend_name() == "mysql":
        engine = create_engine(
            url, pool_pre_ping=True, connect_args={"charset": "utf8mb4"}, **kwargs
        )
        event.listen(engine, "checkin", _mysql_forget_context)
        return engine
    # psycopg prepares a statement on its 5th use, forgets them all at every rollback
    # (every read-only request ends with one), and then deallocates every prepared
    # statement of the connection, placement's own included: off.
    return create_engine(
        url, pool_pre_ping=True, connect_args={"prepare_threshold": None}, **kwargs
    )


def sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    # In WAL mode NORMAL never corrupts the database; a power cut may lose the last
    # commits. It spares an fsync per transaction, which every signed request has.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT * 1000}")
    cursor.close()


def _mysql_forget_context(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("SET @dfe_archive_batch = NULL, @dfe_archive_actor = NULL")
    cursor.close()


def _set_archive_context(connection: Connection, batch: str, actor: str | None) -> None:
    dialect = connection.dialect.name
    params = {"batch": batch, "actor": actor or ""}
    if dialect == "postgresql":
        connection.execute(
            text(
                "SELECT set_config('dfe.archive_batch', :batch, true), "
                "set_config('dfe.archive_actor', :actor, true)"
            ),
            params,
        )
    elif dialect in ("mysql", "mariadb"):
        connection.execute(
            text("SET @dfe_archive_batch = :batch, @dfe_archive_actor = NULLIF(:actor, '')"),
            params,
        )
    else:
        connection.execute(
            text(
                f"INSERT INTO {SQLITE_CONTEXT_TABLE} (batch, actor) "
                "VALUES (:batch, NULLIF(:actor, ''))"
            ),
            params,
        )


def _clear_archive_context(connection: Connection) -> None:
    dialect = connection.dialect.name
    if dialect == "postgresql":
        connection.execute(
            text(
                "SELECT set_config('dfe.archive_batch', '', true), "
                "set_config('dfe.archive_actor', '', true)"
            )
        )
    elif dialect in ("mysql", "mariadb"):
        connection.execute(text("SET @dfe_archive_batch = NULL, @dfe_archive_actor = NULL"))
    else:
        connection.execute(text(f"DELETE FROM {SQLITE_CONTEXT_TABLE}"))


def archive_batch(session: Session) -> str:
    """The batch id shared by everything this session's transaction archives."""
    batch: str = session.info.setdefault(_BATCH, uuid.uuid4().hex)
    return batch


def _before_flush(session: Session, _context: Any, _instances: Any) -> None:
    if session.deleted:
        _set_archive_context(session.connection(), archive_batch(session), session.info.get(ACTOR))
        session.info[_CONTEXT_SET] = True


def _after_flush(session: Session, _context: Any) -> None:
    if session.info.pop(_CONTEXT_SET, False):
        _clear_archive_context(session.connection())


def _around_bulk_delete(state: ORMExecuteState) -> Any:
    if not state.is_delete:
        return None
    connection = state.session.connection()
    _set_archive_context(connection, archive_batch(state.session), state.session.info.get(ACTOR))
    result = state.invoke_statement()
    # Only on success: after a refused delete the transaction may be unusable (on
    # PostgreSQL), and the context dies with its rollback anyway.
    _clear_archive_context(connection)
    return result


def execute_prebuilt(
    session: Session,
    statement: Executable,
    params: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
) -> CursorResult[*tuple[Any, ...]]:
    """Run a statement built once at import (columns, not objects) on the session's
    connection. Through `session.execute` the ORM would copy and re-key it at every
    call, two to three times the cost of running it. Pending changes are flushed
    first, as the ORM would. Not for a DELETE of archived rows: the ORM's execution
    sets their archive context (`_around_bulk_delete`)."""
    session.flush()
    return session.connection().execute(statement, params)


def _after_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        session.info.pop(_BATCH, None)


class Database:
    """An engine plus a session factory whose sessions carry the archive context."""

    def __init__(self, url: str, **engine_kwargs: Any) -> None:
        self.url = url
        self.engine = create_db_engine(url, **engine_kwargs)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        event.listen(self._sessions, "before_flush", _before_flush)
        event.listen(self._sessions, "after_flush_postexec", _after_flush)
        event.listen(self._sessions, "do_orm_execute", _around_bulk_delete)
        event.listen(self._sessions, "after_transaction_end", _after_transaction_end)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def session(self, actor: str | None = None) -> Session:
        session = self._sessions()
        session.info[ACTOR] = actor
        return session

    @contextmanager
    def transaction(self, actor: str | None = None) -> Iterator[Session]:
        """A session whose work is committed on success and rolled back on error."""
        with self.session(actor) as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.engine.dispose()


def open_database(settings: Settings) -> Database:
    """The database the settings name, with the settings' keyring installed."""
    install_keyring(keyring_from_settings(settings))
    return Database(settings.effective_database_url)
