"""A per-recipient sliding-window limit on emails, so the mailer cannot flood an inbox.

In memory and per process, like :mod:`.replay`: several mailer processes each count on
their own, so the effective limit is multiplied by their number unless a shared
implementation is passed as ``create_app(rate_limiter=...)``.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable

__all__ = ["RateLimiter"]


class RateLimiter:
    """At most ``limit`` hits per key in any ``window`` seconds; thread-safe.

    :param limit: hits allowed per window; ``0`` allows everything.
    :param window: the window's length in seconds.
    :param clock: seconds since the epoch (default :func:`time.time`).
    """

    def __init__(
        self, limit: int, window: float, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()
        self._next_sweep = 0.0

    def acquire(self, key: str) -> int | None:
        """Count one hit for ``key``; ``None`` if allowed, else seconds until it would be."""
        if self.limit <= 0:
            return None
        with self._lock:
            now = self._clock()
            self._sweep(now)
            hits = self._hits.setdefault(key, deque())
            while hits and hits[0] <= now - self.window:
                hits.popleft()
            if len(hits) >= self.limit:
                return max(1, math.ceil(hits[0] + self.window - now))
            hits.append(now)
            return None

    def refund(self, key: str) -> None:
        """Take back the latest hit for ``key`` (its email was not sent after all)."""
        with self._lock:
            hits = self._hits.get(key)
            if hits:
                hits.pop()
                if not hits:
                    del self._hits[key]

    def _sweep(self, now: float) -> None:
        """Drop keys without recent hits, at most once per window, to bound memory."""
        if now < self._next_sweep:
            return
        self._next_sweep = now + self.window
        horizon = now - self.window
        for key in [key for key, hits in self._hits.items() if not hits or hits[-1] <= horizon]:
            del self._hits[key]
