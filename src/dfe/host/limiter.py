"""Rate limits as the web tier enforces them.

Fixed windows aligned to the Unix epoch (a minute window starts on the minute, a
day window at 00:00 UTC, 7-day and 30-day windows every 7 and 30 days since
1970-01-01): each limit counts requests in the current window, and the window's
end is when `RateLimit-Reset` points. Every request for the instance counts
toward each limit that applies to it (a key's limit: requests presenting that
key), those refused included; over any limit, the answer is 429.

Counters live in process memory (`MemoryCounters`), or in Redis when
`DFE_REDIS_URL` is set (`RedisCounters`: one Lua script per request that INCRs
each applicable counter and sets its EXPIREAT on creation; a script runs
atomically, so several web-tier processes share the counters exactly).
A counter's key is `<DFE_REDIS_NAMESPACE>:rl:<limit id>:<reset generation>:<subject>:<window>`:
a reset in the Console raises the generation, so every process starts counting
afresh once its config reflects the reset. Redis being unreachable does not
take instances down: requests are let through (and a warning logged).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog
from redis.exceptions import RedisError

from dfe.enums import LIMIT_PERIOD_SECONDS, LimitScope
from dfe.schemas import InstanceLimit
from dfe.services.limits import counter_prefix

log = structlog.get_logger("dfe.host")

MAX_MEMORY_KEYS = 200_000
REDIS_TIMEOUT = 1.0  # seconds: a slow Redis must not hold requests long
WARN_EVERY = 60.0  # seconds between warnings while Redis is unreachable


class Counters(Protocol):
    async def increment(self, keys: Sequence[tuple[str, int]], now: float) -> list[int]:
        """Add one to each counter (key, epoch second its window ends); the new counts."""


class MemoryCounters:
    """This process's counters. Expired windows are swept when the table grows large."""

    def __init__(self, max_keys: int = MAX_MEMORY_KEYS) -> None:
        self.max_keys = max_keys
        self._counts: dict[str, tuple[int, int]] = {}  # key -> (window end, count)

    def increment_one(self, key: str, ends: int, now: float) -> int:
        entry = self._counts.get(key)
        count = 1 if entry is None or entry[0] <= now else entry[1] + 1
        self._counts[key] = (ends, count)
        if len(self._counts) > self.max_keys:
            self.sweep(now)
        return count

    async def increment(self, keys: Sequence[tuple[str, int]], now: float) -> list[int]:
        return [self.increment_one(key, ends, now) for key, ends in keys]

    def sweep(self, now: float) -> None:
        self._counts = {key: entry for key, entry in self._counts.items() if entry[0] > now}
        if len(self._counts) > self.max_keys:  # still full of live windows: forget the oldest
            keep = list(self._counts.items())[len(self._counts) // 2 :]
            self._counts = dict(keep)

    def __len__(self) -> int:
        return len(self._counts)


# KEYS: the counters; ARGV: the epoch second each one's window ends. Atomic in Redis.
_INCREMENT = """
local counts = {}
for i, key in ipairs(KEYS) do
  local count = redis.call('INCR', key)
  if count == 1 then redis.call('EXPIREAT', key, tonumber(ARGV[i]) + 1) end
  counts[i] = count
end
return counts
"""


class RedisCounters:
    """Counters shared by every web-tier process on the same Redis (one round trip,
    EVALSHA, per request)."""

    def __init__(self, url: str) -> None:
        import redis.asyncio

        self.redis = redis.asyncio.Redis.from_url(
            url, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT
        )
        self._script = self.redis.register_script(_INCREMENT)

    async def increment(self, keys: Sequence[tuple[str, int]], now: float) -> list[int]:
        counts = await self._script(keys=[key for key, _ in keys], args=[ends for _, ends in keys])
        return [int(count) for count in counts]

    async def aclose(self) -> None:
        await self.redis.aclose()


@dataclass(frozen=True, slots=True)
class Hit:
    """One limit after this request: its count in the current window."""

    limit: InstanceLimit
    count: int
    ends: int  # epoch second the window ends

    @property
    def exceeded(self) -> bool:
        return self.count > self.limit.max_requests

    @property
    def remaining(self) -> int:
        return max(0, self.limit.max_requests - self.count)


@dataclass(frozen=True, slots=True)
class Decision:
    hits: list[Hit]
    now: float

    @property
    def refused(self) -> Hit | None:
        """The exceeded limit that clears last (a client must wait for it), if any."""
        exceeded = [hit for hit in self.hits if hit.exceeded]
        return max(exceeded, key=lambda hit: hit.ends) if exceeded else None

    @property
    def closest(self) -> Hit:
        """The limit the headers describe: the refusing one, else the nearest to running out."""
        return self.refused or min(self.hits, key=lambda hit: (hit.remaining, -hit.ends))

    def reset_seconds(self, hit: Hit) -> int:
        return max(1, math.ceil(hit.ends - self.now))

    def headers(self) -> list[tuple[bytes, bytes]]:
        hit = self.closest
        period = LIMIT_PERIOD_SECONDS[hit.limit.period]
        values = [
            (b"ratelimit-limit", str(hit.limit.max_requests)),
            (b"ratelimit-remaining", str(hit.remaining)),
            (b"ratelimit-reset", str(self.reset_seconds(hit))),
            (b"ratelimit-policy", f"{hit.limit.max_requests};w={period}"),
            (b"dfe-ratelimit-label", hit.limit.label),
        ]
        if hit.exceeded:
            values.append((b"retry-after", str(self.reset_seconds(hit))))
        return [(name, value.encode("latin-1")) for name, value in values]


class RateLimiter:
    def __init__(
        self,
        counters: Counters,
        clock: Callable[[], float] = time.time,
        namespace: str = "dfe",
    ) -> None:
        self.counters = counters
        self.clock = clock
        self.prefix = counter_prefix(namespace)
        self._warned_at = -math.inf

    async def check(
        self, instance_id: int, limits: Sequence[InstanceLimit], client_id: str | None
    ) -> Decision | None:
        """Count this request against the limits that apply; None when none does (or the
        counters cannot be reached)."""
        applicable = [
            limit
            for limit in limits
            if limit.scope is not LimitScope.KEY or limit.client_id == client_id
        ]
        if not applicable:
            return None
        now = self.clock()
        keys, ends = [], []
        for limit in applicable:
            period = LIMIT_PERIOD_SECONDS[limit.period]
            window = int(now // period)
            subject = limit.client_id if limit.scope is LimitScope.KEY else str(instance_id)
            key = f"{self.prefix}{limit.id}:{limit.generation}:{subject}:{window}"
            keys.append((key, (window + 1) * period))
            ends.append((window + 1) * period)
        try:
            counts = await self.counters.increment(keys, now)
        except (RedisError, OSError) as error:  # Redis down: serve rather than refuse
            if now - self._warned_at >= WARN_EVERY:
                log.warning("rate-limit counters unreachable", error=type(error).__name__)
                self._warned_at = now
            return None
        hits = [
            Hit(limit, count, end)
            for limit, count, end in zip(applicable, counts, ends, strict=True)
        ]
        return Decision(hits, now)

    async def aclose(self) -> None:
        if isinstance(self.counters, RedisCounters):
            await self.counters.aclose()


def limiter_for(redis_url: str | None, namespace: str = "dfe") -> RateLimiter:
    counters: Counters = RedisCounters(redis_url) if redis_url else MemoryCounters()
    return RateLimiter(counters, namespace=namespace)
