"""A per-recipient limit on emails, so the mailer cannot flood an inbox.

Built on the `limits <https://limits.readthedocs.io/>`_ library (what Flask-Limiter is
built on) with its fixed-window strategy: at most ``limit`` emails per recipient in each
window of ``window`` seconds. The counters live where ``storage_uri`` says: ``memory://``
(the default) counts in the process, so several mailer processes each count on their
own and the effective limit is multiplied by their number; ``redis://host:port/db`` (set
by ``MAILER_REDIS_URL``) shares them between every process and host. The fixed window
is used because its counter can be given back (:meth:`RateLimiter.refund`) when an email
was not sent after all; the moving window cannot.
"""

from __future__ import annotations

import math
import time
from typing import Any

from limits import RateLimitItemPerSecond
from limits.errors import StorageError
from limits.storage import Storage, storage_from_string
from limits.strategies import FixedWindowRateLimiter

from .replay import StoreUnavailable

__all__ = ["RateLimiter"]

#: The prefix of the limit's keys in a shared storage.
KEY_PREFIX = "confirm-mail-mailer-limit"


class RateLimiter:
    """At most ``limit`` hits per key in each ``window`` seconds; thread-safe.

    :param limit: hits allowed per window; ``0`` allows everything.
    :param window: the window's length in seconds.
    :param storage_uri: a :mod:`limits` storage URI, ``memory://`` or ``redis://...``.
    :param options: passed to the storage (for Redis: to :meth:`redis.Redis.from_url`).
    """

    def __init__(
        self, limit: int, window: int, *, storage_uri: str = "memory://", **options: Any
    ) -> None:
        self.limit = limit
        self.window = window
        if storage_uri.startswith(("redis://", "rediss://", "unix://")):
            options.setdefault("key_prefix", KEY_PREFIX)
        storage = storage_from_string(storage_uri, wrap_exceptions=True, **options)
        if not isinstance(storage, Storage):
            raise ValueError(f"{storage_uri.partition(':')[0]}: not a synchronous storage")
        self.storage = storage
        self._strategy = FixedWindowRateLimiter(self.storage)
        self._item = RateLimitItemPerSecond(max(limit, 1), window)

    def acquire(self, key: str) -> int | None:
        """Count one hit for ``key``; ``None`` if allowed, else seconds until it would be.

        :raises StoreUnavailable: the shared storage cannot be reached.
        """
        if self.limit <= 0:
            return None
        try:
            if self._strategy.hit(self._item, key):
                return None
            self._give_back(key)  # a refused hit does not count
            reset = self._strategy.get_window_stats(self._item, key).reset_time
        except StorageError as exc:
            raise StoreUnavailable("the rate limit's storage cannot be reached") from exc
        return max(1, math.ceil(reset - time.time()))

    def refund(self, key: str) -> None:
        """Take back a hit for ``key`` (its email was not sent after all).

        :raises StoreUnavailable: the shared storage cannot be reached.
        """
        if self.limit <= 0:
            return
        try:
            self._give_back(key)
        except StorageError as exc:
            raise StoreUnavailable("the rate limit's storage cannot be reached") from exc

    def _give_back(self, key: str) -> None:
        self.storage.incr(self._item.key_for(key), self._item.get_expiry(), amount=-1)
