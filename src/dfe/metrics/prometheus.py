"""`GET /metrics` in the Prometheus text format, for every DFE process.

No client library: a counter of requests and a latency histogram per
(route template, method, status), plus gauges a process computes when scraped
(the Console: jobs by status, instances by state). Labels never hold an
instance name, a path with ids in it, or anything secret.

Who may read it: a client on loopback that came through no proxy (no
`X-Forwarded-For`/`Forwarded` header), or anyone presenting
`Authorization: Bearer <DFE_METRICS_TOKEN>` when that setting is made; everyone
else gets 404, as if there were nothing there.
"""

from __future__ import annotations

import bisect
import hmac
import ipaddress
import math
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# A gauge family: name, help, and its samples as (labels, value).
GaugeFamily = tuple[str, str, list[tuple[dict[str, str], float]]]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{name}="{_escape(value)}"' for name, value in labels.items())
    return "{" + inner + "}"


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


class RequestMetrics:
    """Requests and their latencies, by route template, method and status (thread-safe)."""

    def __init__(self, component: str, buckets: tuple[float, ...] = BUCKETS) -> None:
        self.component = component
        self.buckets = buckets
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str, str], int] = {}
        self._histograms: dict[tuple[str, str], tuple[list[int], list[float]]] = {}
        self.gauges: list[Callable[[], Iterable[GaugeFamily]]] = []

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, str(status))
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + 1
            counts, total = self._histograms.setdefault(
                (route, method), ([0] * (len(self.buckets) + 1), [0.0])
            )
            counts[bisect.bisect_left(self.buckets, seconds)] += 1
            total[0] += seconds

    def render(self) -> str:
        lines = [
            "# HELP dfe_http_requests_total HTTP requests answered, by route, method and status.",
            "# TYPE dfe_http_requests_total counter",
        ]
        component = {"component": self.component}
        with self._lock:
            counts = sorted(self._counts.items())
            histograms = sorted(
                (key, (list(values[0]), values[1][0])) for key, values in self._histograms.items()
            )
        for (route, method, status), count in counts:
            labels = _labels({**component, "route": route, "method": method, "status": status})
            lines.append(f"dfe_http_requests_total{labels} {count}")
        lines += [
            "# HELP dfe_http_request_duration_seconds Time to answer an HTTP request.",
            "# TYPE dfe_http_request_duration_seconds histogram",
        ]
        for (route, method), (buckets, total) in histograms:
            base = {**component, "route": route, "method": method}
            cumulative = 0
            for bound, count in zip((*self.buckets, math.inf), buckets, strict=True):
                cumulative += count
                labels = _labels({**base, "le": _number(bound)})
                lines.append(f"dfe_http_request_duration_seconds_bucket{labels} {cumulative}")
            lines.append(f"dfe_http_request_duration_seconds_sum{_labels(base)} {total!r}")
            lines.append(f"dfe_http_request_duration_seconds_count{_labels(base)} {cumulative}")
        for gauge in self.gauges:
            for name, help_text, samples in gauge():
                lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
                lines += [f"{name}{_labels(labels)} {_number(value)}" for labels, value in samples]
        return "\n".join(lines) + "\n"


def _is_loopback(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def may_read(scope: Scope, token: str | None) -> bool:
    """Whether this request may read the metrics (see the module's docstring)."""
    headers = dict(scope.get("headers") or [])
    if token:
        scheme, _, presented = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(presented.strip(), token):
            return True
    client = scope.get("client")
    proxied = b"x-forwarded-for" in headers or b"forwarded" in headers
    return not proxied and _is_loopback(client[0] if client else None)


def route_of(scope: Scope) -> str:
    """The route template that answered (`/api/tables/{table}/rows`), never the raw path."""
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


async def serve_metrics(
    metrics: RequestMetrics, token: str | None, scope: Scope, send: Send
) -> None:
    if may_read(scope, token):
        status, body, kind = 200, metrics.render().encode(), CONTENT_TYPE
    else:
        status, body, kind = 404, b"Not Found", "text/plain; charset=utf-8"
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", kind.encode()), (b"cache-control", b"no-store")],
        }
    )
    await send({"type": "http.response.body", "body": body})


class MetricsMiddleware:
    """Counts and times every HTTP request of an ASGI app, and answers `GET /metrics`."""

    def __init__(self, app: ASGIApp, metrics: RequestMetrics, token: str | None = None) -> None:
        self.app = app
        self.metrics = metrics
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] == "/metrics" and scope["method"] == "GET":
            await serve_metrics(self.metrics, self.token, scope, send)
            return
        await timed(self.app, self.metrics, scope, receive, send)


async def timed(
    app: ASGIApp, metrics: RequestMetrics, scope: Scope, receive: Receive, send: Send
) -> None:
    """Call `app`, then record its status and latency under the route that answered."""
    started = time.perf_counter()
    status = 500

    async def sending(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        await send(message)

    try:
        await app(scope, receive, sending)
    finally:
        metrics.observe(route_of(scope), scope["method"], status, time.perf_counter() - started)
