"""What the sync and async clients share: settings, key files, retries and answers."""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx2

from dfe import __version__
from dfe.client.calls import Call, ResponseShapeError
from dfe.client.errors import (
    ConsoleUnavailable,
    UnexpectedResponse,
    error_from_response,
    retry_after_seconds,
)

T = TypeVar("T")

API_PREFIX = "/api/v1"
DEFAULT_TIMEOUT = 10.0
DEFAULT_RETRIES = 3
DEFAULT_BACKOFF = 0.25  # seconds; doubles on each retry
MAX_DELAY = 2.0  # no single wait is longer; a longer Retry-After ends the retries
RETRY_STATUSES = frozenset({502, 503, 504})
# Failures where the Console may simply be restarting or overloaded; anything else
# a transport raises (a bad URL scheme, a proxy refusing) will not heal by waiting.
RETRY_ERRORS: tuple[type[Exception], ...] = (
    httpx2.TimeoutException,
    httpx2.NetworkError,
    httpx2.RemoteProtocolError,
)
HEADERS = {
    "Accept": "application/json, application/problem+json",
    "User-Agent": f"dfe-client/{__version__}",
}


def api_root(base_url: str) -> str:
    """The Console's URL up to and including /api/v1 (given with or without it)."""
    root = base_url.strip().rstrip("/")
    if not root.startswith(("http://", "https://")):
        raise ValueError(f"base_url must be an http:// or https:// URL, not {base_url!r}")
    return root if root.endswith(API_PREFIX) else root + API_PREFIX


def read_key_file(path: str | os.PathLike[str]) -> tuple[str, str, str | None]:
    """(client_id, client_secret, console_url) from a key file `dfe setup` wrote."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except ValueError:
        raise ValueError(f"{os.fspath(path)}: not a JSON key file") from None
    if not isinstance(document, dict):
        raise ValueError(f"{os.fspath(path)}: not a JSON key file")
    missing = [name for name in ("client_id", "client_secret") if not document.get(name)]
    if missing:
        raise ValueError(f"{os.fspath(path)}: the key file has no {' or '.join(missing)}")
    console_url = document.get("console_url")
    return (
        str(document["client_id"]),
        str(document["client_secret"]),
        str(console_url) if console_url else None,
    )


@dataclass(frozen=True)
class RetryPolicy:
    """Idempotent calls (GET, PUT, DELETE) are retried on connection failures and on
    502/503/504, `retries` times at most, waiting `backoff` seconds doubled each time
    (with jitter, each wait at most MAX_DELAY). Other calls (POST, PATCH) never are:
    the Console may have acted on them already."""

    retries: int = DEFAULT_RETRIES
    backoff: float = DEFAULT_BACKOFF
    jitter: Callable[[], float] = random.random

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError("retries must be 0 or more")
        if self.backoff < 0:
            raise ValueError("backoff must be 0 or more")

    def may_retry(self, call: Call[Any], attempt: int) -> bool:
        """Whether a call whose attempt number `attempt` (from 0) failed may go again."""
        return call.idempotent and attempt < self.retries

    def delay(self, attempt: int, retry_after: int | None = None) -> float | None:
        """Seconds to wait before the next attempt; None when not worth waiting for."""
        if retry_after is not None:
            return float(retry_after) if retry_after <= MAX_DELAY else None
        wait = self.backoff * 2.0**attempt
        return min(MAX_DELAY, wait * (0.5 + self.jitter() / 2))


def describe(error: Exception) -> str:
    """A connection failure in words, without the request it failed on."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


Outcome = httpx2.Response | httpx2.TransportError
"""What one attempt gave: an answer, or the connection failure that prevented one."""


def next_delay(
    policy: RetryPolicy, call: Call[Any], attempt: int, outcome: Outcome
) -> float | None:
    """Seconds to wait before retrying after this outcome; None: it is final."""
    if isinstance(outcome, httpx2.TransportError):
        if isinstance(outcome, RETRY_ERRORS) and policy.may_retry(call, attempt):
            return policy.delay(attempt)
        return None
    if outcome.status_code not in RETRY_STATUSES or outcome.status_code in call.accept:
        return None
    if not policy.may_retry(call, attempt):
        return None
    return policy.delay(attempt, retry_after_seconds(outcome))


def finish(call: Call[T], outcome: Outcome, root: str, attempts: int) -> T:
    """The call's result from its final outcome, or the exception it stands for.

    Called outside any `except` block, so what it raises has no chained context:
    the transport's exceptions hold the request, user token header and all.
    """
    where = API_PREFIX + call.path
    if isinstance(outcome, httpx2.TransportError):
        raise ConsoleUnavailable(
            describe(outcome), method=call.method, url=root + call.path, attempts=attempts
        )
    status = outcome.status_code
    if status >= 400 and status not in call.accept:
        raise error_from_response(outcome, call.method, where)
    if not 200 <= status < 300 and status not in call.accept:
        raise UnexpectedResponse(
            f"unexpected status {status}", status=status, method=call.method, path=where
        )
    try:
        return call.parse(outcome)
    except ResponseShapeError as error:
        message = str(error)
    raise UnexpectedResponse(message, status=status, method=call.method, path=where)


def client_repr(name: str, root: str, client_id: str, user_token: str | None) -> str:
    acting = ", acting_for_user=True" if user_token is not None else ""
    return f"{name}(base_url={root!r}, client_id={client_id!r}{acting})"
