"""Moving an instance to another db server while the web tier keeps writing to it:
every write the web tier acknowledged is there after the move."""

from __future__ import annotations

import threading

import pytest
from tests.functional.test_host import console_db, hosting, server_cluster

__all__ = ["console_db", "hosting"]


@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
def test_no_acknowledged_write_is_lost_during_a_move(hosting, kind):
    world = hosting()
    server_cluster(world, kind)  # a db server on that engine, to move to
    world.launch("mover")
    key = world.api_key("mover")
    created = world.call(
        "POST",
        "mover",
        "/api/tables",
        key,
        json={"name": "events", "columns": [{"name": "label", "type": "string"}]},
    )
    assert created.status_code == 201, created.text

    acknowledged: list[str] = []
    refused: list[int] = []
    stop = threading.Event()

    def write() -> None:
        number = 0
        while not stop.is_set():
            label = f"event {number}"
            response = world.call(
                "POST", "mover", "/api/tables/events/rows", key, json={"label": label}
            )
            if response.status_code == 201:
                acknowledged.append(label)
                number += 1
            else:
                refused.append(response.status_code)
                if response.status_code == 503:
                    assert response.headers.get("retry-after")
                stop.wait(0.02)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        world.wait_for_feed()
        moved = world.console.post(
            "/api/v1/instances/mover/moves", json={"db_server": f"{kind}-db"}
        )
        assert moved.status_code == 202, moved.text
        assert moved.json()["job"]["status"] == "succeeded", moved.json()
        world.wait_for_feed()
        world.wait_for_feed()
        written_after = len(acknowledged)
        while len(acknowledged) < written_after + 5:  # writes work again, on the new server
            assert writer.is_alive()
            stop.wait(0.05)
    finally:
        stop.set()
        writer.join()

    shown = world.console.get("/api/v1/instances/mover").json()
    assert shown["db_server"] == f"{kind}-db"
    assert 503 in refused  # writes were refused while the database was copied
    found: list[str] = []
    offset = 0
    while True:
        page = world.call(
            "GET",
            "mover",
            "/api/tables/events/rows",
            key,
            params={"limit": 1000, "offset": offset},
        ).json()
        found.extend(row["label"] for row in page["items"])
        offset += len(page["items"])
        if offset >= page["total"]:
            break
    assert set(acknowledged) <= set(found)
    assert len(found) == len(set(found))
