"""The web tier's pure parts: host names, file paths, and the config cache's rules."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dfe.client import ConsoleUnavailable, NotFoundError
from dfe.host.app import instance_name
from dfe.host.configs import ConfigCache, ConsoleUnreachable
from dfe.host.problems import Problem
from dfe.host.runtime.files import split_path
from dfe.schemas import InstanceChange, InstanceChanges, InstanceConfig

AT = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("host", "name"),
    [
        ("shop.localhost", "shop"),
        ("Shop.LocalHost:8080", "shop"),
        ("shop.localhost.", "shop"),
        ("my-shop.apps.example.com", "my-shop"),
        ("localhost:8080", None),
        ("a.b.localhost", None),
        ("1shop.localhost", None),
        ("shop.example.org", None),
        ("[::1]:8080", None),
        ("", None),
        ("shop_x.localhost", None),
    ],
)
def test_instance_names_from_host_headers(host, name):
    assert instance_name(host, ("localhost", "apps.example.com")) == name


@pytest.mark.parametrize(
    ("path", "names"),
    [("", []), ("a", ["a"]), ("a/b/c.txt", ["a", "b", "c.txt"]), ("dir/", ["dir"])],
)
def test_paths_that_stay_inside(path, names):
    assert split_path(path) == names


@pytest.mark.parametrize(
    "path",
    ["..", "../x", "a/../b", "a/./b", "/etc/passwd", "a//b", ".private", "a/.env", "a\\b",
     "a\x00b", "a\nb", "x" * 256, "a/" * 600],
)  # fmt: skip
def test_paths_that_could_leave_are_refused(path):
    with pytest.raises(Problem) as refused:
        split_path(path)
    assert refused.value.status == 400


def config(name: str = "shop", instance_id: int = 1, changed_at: datetime = AT) -> InstanceConfig:
    return InstanceConfig(
        id=instance_id,
        name=name,
        host=f"{name}.localhost",
        cluster="local",
        provision_state="provisioned",
        ready_state="ready",
        operational_state="activated",
        version="v1",
        changed_at=changed_at,
    )


class FakeConsole:
    def __init__(self) -> None:
        self.configs: dict[str, InstanceConfig] = {}
        self.down = False
        self.asked: list[str] = []

    async def get_instance_config(self, name: str) -> InstanceConfig:
        self.asked.append(name)
        await asyncio.sleep(0)
        if self.down:
            raise ConsoleUnavailable("down", method="GET", url="u", attempts=1)
        if name not in self.configs:
            raise NotFoundError(404, "not_found", "no such instance")
        return self.configs[name]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def cache(console: FakeConsole, clock: Clock, gone: list[str] | None = None) -> ConfigCache:
    return ConfigCache(
        console,  # type: ignore[arg-type]
        ttl=300,
        poll_interval=2,
        clock=clock,
        on_gone=(gone if gone is not None else []).append,
    )


def test_one_fetch_for_many_waiting_requests_then_the_cache():
    console, clock = FakeConsole(), Clock()
    console.configs["shop"] = config()
    configs = cache(console, clock)

    async def many() -> list[Any]:
        return await asyncio.gather(*(configs.get("shop") for _ in range(10)))

    assert {c.name for c in asyncio.run(many())} == {"shop"}
    assert asyncio.run(configs.get("shop")) is not None
    assert console.asked == ["shop"]


def test_expired_configs_are_served_while_the_console_is_down():
    console, clock = FakeConsole(), Clock()
    console.configs["shop"] = config()
    configs = cache(console, clock)
    asyncio.run(configs.get("shop"))
    console.down = True
    clock.now = 1000
    assert asyncio.run(configs.get("shop")) is not None
    assert asyncio.run(configs.get("shop")) is not None
    assert console.asked == ["shop", "shop"]  # not asked again for a few seconds
    with pytest.raises(ConsoleUnreachable):
        asyncio.run(configs.get("other"))


def test_the_feed_drops_what_changed_and_forgets_what_was_archived():
    console, clock = FakeConsole(), Clock()
    gone: list[str] = []
    console.configs = {"shop": config(), "blog": config("blog", 2)}
    configs = cache(console, clock, gone)
    for name in ("shop", "blog", "nope"):
        asyncio.run(configs.get(name))
    assert gone == ["nope"]
    later = AT + timedelta(seconds=1)

    # Repeats of changes already seen (the cursor overlaps) change nothing.
    same = InstanceChanges(cursor="1", changes=[InstanceChange(id=1, name="shop", changed_at=AT)])
    assert configs.apply(same) == []
    acted = configs.apply(
        InstanceChanges(
            cursor="2",
            changes=[
                InstanceChange(id=1, name="shop", changed_at=later),
                InstanceChange(id=2, name="blog", changed_at=later, archived=True),
                InstanceChange(id=3, name="nope", changed_at=later),  # created since
            ],
        )
    )
    assert acted == ["shop", "blog", "nope"]
    assert gone == ["nope", "blog"]
    assert configs.cached("blog") is None
    console.configs["shop"] = config(changed_at=later)
    asyncio.run(configs.get("shop"))
    assert console.asked.count("shop") == 2
    assert configs.apply(InstanceChanges(cursor="3", changes=[], reset=True)) == ["shop", "nope"]
