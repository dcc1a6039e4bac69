"""Shared by the benchmarks: run a worker on several threads at once, timed."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any


def timed_threads(worker: Callable[[Any], None], per_thread: Sequence[Any]) -> float:
    """Start one thread per item of `per_thread` (its argument), wait for all; seconds."""
    started = time.perf_counter()
    pool = [threading.Thread(target=worker, args=(argument,)) for argument in per_thread]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return time.perf_counter() - started
