"""The web tier (`dfe serve host`): answers for `<instance>.<subdomain>`, resolves the
instance from the Host header, and serves it with the instance runtime.

A request goes: Host header -> instance name -> its config (from the Console,
cached; `dfe.host.configs`) -> the instance's state (404 unknown or archived, 503
still provisioning or in maintenance, 423 locked) -> the runtime, with the
instance's database engine, storage and key in the request's scope.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re

import structlog
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from dfe.client import AsyncConsoleClient
from dfe.client._base import read_key_file
from dfe.config import Settings, get_settings
from dfe.enums import OperationalState, ProvisionState
from dfe.host.configs import ConfigCache, ConsoleUnreachable
from dfe.host.problems import problem_response
from dfe.host.runtime import SCOPE_KEY, InstanceContext, create_runtime_app
from dfe.logs import configure_logging
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
        self, settings: Settings, console: AsyncConsoleClient, *, owns_console: bool = True
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
        self._poller: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            return
        routed = await self.route(scope)
        if isinstance(routed, Response):
            await routed(scope, receive, send)
            return
        await self.runtime({**scope, SCOPE_KEY: routed}, receive, send)

    async def route(self, scope: Scope) -> InstanceContext | Response:
        headers = dict(scope["headers"])
        host = headers.get(b"host", b"").decode("latin-1")
        accept = headers.get(b"accept", b"").decode("latin-1")
        name = instance_name(host, self.subdomains)
        if name is None:
            if scope["path"] == "/health":
                return JSONResponse({"status": "ok", "component": "web tier"})
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
        if self._poller is None:
            self._poller = asyncio.create_task(self.configs.run_poller())

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
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
