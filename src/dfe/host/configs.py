"""The web tier's cache of instance configs, kept fresh by the Console's change feed.

A config is fetched from the Console (`GET /instances/{name}/config`, with the web
server's own key) on first use, kept `ttl` seconds, and dropped early when the
change feed (`GET /instances/changes?since=`, polled every `poll_interval`
seconds) names the instance: so a deprovision, a lock or any change made in the
Console takes effect here within a poll or two. Unknown names are remembered
briefly too. When the Console cannot be reached, a config already held is
served past its time; only instances never seen here are refused.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from dfe.client import (
    AsyncConsoleClient,
    ConsoleError,
    ConsoleUnavailable,
    NotFoundError,
    UnexpectedResponse,
)
from dfe.schemas import InstanceChanges, InstanceConfig

log = structlog.get_logger("dfe.host")

NEGATIVE_TTL = 10.0  # seconds an unknown name is remembered (the feed also clears it)
RETRY_AFTER_FAILURE = 5.0  # seconds between fetches while the Console is unreachable
MAX_ENTRIES = 10_000


class ConsoleUnreachable(Exception):
    """The Console did not answer and nothing is cached for this instance."""


@dataclass
class Entry:
    config: InstanceConfig | None  # None: no such live instance (on this web server)
    expires: float  # on the monotonic clock
    retry_at: float = 0.0


class ConfigCache:
    def __init__(
        self,
        console: AsyncConsoleClient,
        *,
        ttl: float,
        poll_interval: float,
        on_gone: Callable[[str], None] = lambda _name: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.console = console
        self.ttl = ttl
        self.poll_interval = poll_interval
        self.on_gone = on_gone
        self.clock = clock
        self._entries: dict[str, Entry] = {}
        self._loading: dict[str, asyncio.Task[Entry]] = {}
        self._generation: dict[str, int] = {}
        self.cursor: str | None = None
        self.polls = 0  # successful polls of the feed (tests wait on it)

    # -- lookups --------------------------------------------------------------------------------

    async def get(self, name: str) -> InstanceConfig | None:
        """The instance's config, None if it does not exist (here); ConsoleUnreachable when
        it cannot be known."""
        entry = self._entries.get(name)
        now = self.clock()
        if entry is not None and (now < entry.expires or now < entry.retry_at):
            return entry.config
        try:
            entry = await self._load(name)
        except ConsoleUnreachable:
            if entry is None:
                raise
            entry.retry_at = now + RETRY_AFTER_FAILURE  # serve what we have meanwhile
            return entry.config
        return entry.config

    def cached(self, name: str) -> InstanceConfig | None:
        entry = self._entries.get(name)
        return entry.config if entry is not None else None

    async def _load(self, name: str) -> Entry:
        """One fetch per name at a time, however many requests wait for it."""
        task = self._loading.get(name)
        if task is None:
            task = asyncio.ensure_future(self._fetch(name))
            self._loading[name] = task
            task.add_done_callback(lambda _done: self._loading.pop(name, None))
        return await asyncio.shield(task)

    async def _fetch(self, name: str) -> Entry:
        generation = self._generation.get(name, 0)
        try:
            config: InstanceConfig | None = await self.console.get_instance_config(name)
        except NotFoundError:
            config = None
        except (ConsoleUnavailable, ConsoleError, UnexpectedResponse) as error:
            log.warning("console unreachable", instance=name, error=type(error).__name__)
            raise ConsoleUnreachable(str(error)) from None
        now = self.clock()
        expires = now + (self.ttl if config is not None else min(self.ttl, NEGATIVE_TTL))
        if self._generation.get(name, 0) != generation:
            expires = now  # the feed named it while we were asking: use it once, ask again
        entry = Entry(config, expires)
        if name not in self._entries and len(self._entries) >= MAX_ENTRIES:
            self._entries.pop(next(iter(self._entries)))  # the oldest one
        self._entries[name] = entry
        if config is None:
            self.on_gone(name)
        return entry

    # -- the change feed ------------------------------------------------------------------------

    def apply(self, answer: InstanceChanges) -> list[str]:
        """Forget what the feed says changed; the names acted on."""
        if answer.reset:
            for entry in self._entries.values():
                entry.expires = 0.0
            return list(self._entries)
        acted = []
        for change in answer.changes:
            if change.name in self._loading:
                self._generation[change.name] = self._generation.get(change.name, 0) + 1
            cached = self._entries.get(change.name)
            if cached is None:
                continue
            config = cached.config
            if change.archived:
                if config is not None and config.id == change.id:
                    del self._entries[change.name]
                    self.on_gone(change.name)
                    acted.append(change.name)
            elif config is None or config.id != change.id or change.changed_at > config.changed_at:
                # Asked again on next use; still served if the Console is down by then.
                cached.expires = 0.0
                acted.append(change.name)
        return acted

    async def poll_once(self) -> None:
        answer = await self.console.list_instance_changes(self.cursor)
        if self.cursor is not None:
            acted = self.apply(answer)
            if acted:
                log.info("instance configs invalidated", instances=acted[:20], count=len(acted))
        self.cursor = answer.cursor
        self.polls += 1

    async def run_poller(self) -> None:
        """Poll the feed forever (cancel to stop); failures are logged and retried."""
        failing = False
        while True:
            try:
                await self.poll_once()
                if failing:
                    log.info("change feed reachable again")
                failing = False
            except (ConsoleUnavailable, ConsoleError, UnexpectedResponse) as error:
                if not failing:
                    log.warning("change feed unreachable", error=type(error).__name__)
                failing = True
            await asyncio.sleep(self.poll_interval)
