"""Usage metrics and daily tasks on every engine: request counts added up from several
reports, who sees which rows, and each daily task run once a day however many workers
ask."""

from __future__ import annotations

from datetime import timedelta

import pytest

from dfe.config import Settings
from dfe.enums import ServerType
from dfe.jobs import daily
from dfe.models import DailyRun
from dfe.schemas import ClusterCreate, MountCreate, RequestCounts, ServerCreate, UserCreate
from dfe.services import identity, infrastructure, instances, metrics
from dfe.services.errors import InvalidInput

PASSWORD = "a-long-enough-password"


@pytest.fixture
def estate(db):
    """Two instances on web server web-1 (ann's and bob's), one on web-2 (ann's)."""
    with db.transaction(actor="test") as s:
        mount = infrastructure.create_mount(s, MountCreate(name="disk", root_path="/srv/disk"))
        cluster = infrastructure.create_cluster(s, ClusterCreate(name="c", subdomain="c.test"))
        servers = {}
        for name, kind in (("db", ServerType.DB), ("app", ServerType.APP),
                           ("web-1", ServerType.WEB), ("web-2", ServerType.WEB)):  # fmt: skip
            servers[name] = infrastructure.create_server(
                s, ServerCreate(name=name, server_type=kind, host="h", mount=mount.name)
            )
            infrastructure.assign_server(s, cluster.id, servers[name].id)
        ann = identity.create_user(s, UserCreate(email="ann@example.com", password=PASSWORD))
        bob = identity.create_user(s, UserCreate(email="bob@example.com", password=PASSWORD))
        ids = {}
        for name, owner, web in (("alpha", ann, "web-1"), ("beta", bob, "web-1"),
                                 ("gamma", ann, "web-2")):  # fmt: skip
            placed = {
                ServerType.DB: servers["db"],
                ServerType.APP: servers["app"],
                ServerType.WEB: servers[web],
            }
            ids[name] = instances.create_instance_record(s, name, owner, cluster, placed).id
        return {
            "ids": ids,
            "ann": ann.id,
            "bob": bob.id,
            "web-1": servers["web-1"].id,
            "web-2": servers["web-2"].id,
        }


def report(ids: dict[str, int], **requests: int) -> RequestCounts:
    return RequestCounts(
        day=metrics.today(),
        items=[{"instance_id": ids[name], "requests": n} for name, n in requests.items()],
    )


def test_reports_add_up_and_stay_on_their_web_server(db, estate):
    ids = estate["ids"]
    with db.transaction(actor="test") as s:
        assert metrics.add_requests(s, report(ids, alpha=3, beta=1), estate["web-1"]) == 2
    with db.transaction(actor="test") as s:
        assert metrics.add_requests(s, report(ids, alpha=2), estate["web-1"]) == 1
        # web-2 does not serve alpha: its count for alpha is not taken.
        assert metrics.add_requests(s, report(ids, alpha=50, gamma=4), estate["web-2"]) == 1
    with db.session() as s:
        rows = {row.instance: row.requests for row in metrics.list_metrics(s)}
        assert rows == {"alpha": 5, "beta": 1, "gamma": 4}
        mine = {row.instance for row in metrics.list_metrics(s, owner_id=estate["ann"])}
        assert mine == {"alpha", "gamma"}
        assert [r.instance for r in metrics.list_metrics(s, instance="beta")] == ["beta"]
        later = metrics.today() + timedelta(days=1)
        assert metrics.list_metrics(s, since=later, until=later) == []
        with pytest.raises(InvalidInput):
            metrics.list_metrics(s, since=later, until=metrics.today())
        with pytest.raises(InvalidInput):
            metrics.list_metrics(s, since=metrics.today() - timedelta(days=500))


def test_history_outlives_a_deleted_instance(db, estate):
    ids = estate["ids"]
    with db.transaction(actor="test") as s:
        metrics.add_requests(s, report(ids, beta=2), estate["web-1"])
        instances.delete_instance_record(s, "beta")
    with db.transaction(actor="test") as s:
        # A process that served it before it went still reports what it counted.
        assert metrics.add_requests(s, report(ids, beta=1), estate["web-1"]) == 1
    with db.session() as s:
        assert {r.instance: r.requests for r in metrics.list_metrics(s)} == {"beta": 3}
        assert metrics.list_metrics(s, owner_id=estate["bob"]) == []  # owners see live ones


def test_each_daily_task_runs_once_a_day_and_failures_are_recorded(db, monkeypatch):
    ran: list[str] = []

    def counted(_database, _settings) -> str:
        ran.append("counted")
        return "fine"

    def broken(_database, _settings) -> str:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(daily, "_TASKS", {})
    monkeypatch.setattr(daily, "load_tasks", lambda: None)
    daily.daily_task("test.counted")(counted)
    daily.daily_task("test.broken")(broken)
    with pytest.raises(ValueError, match="registered already"):
        daily.daily_task("test.counted")(broken)
    settings = Settings()
    today = metrics.today()
    assert daily.run_due(db, settings, today) == ["test.counted", "test.broken"]
    assert daily.run_due(db, settings, today) == []  # a second worker: nothing left
    assert ran == ["counted"]
    assert daily.run_due(db, settings, today + timedelta(days=1)) == [
        "test.counted",
        "test.broken",
    ]
    with db.session() as s:
        runs = {(r.task, r.day): r for r in s.query(DailyRun)}
        assert runs[("test.counted", today)].succeeded is True
        assert runs[("test.counted", today)].message == "fine"
        assert runs[("test.broken", today)].succeeded is False
        assert "disk on fire" in (runs[("test.broken", today)].message or "")


def test_the_metrics_task_is_registered():
    assert "metrics.gather" in daily.registered()
