"""The replay stores and the rate limiter: in memory (time-machine moves the clock), in Redis."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
import time_machine

from flask_confirm_mail.mailer.rate_limit import RateLimiter
from flask_confirm_mail.mailer.redis_replay import KEY_PREFIX, RedisReplayStore, connect
from flask_confirm_mail.mailer.replay import MemoryReplayStore, Reservation, StoreUnavailable
from tests.support.redis_server import free_port

T0 = 1_800_000_000


def test_replay_states() -> None:
    store = MemoryReplayStore()
    with time_machine.travel(T0, tick=False):
        assert store.reserve("jti-1", T0 + 60).state == "new"
        assert store.reserve("jti-1", T0 + 60).state == "pending"
        store.complete("jti-1", "<id@x>")
        again = store.reserve("jti-1", T0 + 60)
        assert (again.state, again.message_id) == ("sent", "<id@x>")


def test_released_jti_can_be_sent_again() -> None:
    store = MemoryReplayStore()
    with time_machine.travel(T0, tick=False):
        assert store.reserve("jti-1", T0 + 60).state == "new"
        store.release("jti-1")
        assert store.reserve("jti-1", T0 + 60).state == "new"


def test_jti_is_forgotten_after_expiry() -> None:
    store = MemoryReplayStore()
    with time_machine.travel(T0, tick=False) as traveller:
        store.reserve("jti-1", T0 + 60)
        store.complete("jti-1", "<id@x>")
        traveller.shift(59)
        assert store.reserve("jti-1", T0 + 60).state == "sent"
        traveller.shift(2)
        assert len(store) == 0
        assert store.reserve("jti-1", T0 + 120).state == "new"


def test_full_store_refuses_rather_than_forgets() -> None:
    store = MemoryReplayStore(max_entries=2)
    with time_machine.travel(T0, tick=False):
        store.reserve("a" * 8, T0 + 60)
        store.reserve("b" * 8, T0 + 60)
        assert store.reserve("c" * 8, T0 + 60).state == "pending"
        assert store.reserve("a" * 8, T0 + 60).state == "pending"


def test_reserve_is_atomic_across_threads() -> None:
    store = MemoryReplayStore()
    results: list[str] = []
    barrier = threading.Barrier(16)

    def reserve() -> None:
        barrier.wait()
        results.append(store.reserve("same-jti", 2e9).state)

    threads = [threading.Thread(target=reserve) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == ["new"] + ["pending"] * 15


def test_rate_limit_fixed_window() -> None:
    limiter = RateLimiter(3, 3600)
    with time_machine.travel(T0, tick=False) as traveller:
        assert limiter.acquire("a") is None
        traveller.shift(600)
        assert limiter.acquire("a") is None
        assert limiter.acquire("a") is None
        assert limiter.acquire("a") == 3000
        assert limiter.acquire("a") == 3000  # a refused hit does not count
        assert limiter.acquire("b") is None
        traveller.shift(3000)  # the window is over
        assert limiter.acquire("a") is None
        assert limiter.acquire("a") is None
        assert limiter.acquire("a") is None
        assert limiter.acquire("a") == 3600


def test_refund_gives_the_hit_back() -> None:
    limiter = RateLimiter(1, 3600)
    with time_machine.travel(T0, tick=False):
        assert limiter.acquire("a") is None
        limiter.refund("a")
        assert limiter.acquire("a") is None
        assert limiter.acquire("a") is not None


def test_zero_limit_allows_everything() -> None:
    limiter = RateLimiter(0, 3600)
    assert all(limiter.acquire("a") is None for _ in range(100))


def test_redis_replay_store_states_and_expiry(redis_url: str) -> None:
    store, other_process = (
        RedisReplayStore(connect(redis_url)),
        RedisReplayStore(connect(redis_url)),
    )
    jti, expires_at = uuid.uuid4().hex, time.time() + 600
    assert store.reserve(jti, expires_at).state == "new"
    assert other_process.reserve(jti, expires_at).state == "pending"
    assert 590 <= store.client.ttl(KEY_PREFIX + jti) <= 601
    store.complete(jti, "<id@x>")
    other_process.release(jti)  # a sent key is never released
    assert other_process.reserve(jti, expires_at) == Reservation("sent", "<id@x>")
    assert 590 <= store.client.ttl(KEY_PREFIX + jti) <= 601, "complete keeps the expiry"


def test_redis_replay_store_release_lets_a_retry_send(redis_url: str) -> None:
    store = RedisReplayStore(connect(redis_url))
    jti = uuid.uuid4().hex
    assert store.reserve(jti, time.time() + 60).state == "new"
    store.release(jti)
    assert store.reserve(jti, time.time() + 60).state == "new"


def test_redis_rate_limit_is_shared_and_refunded(redis_url: str) -> None:
    one, other_process = (RateLimiter(2, 3600, storage_uri=redis_url) for _ in range(2))
    key = uuid.uuid4().hex
    assert one.acquire(key) is None
    assert other_process.acquire(key) is None
    assert 3590 <= (one.acquire(key) or 0) <= 3600
    other_process.refund(key)
    assert one.acquire(key) is None
    assert other_process.acquire(key) is not None


def test_unreachable_redis_is_store_unavailable() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(StoreUnavailable):
        RedisReplayStore(connect(url, timeout=0.5)).reserve("jti", time.time() + 60)
    with pytest.raises(StoreUnavailable):
        RateLimiter(1, 60, storage_uri=url, socket_connect_timeout=0.5).acquire("key")
