"""A bounded HTTP load generator on loopback: a fixed number of connections in a loop.

Each of ``concurrency`` tasks opens a connection, sends one ``GET`` with
``Connection: close`` (gunicorn's sync workers close every connection anyway), reads the
whole answer and starts over, until the round's time is up. No third-party client: the
standard library's asyncio streams, so the generator costs little CPU per request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field


@dataclass
class LoadResult:
    """What one round of load produced."""

    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    first_error: str = ""

    @property
    def requests(self) -> int:
        return len(self.latencies) + self.errors

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0


async def _client(
    host: str,
    port: int,
    paths: Sequence[str],
    offset: int,
    deadline: float,
    result: LoadResult,
    expect: int,
) -> None:
    index = offset
    while time.perf_counter() < deadline:
        path = paths[index % len(paths)]
        index += 1
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/html\r\n"
            "Connection: close\r\n\r\n"
        ).encode("ascii")
        start = time.perf_counter()
        try:
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(request)
                data = await reader.read()
            finally:
                writer.close()
                await writer.wait_closed()
            status = int(data.split(b" ", 2)[1])
        except (OSError, ValueError, IndexError) as exc:
            result.errors += 1
            result.first_error = result.first_error or f"{type(exc).__name__}: {exc}"
            continue
        elapsed = time.perf_counter() - start
        result.statuses[status] = result.statuses.get(status, 0) + 1
        if status != expect:
            result.errors += 1
            result.first_error = result.first_error or f"{path} answered {status}"
            continue
        result.latencies.append(elapsed)


async def _load(
    host: str, port: int, paths: Sequence[str], seconds: float, concurrency: int, expect: int
) -> LoadResult:
    result = LoadResult()
    start = time.perf_counter()
    deadline = start + seconds
    await asyncio.gather(
        *(_client(host, port, paths, i * 7, deadline, result, expect) for i in range(concurrency))
    )
    result.seconds = time.perf_counter() - start
    return result


def load(
    port: int,
    paths: Sequence[str],
    *,
    seconds: float,
    concurrency: int = 4,
    expect: int = 200,
    host: str = "127.0.0.1",
) -> LoadResult:
    """Request ``paths`` in turn for ``seconds`` over ``concurrency`` connections at a time.

    Runs its own event loop in a thread of its own, so it also works where the calling
    thread already runs one (Playwright's sync API in the same test process, say).
    """
    with ThreadPoolExecutor(1, thread_name_prefix="load-client") as pool:
        job = pool.submit(asyncio.run, _load(host, port, paths, seconds, concurrency, expect))
        return job.result()
