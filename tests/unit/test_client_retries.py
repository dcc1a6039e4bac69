"""dfe.client retries: idempotent calls again on connection failures and 502/503/504,
each attempt signed afresh; POST and PATCH never again. No test here waits: the
clients take the sleep function."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterator
from typing import Any

import httpx2
import pytest

from dfe.auth.signatures import MemoryNonceStore, verify_request
from dfe.client import (
    AsyncConsoleClient,
    ConsoleClient,
    ConsoleUnavailable,
    ServerError,
    TooManyRequestsError,
)
from dfe.client._base import MAX_DELAY, RetryPolicy
from dfe.client.calls import get_mount
from dfe.schemas import MountCreate, MountUpdate

BASE = "http://console.test"
CLIENT_ID = "dfe_retries"
SECRET = "retries-secret-0123456789abcdefghijklmnop"
MOUNT = {
    "id": 1,
    "name": "m1",
    "mount_type": "local",
    "root_path": "/srv/m1",
    "config": {},
    "created_at": "2026-01-01T00:00:00Z",
    "updated_at": "2026-01-01T00:00:00Z",
}
Step = Callable[[httpx2.Request], httpx2.Response]


def refused(request: httpx2.Request) -> httpx2.Response:
    raise httpx2.ConnectError("Connection refused", request=request)


def timed_out(request: httpx2.Request) -> httpx2.Response:
    raise httpx2.ReadTimeout("timed out", request=request)


def status(code: int, **kwargs: Any) -> Step:
    return lambda _request: httpx2.Response(code, **kwargs)


ok = status(200, json=MOUNT)
no_content = status(204)


class Script:
    """Answers each request with the next step (the last one repeats), after checking
    its signature against a replay cache, as the Console does."""

    def __init__(self, *steps: Step) -> None:
        self.steps = list(steps)
        self.requests: list[httpx2.Request] = []
        self.nonces = MemoryNonceStore()

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        url = request.url
        verify_request(
            request.method,
            f"{url.scheme}://{url.netloc.decode()}{url.raw_path.decode()}",
            request.headers,
            request.content,
            resolve_secret={CLIENT_ID: SECRET}.get,
            nonces=self.nonces,
        )
        step = self.steps[min(len(self.requests), len(self.steps)) - 1]
        return step(request)

    @property
    def nonces_sent(self) -> list[str]:
        return [
            r.headers["signature-input"].split('nonce="')[1].split('"')[0] for r in self.requests
        ]


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def make(sleeps: Sleeps) -> Iterator[Callable[..., ConsoleClient]]:
    made: list[ConsoleClient] = []

    def build(script: Script, **options: Any) -> ConsoleClient:
        options.setdefault("sleep", sleeps)
        client = ConsoleClient(
            BASE, CLIENT_ID, SECRET, transport=httpx2.MockTransport(script), **options
        )
        made.append(client)
        return client

    yield build
    for client in made:
        client.close()


@pytest.mark.parametrize("failure", [refused, timed_out], ids=["refused", "timeout"])
def test_get_is_retried_on_connection_failures(
    make: Callable[..., ConsoleClient], sleeps: Sleeps, failure: Step
) -> None:
    script = Script(failure, failure, ok)
    assert make(script).get_mount("m1").name == "m1"
    assert len(script.requests) == 3
    assert len(sleeps) == 2


@pytest.mark.parametrize("code", [502, 503, 504])
def test_get_is_retried_on_gateway_statuses(
    make: Callable[..., ConsoleClient], sleeps: Sleeps, code: int
) -> None:
    script = Script(status(code), status(code), status(code), ok)
    assert make(script).get_mount("m1").name == "m1"
    assert len(script.requests) == 4
    assert len(sleeps) == 3


def test_each_retry_is_signed_again_with_a_new_nonce(make: Callable[..., ConsoleClient]) -> None:
    script = Script(refused, status(503), status(502), ok)
    make(script).get_mount("m1")
    nonces = script.nonces_sent
    assert len(nonces) == 4
    assert len(set(nonces)) == 4
    assert len({r.headers["signature"] for r in script.requests}) == 4
    assert len(script.nonces) == 4  # the replay cache accepted each one


@pytest.mark.parametrize(
    ("name", "call"),
    [
        ("put", lambda c: c.assign_server("eu-1", "web-1")),
        ("delete", lambda c: c.delete_mount("m1")),
        ("delete", lambda c: c.unassign_server("eu-1", "web-1")),
    ],
)
def test_put_and_delete_are_retried(
    make: Callable[..., ConsoleClient], name: str, call: Callable[[ConsoleClient], None]
) -> None:
    script = Script(refused, status(503), no_content)
    assert call(make(script)) is None
    assert [r.method for r in script.requests] == [name.upper()] * 3


@pytest.mark.parametrize(
    "failure", [refused, status(503), status(502)], ids=["refused", "503", "502"]
)
@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.create_mount(MountCreate(name="m1", root_path="/srv/m1")),
        lambda c: c.login("ann@example.com", "a long enough pw"),
        lambda c: c.restore_archived("clusters", "eu-1"),
        lambda c: c.update_mount("m1", MountUpdate(root_path="/srv/x")),
    ],
    ids=["create", "login", "restore", "patch"],
)
def test_post_and_patch_are_never_retried(
    make: Callable[..., ConsoleClient],
    sleeps: Sleeps,
    failure: Step,
    call: Callable[[ConsoleClient], Any],
) -> None:
    script = Script(failure, ok)
    with pytest.raises((ConsoleUnavailable, ServerError)) as caught:
        call(make(script))
    assert len(script.requests) == 1
    assert sleeps == []
    if isinstance(caught.value, ConsoleUnavailable):
        assert caught.value.attempts == 1


def test_giving_up_on_connection_failures(
    make: Callable[..., ConsoleClient], sleeps: Sleeps
) -> None:
    script = Script(refused)
    with pytest.raises(ConsoleUnavailable) as caught:
        make(script, retries=3).get_mount("m1")
    assert caught.value.attempts == 4
    assert len(script.requests) == 4
    assert len(sleeps) == 3


def test_giving_up_on_503(make: Callable[..., ConsoleClient], sleeps: Sleeps) -> None:
    script = Script(status(503, json={"detail": "restarting"}))
    with pytest.raises(ServerError) as caught:
        make(script, retries=2).list_mounts()
    assert caught.value.status == 503
    assert len(script.requests) == 3
    assert len(sleeps) == 2


@pytest.mark.parametrize("code", [500, 429, 404, 409])
def test_other_statuses_are_not_retried(
    make: Callable[..., ConsoleClient], sleeps: Sleeps, code: int
) -> None:
    script = Script(status(code), ok)
    with pytest.raises(Exception) as caught:
        make(script).get_mount("m1")
    assert getattr(caught.value, "status", None) == code
    assert len(script.requests) == 1
    assert sleeps == []


def test_a_transport_failure_waiting_will_not_heal_is_not_retried(
    make: Callable[..., ConsoleClient], sleeps: Sleeps
) -> None:
    def proxy_refuses(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ProxyError("407 Proxy Authentication Required", request=request)

    script = Script(proxy_refuses, ok)
    with pytest.raises(ConsoleUnavailable, match="ProxyError"):
        make(script).get_mount("m1")
    assert len(script.requests) == 1


def test_no_retries_when_told(make: Callable[..., ConsoleClient], sleeps: Sleeps) -> None:
    script = Script(refused, ok)
    with pytest.raises(ConsoleUnavailable):
        make(script, retries=0).get_mount("m1")
    assert len(script.requests) == 1
    assert sleeps == []


def test_backoff_doubles_with_jitter_and_stays_short() -> None:
    policy = RetryPolicy(retries=3, backoff=0.25, jitter=lambda: 1.0)
    assert [policy.delay(n) for n in range(4)] == [0.25, 0.5, 1.0, MAX_DELAY]
    low = RetryPolicy(retries=3, backoff=0.25, jitter=lambda: 0.0)
    assert [low.delay(n) for n in range(3)] == [0.125, 0.25, 0.5]
    worst = sum(policy.delay(n) or 0 for n in range(3))
    assert worst <= 2.0  # the default policy waits less than two seconds in all


def test_real_sleeps_follow_the_policy(make: Callable[..., ConsoleClient], sleeps: Sleeps) -> None:
    make(Script(refused, refused, refused, ok), backoff=0.1).get_mount("m1")
    assert len(sleeps) == 3
    for attempt, seconds in enumerate(sleeps):
        assert 0.1 * 2**attempt / 2 <= seconds <= 0.1 * 2**attempt


def test_retry_after_on_503_is_honoured_when_short(
    make: Callable[..., ConsoleClient], sleeps: Sleeps
) -> None:
    make(Script(status(503, headers={"Retry-After": "1"}), ok)).get_mount("m1")
    assert sleeps == [1.0]


def test_a_long_retry_after_ends_the_retries(
    make: Callable[..., ConsoleClient], sleeps: Sleeps
) -> None:
    script = Script(status(503, headers={"Retry-After": "120"}), ok)
    with pytest.raises(ServerError):
        make(script).get_mount("m1")
    assert len(script.requests) == 1
    assert sleeps == []


def test_policy_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="retries"):
        RetryPolicy(retries=-1)
    with pytest.raises(ValueError, match="backoff"):
        RetryPolicy(backoff=-0.1)
    assert RetryPolicy().may_retry(get_mount("m1"), 2)
    assert not RetryPolicy().may_retry(get_mount("m1"), 3)


def test_login_throttling_is_not_retried(make: Callable[..., ConsoleClient]) -> None:
    script = Script(status(429, json={"code": "too_many_requests"}, headers={"Retry-After": "1"}))
    with pytest.raises(TooManyRequestsError):
        make(script).login("ann@example.com", "pw")
    assert len(script.requests) == 1


# The async client


def test_async_get_is_retried_and_post_is_not() -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    script = Script(refused, status(503), ok)

    async def go() -> None:
        async with AsyncConsoleClient(
            BASE, CLIENT_ID, SECRET, transport=httpx2.MockTransport(script), sleep=sleep
        ) as client:
            assert (await client.get_mount("m1")).name == "m1"
            script.steps = [refused]
            script.requests.clear()
            with pytest.raises(ConsoleUnavailable):
                await client.create_mount(MountCreate(name="m1", root_path="/srv/m1"))

    asyncio.run(go())
    assert len(slept) == 2
    assert len(script.requests) == 1
    assert len(script.nonces) == 4


def test_async_gives_up_like_sync() -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    script = Script(refused)

    async def go() -> ConsoleUnavailable:
        async with AsyncConsoleClient(
            BASE, CLIENT_ID, SECRET, retries=2, transport=httpx2.MockTransport(script), sleep=sleep
        ) as client:
            with pytest.raises(ConsoleUnavailable) as caught:
                await client.list_clusters()
            return caught.value

    error = asyncio.run(go())
    assert error.attempts == 3
    assert len(slept) == 2


# A real socket nobody listens on


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_refused_connection_is_console_unavailable(closed_port: int, sleeps: Sleeps) -> None:
    url = f"http://127.0.0.1:{closed_port}"
    with (
        ConsoleClient(url, CLIENT_ID, SECRET, retries=2, sleep=sleeps, timeout=2) as client,
        pytest.raises(ConsoleUnavailable) as caught,
    ):
        client.health()
    assert caught.value.attempts == 3
    assert len(sleeps) == 2
    assert "ConnectError" in caught.value.reason


def test_a_refused_connection_async(closed_port: int) -> None:
    async def go() -> ConsoleUnavailable:
        async def no_wait(_seconds: float) -> None:
            return None

        async with AsyncConsoleClient(
            f"http://127.0.0.1:{closed_port}", CLIENT_ID, SECRET, retries=1, sleep=no_wait
        ) as client:
            with pytest.raises(ConsoleUnavailable) as caught:
                await client.ready()
            return caught.value

    assert asyncio.run(go()).attempts == 2
