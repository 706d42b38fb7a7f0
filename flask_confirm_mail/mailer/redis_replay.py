"""A :class:`~.replay.ReplayStore` in Redis, shared by every mailer process and host.

:meth:`RedisReplayStore.reserve` is one ``SET key pending NX EXAT <exp>``: of all the
processes that try the same ``jti`` at once, exactly one gets it, and Redis forgets the
key when the token could no longer be used anyway.
"""

from __future__ import annotations

import math
import time
from typing import Any

import redis
from redis.exceptions import RedisError

from .replay import ReplayStore, Reservation, StoreUnavailable

__all__ = ["KEY_PREFIX", "RedisReplayStore", "connect"]

#: The prefix of the replay store's keys.
KEY_PREFIX = "confirm-mail-mailer:jti:"
#: The value of a reserved key not yet sent; message ids start with ``<``, never ``p``.
_PENDING = "pending"
#: Deletes a key only while it is still pending (a sent key is never released).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def connect(url: str, *, timeout: float = 2.0) -> redis.Redis:
    """A client of the Redis server at ``url``, with connect and read timeouts."""
    client: redis.Redis = redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        health_check_interval=30,
    )
    return client


class RedisReplayStore(ReplayStore):
    """Remembers ``jti`` values in Redis until their tokens expire.

    :param client: a :class:`redis.Redis` with ``decode_responses=True`` (see
        :func:`connect`); it reconnects by itself once the server is back.
    """

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._release = client.register_script(_RELEASE)

    def reserve(self, jti: str, expires_at: float) -> Reservation:
        key = KEY_PREFIX + jti
        expires = max(math.ceil(expires_at), math.ceil(time.time()) + 1)
        value: Any
        try:
            if self.client.set(key, _PENDING, nx=True, exat=expires):
                return Reservation("new")
            value = self.client.get(key)
        except RedisError as exc:
            raise StoreUnavailable("the replay store cannot be reached") from exc
        if value is None or value == _PENDING:
            # None: it expired between the two commands; the caller retries shortly.
            return Reservation("pending")
        return Reservation("sent", str(value))

    def complete(self, jti: str, message_id: str) -> None:
        try:
            self.client.set(KEY_PREFIX + jti, message_id, xx=True, keepttl=True)
        except RedisError as exc:
            raise StoreUnavailable("the replay store cannot be reached") from exc

    def release(self, jti: str) -> None:
        try:
            self._release(keys=[KEY_PREFIX + jti], args=[_PENDING])
        except RedisError as exc:
            raise StoreUnavailable("the replay store cannot be reached") from exc

    def ping(self) -> bool:
        """Whether the Redis server answers."""
        try:
            return bool(self.client.ping())
        except RedisError:
            return False
