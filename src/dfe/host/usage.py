"""Requests per instance per day, counted by a web-tier process and added to the
Console's metrics_t every `interval` seconds (and at shutdown).

Counting is a dictionary increment per request. A report carries only what this
process counted since its last successful report, so any number of processes
add up; a report the Console did not take is kept and sent with the next one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import date, timedelta

import structlog

from dfe.client import AsyncConsoleClient, ConsoleError, ConsoleUnavailable, UnexpectedResponse
from dfe.client.errors import ServerError
from dfe.schemas import RequestCount, RequestCounts

log = structlog.get_logger("dfe.host")
_EPOCH = date(1970, 1, 1)
MAX_ITEMS = 10_000  # per report, as the API takes them


class UsageCounter:
    def __init__(
        self,
        console: AsyncConsoleClient,
        interval: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.console = console
        self.interval = interval
        self.clock = clock
        self._counts: dict[tuple[int, int], int] = {}  # (day number, instance id) -> requests

    def count(self, instance_id: int) -> None:
        key = (int(self.clock() // 86400), instance_id)
        self._counts[key] = self._counts.get(key, 0) + 1

    def pending(self) -> dict[tuple[int, int], int]:
        return dict(self._counts)

    async def flush(self) -> bool:
        """Report what was counted; True when nothing is left to report."""
        taken, self._counts = self._counts, {}
        by_day: dict[int, list[RequestCount]] = {}
        for (day, instance_id), requests in taken.items():
            by_day.setdefault(day, []).append(
                RequestCount(instance_id=instance_id, requests=requests)
            )
        left = False
        for day, items in sorted(by_day.items()):
            for start in range(0, len(items), MAX_ITEMS):
                chunk = items[start : start + MAX_ITEMS]
                report = RequestCounts(day=_EPOCH + timedelta(days=day), items=chunk)
                try:
                    await self.console.report_requests(report)
                except ConsoleError as error:
                    if not isinstance(error, ServerError):  # refused: sending again won't help
                        log.warning("request counts refused", error=type(error).__name__)
                        continue
                    left = self._keep(day, chunk, error)
                except (ConsoleUnavailable, UnexpectedResponse) as error:
                    left = self._keep(day, chunk, error)
        return not left

    def _keep(self, day: int, chunk: list[RequestCount], error: Exception) -> bool:
        log.warning("request counts not reported", error=type(error).__name__)
        for item in chunk:
            key = (day, item.instance_id)
            self._counts[key] = self._counts.get(key, 0) + item.requests
        return True

    async def run(self) -> None:
        """Report every `interval` seconds, forever (cancel to stop)."""
        while True:
            await asyncio.sleep(self.interval)
            await self.flush()
