"""Statistics and the round structure every figure goes through.

A figure is the median of several rounds, taken after a warm-up. Candidates of one
scenario run interleaved (round 1 of each, then round 2 of each, in a rotating order),
so a burst of load from elsewhere on the machine hits all of them alike and the ratios
between them hold even when the absolute numbers move.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

T = TypeVar("T")


def median(values: Sequence[float]) -> float:
    """The median of ``values`` (the mean of the middle two for an even count)."""
    if not values:
        raise ValueError("median of no values")
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def percentile_rank(count: int, q: float) -> int:
    """The 1-based rank of the nearest-rank ``q`` percentile among ``count`` values."""
    return max(1, math.ceil(q / 100 * count))


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q`` percentile (0 < q <= 100): p99 of 10 values is the largest."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    return ordered[percentile_rank(len(ordered), q) - 1]


def interleaved(
    candidates: Mapping[str, Callable[[], T]], *, rounds: int, warmup: int = 1
) -> dict[str, list[T]]:
    """Run ``warmup`` unrecorded rounds, then ``rounds`` recorded ones, of every candidate.

    Each call of a candidate is one round and returns its result. The order of the
    candidates rotates from round to round, so none always runs right after another.
    """
    names = list(candidates)
    for _ in range(warmup):
        for name in names:
            gc.collect()
            candidates[name]()
    results: dict[str, list[T]] = {name: [] for name in names}
    for index in range(rounds):
        shift = index % len(names) if names else 0
        for name in names[shift:] + names[:shift]:
            gc.collect()
            results[name].append(candidates[name]())
    return results


def timed(action: Callable[[], object]) -> float:
    """Seconds ``action()`` took."""
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def wait_until(
    condition: Callable[[], bool], *, timeout: float, interval: float = 0.01, what: str = ""
) -> None:
    """Poll ``condition`` until it holds; raise ``TimeoutError`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what or condition}")
        time.sleep(interval)
