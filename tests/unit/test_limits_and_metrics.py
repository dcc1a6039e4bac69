"""The web tier's rate limiter on memory counters, the Prometheus text, the SVG charts
and the usage counter: the parts that need no server."""

from __future__ import annotations

import asyncio
import re
from datetime import date, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dfe.client import ConsoleUnavailable, InvalidInputError, ServerError
from dfe.enums import LIMIT_PERIOD_SECONDS, LimitPeriod, LimitScope
from dfe.host.limiter import MemoryCounters, RateLimiter
from dfe.host.usage import UsageCounter
from dfe.metrics.chart import bar_chart, human_bytes, usage_charts
from dfe.metrics.prometheus import RequestMetrics, may_read
from dfe.schemas import InstanceLimit, MetricPublic, RequestCounts


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def limit(
    limit_id: int = 1,
    max_requests: int = 3,
    period: LimitPeriod = LimitPeriod.MINUTE,
    scope: LimitScope = LimitScope.INSTANCE,
    client_id: str | None = None,
    generation: int = 0,
) -> InstanceLimit:
    return InstanceLimit(
        id=limit_id,
        label=f"limit-{limit_id}",
        scope=scope,
        period=period,
        max_requests=max_requests,
        client_id=client_id,
        generation=generation,
    )


def check(limiter: RateLimiter, limits: list[InstanceLimit], client_id: str | None = None):
    return asyncio.run(limiter.check(7, limits, client_id))


@settings(max_examples=60, deadline=None)
@given(
    max_requests=st.integers(min_value=0, max_value=40),
    period=st.sampled_from(list(LimitPeriod)),
    offset=st.integers(min_value=0, max_value=999),
    extra=st.integers(min_value=1, max_value=5),
)
def test_n_requests_pass_in_a_window_and_the_next_ones_are_refused(
    max_requests, period, offset, extra
):
    seconds = LIMIT_PERIOD_SECONDS[period]
    window_start = (1_800_000_000 // seconds) * seconds
    clock = Clock(window_start + seconds * offset / 1000)
    limiter = RateLimiter(MemoryCounters(), clock)
    rule = limit(max_requests=max_requests, period=period)
    for served in range(max_requests):
        decision = check(limiter, [rule])
        assert decision is not None and decision.refused is None
        headers = dict(decision.headers())
        assert headers[b"ratelimit-remaining"] == str(max_requests - served - 1).encode()
        assert b"retry-after" not in headers
    for _ in range(extra):
        decision = check(limiter, [rule])
        assert decision is not None and decision.refused is not None
        headers = dict(decision.headers())
        assert headers[b"ratelimit-limit"] == str(max_requests).encode()
        assert headers[b"ratelimit-remaining"] == b"0"
        reset = int(headers[b"ratelimit-reset"])
        assert headers[b"retry-after"] == str(reset).encode()
        assert 1 <= reset <= seconds
        assert window_start + seconds - clock.now <= reset < window_start + seconds - clock.now + 1
        assert headers[b"dfe-ratelimit-label"] == b"limit-1"
        assert headers[b"ratelimit-policy"] == f"{max_requests};w={seconds}".encode()
    # The next window starts from zero.
    clock.now = window_start + seconds
    decision = check(limiter, [rule])
    assert decision is not None
    assert (decision.refused is None) == (max_requests > 0)


@settings(max_examples=40, deadline=None)
@given(
    calls=st.lists(
        st.tuples(st.sampled_from(["a", "b", None]), st.integers(0, 2)), min_size=1, max_size=60
    )
)
def test_counters_match_a_model_of_limits_keys_and_generations(calls):
    """Instance and key limits, with resets (generations) mixed in, against a plain model."""
    clock = Clock()
    limiter = RateLimiter(MemoryCounters(), clock)
    generation = 0
    model: dict[tuple[str, int], int] = {}
    for client_id, action in calls:
        if action == 2:
            generation += 1  # a reset of the instance limit
            continue
        rules = [
            limit(1, max_requests=5, generation=generation),
            limit(2, max_requests=2, scope=LimitScope.KEY, client_id="a"),
        ]
        decision = check(limiter, rules, client_id)
        assert decision is not None
        counts = {hit.limit.id: hit.count for hit in decision.hits}
        model[("instance", generation)] = model.get(("instance", generation), 0) + 1
        assert counts[1] == model[("instance", generation)]
        if client_id == "a":
            model[("key", 0)] = model.get(("key", 0), 0) + 1
            assert counts[2] == model[("key", 0)]
        else:
            assert 2 not in counts  # another key's requests do not count for key a
        expected_refusal = counts[1] > 5 or counts.get(2, 0) > 2
        assert (decision.refused is not None) == expected_refusal


def test_no_applicable_limit_means_no_decision():
    limiter = RateLimiter(MemoryCounters(), Clock())
    assert check(limiter, []) is None
    assert check(limiter, [limit(scope=LimitScope.KEY, client_id="k")], client_id=None) is None


def test_headers_describe_the_limit_nearest_to_running_out():
    limiter = RateLimiter(MemoryCounters(), Clock())
    rules = [limit(1, 100, LimitPeriod.DAY), limit(2, 2, LimitPeriod.MINUTE)]
    decision = check(limiter, rules)
    assert dict(decision.headers())[b"dfe-ratelimit-label"] == b"limit-2"
    check(limiter, rules)
    refused = check(limiter, rules)
    assert refused.refused.limit.id == 2


def test_memory_counters_sweep_expired_windows():
    counters = MemoryCounters(max_keys=10)
    for n in range(10):
        counters.increment_one(f"old{n}", ends=100, now=50)
    counters.increment_one("new", ends=300, now=200)
    assert len(counters) == 1  # the expired windows went when the table filled up


def test_redis_being_down_lets_requests_through():
    class Down:
        async def increment(self, keys, now):
            raise ConnectionError("down")

    assert check(RateLimiter(Down(), Clock()), [limit()]) is None


# Prometheus


def test_metrics_text_counts_requests_by_route_and_status():
    metrics = RequestMetrics("host")
    metrics.observe("/api/tables/{table}/rows", "GET", 200, 0.003)
    metrics.observe("/api/tables/{table}/rows", "GET", 200, 0.2)
    metrics.observe("/api/tables/{table}/rows", "GET", 429, 0.001)
    metrics.gauges.append(lambda: [("dfe_jobs", "Jobs.", [({"status": 'x"y'}, 2)])])
    text = metrics.render()
    assert (
        'dfe_http_requests_total{component="host",route="/api/tables/{table}/rows",'
        'method="GET",status="200"} 2'
    ) in text
    assert 'status="429"} 1' in text
    assert re.search(r'_bucket\{.*,le="0\.005"\} 2\n', text)
    assert re.search(r'_bucket\{.*,le="\+Inf"\} 3\n', text)
    assert re.search(r'_count\{.*method="GET"\} 3\n', text)
    assert 'dfe_jobs{status="x\\"y"} 2' in text
    assert text.endswith("\n")


@pytest.mark.parametrize(
    ("client", "headers", "token", "allowed"),
    [
        (("127.0.0.1", 1), [], None, True),
        (("::1", 1), [], None, True),
        (("10.0.0.5", 1), [], None, False),
        (("127.0.0.1", 1), [(b"x-forwarded-for", b"203.0.113.9")], None, False),
        (("127.0.0.1", 1), [(b"forwarded", b"for=203.0.113.9")], None, False),
        (("10.0.0.5", 1), [(b"authorization", b"Bearer s3cret-token")], "s3cret-token", True),
        (("10.0.0.5", 1), [(b"authorization", b"Bearer wrong")], "s3cret-token", False),
        (None, [], None, False),
    ],
)
def test_who_may_read_the_metrics(client, headers, token, allowed):
    assert may_read({"client": client, "headers": headers}, token) is allowed


# Charts


def test_charts_escape_what_they_show_and_cover_every_day():
    svg = bar_chart('<script>alert("x")</script>', [(date(2026, 1, 1), 5), (date(2026, 1, 2), 0)])
    assert "<script>" not in svg
    assert "&lt;script&gt;" in svg
    assert svg.count("<rect") == 2
    assert "No data yet" in bar_chart("empty", [])
    rows = [
        MetricPublic(
            instance="shop",
            instance_id=1,
            day=date(2026, 1, 2),
            requests=7,
            database_bytes=2048,
            storage_bytes=None,
        ),
        MetricPublic(
            instance="blog",
            instance_id=2,
            day=date(2026, 1, 2),
            requests=3,
            database_bytes=1024,
            storage_bytes=10,
        ),
    ]
    charts = usage_charts(rows, date(2026, 1, 1), date(2026, 1, 3))
    assert [chart.title for chart in charts] == [
        "Requests per day",
        "Database size",
        "Storage size",
    ]
    assert charts[0].svg.count("<rect") == 3
    assert "2026-01-02: 10" in charts[0].svg
    assert charts[0].total == "10 in all"
    assert charts[1].total == "3.0 KB last measured"
    assert human_bytes(5) == "5 B"


# The usage counter


class ReportingConsole:
    def __init__(self) -> None:
        self.reports: list[RequestCounts] = []
        self.failure: Exception | None = None

    async def report_requests(self, data: RequestCounts) -> None:
        if self.failure is not None:
            raise self.failure
        self.reports.append(data)


def test_usage_is_reported_by_day_and_kept_while_the_console_is_down():
    console, clock = ReportingConsole(), Clock(86400 * 20000 + 100)
    usage = UsageCounter(console, 60, clock)  # type: ignore[arg-type]
    for _ in range(3):
        usage.count(1)
    usage.count(2)
    console.failure = ConsoleUnavailable("down", method="POST", url="u", attempts=1)
    assert asyncio.run(usage.flush()) is False
    clock.now += 86400  # the next day
    usage.count(1)
    console.failure = ServerError(500, "server_error", "oops")
    assert asyncio.run(usage.flush()) is False
    console.failure = None
    assert asyncio.run(usage.flush()) is True
    day = date(1970, 1, 1) + timedelta(days=20000)
    reported = {
        (report.day, item.instance_id): item.requests
        for report in console.reports
        for item in report.items
    }
    assert reported == {(day, 1): 3, (day, 2): 1, (day + timedelta(days=1), 1): 1}
    assert usage.pending() == {}


def test_counts_the_console_refuses_are_dropped():
    console = ReportingConsole()
    usage = UsageCounter(console, 60, Clock())  # type: ignore[arg-type]
    usage.count(1)
    console.failure = InvalidInputError(422, "invalid_input", "too old")
    assert asyncio.run(usage.flush()) is True
    assert usage.pending() == {}
