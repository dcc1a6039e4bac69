"""Placement as a property: for random clusters, the choice a plain model of the rules makes.

The rules, written independently of the code under test: for each server type, among
the cluster's enabled servers of that type with room (no capacity, or fewer instances
than it), the least loaded (instances / capacity; none = 0), then the fewest instances,
then the name; NoCapacity exactly when the cluster is full or a type has no candidate.
Rows are built in a transaction of the `db` fixture (every engine) and rolled back after each
example; the counters are set directly (placement reads them, triggers keep them).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dfe.enums import ServerType
from dfe.models import Cluster, ClusterServer, Server
from dfe.provisioning.placement import (
    FIRSTS,
    PREPARED_CHOICE,
    NoCapacity,
    _least_loaded,
    place,
)


@dataclass(frozen=True)
class Spec:
    name: str
    server_type: ServerType
    capacity: int | None
    count: int
    enabled: bool
    member: bool  # of the cluster under test (else of another cluster)

    @property
    def has_room(self) -> bool:
        return self.capacity is None or self.count < self.capacity

    @property
    def key(self) -> tuple[float, int, str]:
        if self.capacity is None:
            load = 0.0
        elif self.capacity == 0:
            load = 1.0
        else:
            load = self.count / self.capacity
        return (load, self.count, self.name)


MOSTLY_TRUE = st.sampled_from([True, True, True, False])


@st.composite
def estates(draw: st.DrawFn) -> tuple[list[Spec], int | None, int]:
    """Up to 6 servers of each type (often several with room, to compare), names drawn
    from a small alphabet so that loads and counts tie often."""
    names = iter(
        draw(
            st.lists(st.text("abc", min_size=1, max_size=3), min_size=18, max_size=18, unique=True)
        )
    )
    specs = [
        Spec(
            name=next(names),
            server_type=server_type,
            capacity=draw(st.none() | st.integers(0, 6)),
            count=draw(st.integers(0, 8)),
            enabled=draw(MOSTLY_TRUE),
            member=draw(MOSTLY_TRUE),
        )
        for server_type in ServerType
        for _ in range(draw(st.integers(0, 6)))
    ]
    cluster_capacity = draw(st.none() | st.integers(0, 30))
    cluster_count = draw(st.integers(0, 12))
    return draw(st.permutations(specs)), cluster_capacity, cluster_count


def expected(specs: list[Spec], cluster_capacity: int | None, cluster_count: int):
    """{type: server name}, or the server type with no room ('cluster' when it is full)."""
    if cluster_capacity is not None and cluster_count >= cluster_capacity:
        return "cluster"
    chosen = {}
    for server_type in ServerType:
        candidates = [
            s
            for s in specs
            if s.member and s.enabled and s.server_type is server_type and s.has_room
        ]
        if not candidates:
            return server_type
        chosen[server_type] = min(candidates, key=lambda s: s.key).name
    return chosen


def build(session, specs: list[Spec], cluster_capacity: int | None, cluster_count: int) -> int:
    cluster = Cluster(
        name="here", subdomain="here.test", max_instances=cluster_capacity, instance_count=0
    )
    elsewhere = Cluster(name="elsewhere", subdomain="elsewhere.test")
    session.add_all([cluster, elsewhere])
    session.flush()
    cluster.instance_count = cluster_count
    for spec in specs:  # inserted in a random order: ids must not decide
        server = Server(
            name=spec.name,
            server_type=spec.server_type,
            host="h.test",
            config={},
            max_instances=spec.capacity,
            is_enabled=spec.enabled,
        )
        session.add(server)
        session.flush()
        server.instance_count = spec.count
        target = cluster if spec.member else elsewhere
        session.add(ClusterServer(cluster_id=target.id, server_id=server.id))
    session.flush()
    return cluster.id


def decide(session, cluster_id: int):
    try:
        placement = place(session, cluster_id)
    except NoCapacity as refusal:
        return refusal
    return {server_type: server.name for server_type, server in placement.servers.items()}


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(estate=estates())
def test_placement_picks_the_least_loaded_server_with_room(db, estate):
    specs, cluster_capacity, cluster_count = estate
    want = expected(specs, cluster_capacity, cluster_count)
    session = db.session(actor="test")
    try:
        cluster_id = build(session, specs, cluster_capacity, cluster_count)
        first = decide(session, cluster_id)
        second = decide(session, cluster_id)  # the same input, the same answer
    finally:
        session.rollback()
        session.close()

    if isinstance(want, dict):
        assert first == want
        assert second == want
        return
    assert isinstance(first, NoCapacity), (first, want)
    assert isinstance(second, NoCapacity)
    assert first.status == 409 and first.code == "insufficient_capacity"
    if want == "cluster":
        assert "is full" in first.message
    else:
        assert f"no enabled {want.value} server with room" in first.message
    assert first.message == second.message


@pytest.mark.parametrize(
    ("a", "b"),
    [
        # 1/3 < 1/2 although b has fewer instances.
        ((1, 3), (1, 2)),
        # Equal load (1/2 = 2/4): fewer instances first.
        ((1, 2), (2, 4)),
        # No capacity counts as no load at all.
        ((5, None), (1, 2)),
    ],
)
def test_load_then_count_then_name(db, a, b):
    """A few cases spelled out, with the expected winner always named 'zz' (last by
    name), so that the name tie-break cannot be what picks it."""
    winner = Spec("zz", ServerType.DB, a[1], a[0], True, True)
    loser = Spec("aa", ServerType.DB, b[1], b[0], True, True)
    others = [Spec(f"{t.value}1", t, None, 0, True, True) for t in (ServerType.WEB, ServerType.APP)]
    session = db.session(actor="test")
    try:
        cluster_id = build(session, [loser, winner, *others], None, 0)
        assert decide(session, cluster_id)[ServerType.DB] == "zz"
    finally:
        session.rollback()
        session.close()


def test_the_placement_index_serves_the_choice(db):
    """The placement index (migrations 0010, 0011) keeps each type's servers in load
    order; it serves the choice only while the query orders by the index's own
    expression (PostgreSQL, SQLite) or column (MariaDB): a bound constant or an edited
    expression would silently fall back to sorting every server of the type.
    PostgreSQL runs the choice prepared, on its generic plan: that plan is read."""
    with db.engine.connect() as connection:
        dialect = connection.dialect.name
        if dialect == "postgresql":
            _least_loaded(connection, 1)  # prepares the choice on this connection
            # The test tables are tiny: make the index the only way, as it is with many.
            connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
            connection.exec_driver_sql("SET LOCAL enable_sort = off")
            connection.exec_driver_sql("SET LOCAL plan_cache_mode = force_generic_plan")
            explain = f"EXPLAIN EXECUTE {PREPARED_CHOICE}(1)"
        else:
            compiled = (
                FIRSTS[dialect]
                .params(p_cluster=1)
                .compile(dialect=connection.dialect, compile_kwargs={"literal_binds": True})
            )
            # MariaDB's plan is read as the optimizer makes it (FORCE INDEX would hide a
            # query that cannot use the index): it takes the index that saves the sort.
            explain = ("EXPLAIN QUERY PLAN " if dialect == "sqlite" else "EXPLAIN ") + str(compiled)
        rows = connection.exec_driver_sql(explain).all()
    plan = "\n".join(" ".join(str(value) for value in row) for row in rows)
    if dialect == "postgresql":
        assert plan.count("Index Scan using ix_server_t_placement") == 3, plan
        assert plan.count("LockRows") == 3, plan  # each choice locks the row it returns
        assert "Sort" not in plan, plan
    elif dialect == "sqlite":
        assert plan.count("USING INDEX ix_server_t_placement") == 3, plan
        assert "TEMP B-TREE" not in plan, plan
    else:
        assert plan.count("ix_server_t_placement") >= 3, plan
        assert "filesort" not in plan, plan
