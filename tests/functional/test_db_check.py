"""`dfe db check` (dfe.db.migrate.check) sees a missing archive trigger; upgrade repairs it."""

from __future__ import annotations

from sqlalchemy import func, inspect, select

from dfe.db.archive_triggers import expected_triggers, installed_archive_triggers
from dfe.db.migrate import check, current_revision, head_revision, upgrade
from dfe.models import ARCHIVED_TABLES, Cluster
from dfe.schemas import ClusterCreate
from dfe.services import infrastructure


def drop_trigger(db, name: str, table: str) -> None:  # type: ignore[no-untyped-def]
    on = f" ON {table}" if db.dialect == "postgresql" else ""
    with db.engine.begin() as connection:
        connection.exec_driver_sql(f"DROP TRIGGER {name}{on}")


def test_a_migrated_database_checks_ok(db, engine_name):
    report = check(db)
    assert report.ok, report.problems
    assert report.problems == []
    assert current_revision(db) == head_revision(db)
    assert any("archive triggers" in line for line in report.checked)
    assert any("app keys" in line for line in report.checked)
    with db.engine.connect() as connection:
        installed = installed_archive_triggers(connection)
    assert set(expected_triggers(db.dialect)) <= installed


def test_a_dropped_archive_trigger_is_reported_and_upgrade_puts_it_back(db, engine_name):
    try:
        drop_trigger(db, "dfe_archive_instance_t", "instance_t")

        report = check(db)
        assert not report.ok
        assert len(report.problems) == 1, report.problems
        assert "dfe_archive_instance_t" in report.problems[0]
        assert "dfe db upgrade" in report.problems[0]
    finally:
        upgrade(db)  # also repairs the shared per-worker database if an assert failed

    report = check(db)
    assert report.ok, report.problems
    # And the reinstalled trigger works.
    with db.transaction(actor="ops") as s:
        infrastructure.create_cluster(s, ClusterCreate(name="c", subdomain="c.test"))
    with db.transaction(actor="ops") as s:
        infrastructure.delete_cluster(s, "c")
    with db.session() as s:
        archived = ARCHIVED_TABLES[Cluster.__table__]
        assert s.scalar(select(func.count()).select_from(archived)) == 1


def test_a_broken_key_cleanup_is_reported(db, engine_name):
    """Keys die with their owner: by ON DELETE CASCADE, plus triggers on SQLite (whose
    bare shell has foreign keys off). Removing either is reported."""
    fk = "fk_app_key_t_user_id_user_t"
    if engine_name == "sqlite":
        broken, repair = [("DROP TRIGGER dfe_keys_user_t")], None
        expected = "dfe_keys_user_t"
    else:
        drop = "CONSTRAINT" if engine_name == "postgresql" else "FOREIGN KEY"
        broken = [f"ALTER TABLE app_key_t DROP {drop} {fk}"]
        repair = (
            f"ALTER TABLE app_key_t ADD CONSTRAINT {fk} FOREIGN KEY (user_id) "
            "REFERENCES user_t (id) ON DELETE CASCADE"
        )
        expected = "app_key_t.user_id does not cascade"
    try:
        with db.engine.begin() as connection:
            for statement in broken:
                connection.exec_driver_sql(statement)
        report = check(db)
        assert not report.ok
        assert [p for p in report.problems if expected in p], report.problems
    finally:
        if repair is not None:
            with db.engine.begin() as connection:
                connection.exec_driver_sql(repair)
        upgrade(db)
    assert check(db).ok, check(db).problems


def test_every_archive_trigger_missing_is_listed(db, engine_name):
    try:
        for live in ARCHIVED_TABLES:
            drop_trigger(db, f"dfe_archive_{live.name}", live.name)
        report = check(db)
        for live in ARCHIVED_TABLES:
            assert any(f"dfe_archive_{live.name} " in p for p in report.problems), live.name
    finally:
        upgrade(db)
    assert check(db).ok


def test_instance_names_have_a_trigram_index_on_postgresql(db, engine_name):
    """Migration 0009: the admin UI's substring search over instance names has a GIN
    trigram index on PostgreSQL (bench/ui shows it used), and `dfe db check` does not
    count that index, which the models do not declare, as drift."""
    with db.engine.connect() as connection:
        if db.dialect != "postgresql":
            assert "ix_instance_t_name_trgm" not in {
                index["name"] for index in inspect(connection).get_indexes("instance_t")
            }
            return
        definition = connection.exec_driver_sql(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_instance_t_name_trgm'"
        ).scalar_one()
    assert "USING gin (lower((name)::text) gin_trgm_ops)" in definition
    assert check(db).ok
