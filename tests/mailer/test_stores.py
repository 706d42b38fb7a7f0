"""The replay store and the rate limiter, with the clock moved by time-machine."""

from __future__ import annotations

import threading

import time_machine

from flask_confirm_mail.mailer.rate_limit import RateLimiter
from flask_confirm_mail.mailer.replay import MemoryReplayStore

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


def test_rate_limit_sliding_window() -> None:
    limiter = RateLimiter(3, 3600)
    with time_machine.travel(T0, tick=False) as traveller:
        assert limiter.acquire("a") is None
        traveller.shift(600)
        assert limiter.acquire("a") is None
        assert limiter.acquire("a") is None
        assert limiter.acquire("a") == 3000
        assert limiter.acquire("b") is None
        traveller.shift(3000)  # the first hit leaves the window
        assert limiter.acquire("a") is None
        assert limiter.acquire("a") == 600
        traveller.shift(600)
        assert limiter.acquire("a") is None


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


def test_old_keys_are_swept() -> None:
    limiter = RateLimiter(5, 60)
    with time_machine.travel(T0, tick=False) as traveller:
        for n in range(100):
            limiter.acquire(f"user{n}")
        traveller.shift(121)
        limiter.acquire("new")
        assert list(limiter._hits) == ["new"]
