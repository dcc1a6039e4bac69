"""The web tier (`dfe serve host`): answers for `<instance>.<subdomain>`, resolves the
instance from the Host header, and serves it with the instance runtime.

A request goes: Host header -> instance name -> its config (from the Console,
cached; `dfe.host.configs`) -> the instance's state (404 unknown or archived, 503
still provisioning or in maintenance, 423 locked) -> its rate limits (429 over one;
`dfe.host.limiter`) -> the runtime, with the instance's database engine, storage
and keys in the request's scope. Requests served are counted per instance per day
(`dfe.host.usage`). On a host that names no instance, `/health` and `/metrics`
(Prometheus) answer for the web tier itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re

import structlog
from starlette.responses import JSONResponse, Response
from starlette.types import Message, Receive, Scope, Send

from dfe.client import AsyncConsoleClient
from dfe.client._base import read_key_file
from dfe.config import Settings, get_settings
from dfe.enums import OperationalState, ProvisionState
from dfe.host.configs import ConfigCache, ConsoleUnreachable
from dfe.host.limiter import Decision, RateLimiter, limiter_for
from dfe.host.problems import problem_response
from dfe.host.runtime import SCOPE_KEY, InstanceContext, create_runtime_app
from dfe.host.usage import UsageCounter
from dfe.logs import configure_logging
from dfe.metrics.prometheus import RequestMetrics, serve_metrics, timed
from dfe.schemas import InstanceConfig

log = structlog.get_logger("dfe.host")

_NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
CONSOLE_TIMEOUT = 5.0
PROVISIONING_RETRY_AFTER = "5"
MAINTENANCE_RETRY_AFTER = "60"
READ_ONLY_RETRY_AFTER = "5"  # a move: writes wait while the database is copied


def instance_name(host: str, subdomains: tuple[str, ...]) -> str | None:
    """The instance a Host header names (`shop.localhost:8080` -> `shop`), if any."""
    host = host.strip().lower()
    if host.startswith("["):  # an IPv6 literal names no instance
        return None
    host = host.partition(":")[0].rstrip(".")
    for subdomain in subdomains:
        name = host.removesuffix("." + subdomain)
        if name != host and _NAME.fullmatch(name):
            return name
    return None


def _refusal(config: InstanceConfig, accept: str) -> Response | None:
    """Why an instance cannot serve now, as the response to give; None when it can."""
    name, state = config.name, config.provision_state
    if state in (ProvisionState.CREATED, ProvisionState.PROVISIONING):
        return problem_response(
            503,
            "provisioning",
            f"The instance {name} is being set up. Try again in a few seconds.",
            {"Retry-After": PROVISIONING_RETRY_AFTER},
            accept=accept,
        )
    if state is ProvisionState.PROVISIONING_ERROR:
        return problem_response(
            503,
            "provisioning_failed",
            f"The instance {name} could not be set up. Its operator can see why in the Console.",
            accept=accept,
        )
    if state is not ProvisionState.PROVISIONED:  # being deleted, or half deleted
        return problem_response(
            404, "not_found", f"There is no instance named {name}.", accept=accept
        )
    operational = config.operational_state
    if operational is OperationalState.LOCKED:
        return problem_response(
            423, "locked", f"The instance {name} is locked by its operator.", accept=accept
        )
    if operational in (OperationalState.TOS_VIOLATION, OperationalState.DEACTIVATED):
        return problem_response(
            423,
            operational.value,
            f"The instance {name} is suspended ({operational.value.replace('_', ' ')}).",
            accept=accept,
        )
    if operational is OperationalState.MAINTENANCE:
        return problem_response(
            503,
            "maintenance",
            f"The instance {name} is down for maintenance. Try again later.",
            {"Retry-After": MAINTENANCE_RETRY_AFTER},
            accept=accept,
        )
    if operational is not OperationalState.ACTIVATED or config.database_url is None:
        return problem_response(
            503,
            "not_ready",
            f"The instance {name} is not ready yet. Try again in a minute.",
            {"Retry-After": "30"},
            accept=accept,
        )
    return None


class WebTier:
    """The ASGI app of the web tier (one per process)."""

    def __init__(
        self,
        settings: Settings,
        console: AsyncConsoleClient,
        *,
        owns_console: bool = True,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.settings = settings
        self.subdomains = settings.host_subdomains
        self.console = console
        self.owns_console = owns_console
        self.runtime = create_runtime_app()
        self.contexts: dict[str, InstanceContext] = {}
        self.configs = ConfigCache(
            console,
            ttl=settings.host_cache_seconds,
            poll_interval=settings.host_poll_seconds,
            on_gone=self.forget,
        )
        self.limiter = limiter or limiter_for(settings.redis_url, settings.redis_namespace)
        self.usage = UsageCounter(console, settings.host_usage_flush_seconds)
        self.metrics = RequestMetrics("host")
        self._tasks: list[asyncio.Task[None]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            return
        scope = dict(scope)
        await timed(self._serve, self.metrics, scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        routed = await self.route(scope)
        if isinstance(routed, Response):
            await routed(scope, receive, send)
            return
        if routed.limits:
            decision = await self.limiter.check(
                routed.instance_id, routed.limits, self._client_id(routed, scope)
            )
            if decision is not None:
                refused = decision.refused
                if refused is not None:
                    await self._too_many(decision, scope, receive, send)
                    return
                send = _with_headers(send, decision.headers())
        self.usage.count(routed.instance_id)
        scope[SCOPE_KEY] = routed
        await self.runtime(scope, receive, send)

    @staticmethod
    def _client_id(context: InstanceContext, scope: Scope) -> str | None:
        """Which app key of the instance the request presents (for its key's limits)."""
        if not context.app_keys:
            return None
        headers = dict(scope["headers"])
        scheme, _, credentials = headers.get(b"authorization", b"").partition(b" ")
        presented = credentials.strip() if scheme.lower() == b"bearer" else b""
        presented = presented or headers.get(b"x-dfe-api-key", b"")
        if not presented:
            return None
        digest = hashlib.sha256(presented).hexdigest()
        for key in context.app_keys:
            if key.secret_sha256 == digest:  # a digest of 256 random bits: no timing to learn
                return key.client_id
        return None

    async def _too_many(
        self, decision: Decision, scope: Scope, receive: Receive, send: Send
    ) -> None:
        hit = decision.closest
        accept = dict(scope["headers"]).get(b"accept", b"").decode("latin-1")
        response = problem_response(
            429,
            "rate_limited",
            f"Over the limit '{hit.limit.label}': {hit.limit.max_requests} requests per "
            f"{hit.limit.period.value}. Try again in {decision.reset_seconds(hit)} s.",
            accept=accept,
        )
        await response(scope, receive, _with_headers(send, decision.headers()))

    async def route(self, scope: Scope) -> InstanceContext | Response:
        headers = dict(scope["headers"])
        host = headers.get(b"host", b"").decode("latin-1")
        accept = headers.get(b"accept", b"").decode("latin-1")
        name = instance_name(host, self.subdomains)
        if name is None:
            if scope["path"] == "/health":
                return JSONResponse({"status": "ok", "component": "web tier"})
            if scope["path"] == "/metrics":
                return _MetricsResponse(self)
            return problem_response(
                404, "not_found", "No instance answers at this address.", accept=accept
            )
        try:
            config = await self.configs.get(name)
        except ConsoleUnreachable:
            return problem_response(
                503,
                "console_unreachable",
                "The control plane cannot be reached right now. Try again shortly.",
                {"Retry-After": "10"},
                accept=accept,
            )
        if config is None or config.host != host.strip().lower().partition(":")[0].rstrip("."):
            return problem_response(
                404, "not_found", f"There is no instance named {name}.", accept=accept
            )
        refusal = _refusal(config, accept)
        if refusal is not None:
            return refusal
        if config.read_only and scope["method"] not in ("GET", "HEAD", "OPTIONS"):
            return problem_response(
                503,
                "read_only",
                f"The instance {name} is being moved and takes no writes. Try again shortly.",
                {"Retry-After": READ_ONLY_RETRY_AFTER},
                accept=accept,
            )
        return self.context(config)

    def context(self, config: InstanceConfig) -> InstanceContext:
        """The instance's context for this config version (a new version: a new engine)."""
        current = self.contexts.get(config.name)
        if current is not None and current.version == config.version:
            return current
        if current is not None:
            kept = current.updated(config)
            if kept is not None:  # only limits or keys changed: keep the engine
                self.contexts[config.name] = kept
                return kept
        fresh = InstanceContext.from_config(
            config, max_upload_bytes=self.settings.host_max_upload_bytes
        )
        self.contexts[config.name] = fresh
        if current is not None:
            current.close()
        return fresh

    def forget(self, name: str) -> None:
        """Let go of a deleted instance's database connections at once."""
        context = self.contexts.pop(name, None)
        if context is not None:
            context.close()

    # -- lifespan -------------------------------------------------------------------------------

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self.configs.run_poller()),
                asyncio.create_task(self.usage.run()),
            ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self.usage.flush()
        await self.limiter.aclose()
        for name in list(self.contexts):
            self.forget(name)
        if self.owns_console:
            await self.console.aclose()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _with_headers(send: Send, headers: list[tuple[bytes, bytes]]) -> Send:
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *headers]}
        await send(message)

    return sending


class _MetricsResponse(Response):
    """The web tier's own `GET /metrics` (on a host that names no instance)."""

    def __init__(self, tier: WebTier) -> None:
        super().__init__()
        self.tier = tier

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        token = self.tier.settings.metrics_token_value
        await serve_metrics(self.tier.metrics, token, scope, send)


def console_client(settings: Settings) -> AsyncConsoleClient:
    """The Console, as this web server's own key reaches it (`DFE_HOST_KEY_FILE`)."""
    path = settings.effective_host_key_file
    if not path.is_file():
        raise RuntimeError(
            f"the web tier's key file {path} is missing: `dfe setup --local-cluster` writes one "
            "for the local web server; elsewhere, create a key for the web server "
            "(`dfe key create`) and write it there as JSON (client_id, client_secret, "
            "console_url), mode 0600"
        )
    client_id, client_secret, console_url = read_key_file(path)
    url = settings.console_url or console_url or settings.effective_console_url
    return AsyncConsoleClient(url, client_id, client_secret, timeout=CONSOLE_TIMEOUT, retries=1)


def create_app(
    settings: Settings | None = None, console: AsyncConsoleClient | None = None
) -> WebTier:
    """The web tier. Without arguments (as `dfe serve host` builds it) it reads the
    settings and the web server's key file, and logs JSON lines."""
    if settings is None:
        settings = get_settings()
        configure_logging()
        logging.getLogger("httpx2").setLevel(logging.WARNING)  # not a line per feed poll
    if console is None:
        return WebTier(settings, console_client(settings))
    return WebTier(settings, console, owns_console=False)
