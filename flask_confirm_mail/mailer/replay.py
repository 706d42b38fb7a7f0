"""Replay protection: each wrapping token (by its ``jti``) sends at most one email.

A token's ``jti`` is *reserved* before sending, *completed* with the sent message's id,
or *released* when sending failed, so that the caller's retry with the same token can
try again. A completed ``jti`` is remembered until the token's ``exp``; asking again
answers with the first message's id, so a retry after a timeout is safe.

:class:`MemoryReplayStore` keeps this in the process. It is right for one mailer
process (any number of threads). Several processes or hosts (gunicorn ``-w 2`` or more,
several containers) must share one store instead: set ``MAILER_REDIS_URL`` for
:class:`~flask_confirm_mail.mailer.redis_replay.RedisReplayStore`, or pass another
implementation as ``create_app(replay_store=...)``.
"""

from __future__ import annotations

import heapq
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["MemoryReplayStore", "ReplayStore", "Reservation", "StoreUnavailable"]


class StoreUnavailable(Exception):
    """A store the mailer processes share (replay store, rate limit) cannot be reached.

    The mailer then sends nothing and answers a retryable 503.
    """


@dataclass(frozen=True)
class Reservation:
    """The answer of :meth:`ReplayStore.reserve`.

    ``state`` is ``"new"`` (the caller now owns the ``jti`` and must complete or release
    it), ``"pending"`` (another request is sending it right now) or ``"sent"`` (done;
    ``message_id`` says which message).
    """

    state: str
    message_id: str | None = None


class ReplayStore(ABC):
    """Remembers ``jti`` values until their tokens expire. Must be safe across threads."""

    @abstractmethod
    def reserve(self, jti: str, expires_at: float) -> Reservation:
        """Atomically claim ``jti``, remembered until ``expires_at`` (epoch seconds).

        :raises StoreUnavailable: a shared store cannot be reached (for every method).
        """

    @abstractmethod
    def complete(self, jti: str, message_id: str) -> None:
        """Mark a reserved ``jti`` as sent, as ``message_id``."""

    @abstractmethod
    def release(self, jti: str) -> None:
        """Forget a reserved ``jti`` whose email was not sent."""


@dataclass
class _Entry:
    expires_at: float
    message_id: str | None


class MemoryReplayStore(ReplayStore):
    """An in-process :class:`ReplayStore`; expired entries are dropped as time passes.

    :param max_entries: a bound on memory; when full, new ``jti`` values are refused as
        ``"pending"`` (the caller retries later) rather than forgetting live ones.
    :param clock: seconds since the epoch (default :func:`time.time`).
    """

    def __init__(
        self, *, max_entries: int = 1_000_000, clock: Callable[[], float] = time.time
    ) -> None:
        self._entries: dict[str, _Entry] = {}
        self._expiry: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._max_entries = max_entries
        self._clock = clock

    def __len__(self) -> int:
        with self._lock:
            self._purge(self._clock())
            return len(self._entries)

    def _purge(self, now: float) -> None:
        while self._expiry and self._expiry[0][0] <= now:
            expires_at, jti = heapq.heappop(self._expiry)
            entry = self._entries.get(jti)
            if entry is not None and entry.expires_at == expires_at:
                del self._entries[jti]

    def reserve(self, jti: str, expires_at: float) -> Reservation:
        with self._lock:
            now = self._clock()
            self._purge(now)
            entry = self._entries.get(jti)
            if entry is not None:
                if entry.message_id is None:
                    return Reservation("pending")
                return Reservation("sent", entry.message_id)
            if len(self._entries) >= self._max_entries:
                return Reservation("pending")
            expires_at = max(expires_at, now + 1)
            self._entries[jti] = _Entry(expires_at, None)
            heapq.heappush(self._expiry, (expires_at, jti))
            return Reservation("new")

    def complete(self, jti: str, message_id: str) -> None:
        with self._lock:
            entry = self._entries.get(jti)
            if entry is not None:
                entry.message_id = message_id

    def release(self, jti: str) -> None:
        with self._lock:
            entry = self._entries.get(jti)
            if entry is not None and entry.message_id is None:
                del self._entries[jti]
