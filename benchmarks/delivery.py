"""Delivery: messages per second of ``flask confirm-mail worker`` processes.

The SMTP sink answers each message after 100 or 300 ms, a provider's usual range. The
baseline is one connection's ceiling, measured in the same run: smtplib sending one
message after another over one open connection to the same sink.

- ``delivery``: one worker on a SQLite file at ``CONCURRENCY`` 1, 8 (the default) and 32.
- ``scale_out``: 1 and then 4 workers (``CONCURRENCY`` 8 each) sharing one PostgreSQL
  outbox, at 100 ms.

For each figure the workers start idle, one commit queues the whole batch, and the rate
counts the messages after the first wave (one per connection) up to the last one.
"""

from __future__ import annotations

from contextlib import ExitStack

from benchmarks.apps import create_ours, dispose, enqueue
from benchmarks.harness import Guard, Run, Sink, log, print_table, smtp_ceiling, steady_rate
from benchmarks.harness import worker as worker_process

CONCURRENCIES = (1, 8, 32)
DELAYS = (0.1, 0.3)


def deliver(
    run: Run,
    sink: Sink,
    url: str,
    concurrency: int,
    workers: int = 1,
    count: int = 0,
    queued: int = 0,
) -> float:
    """Queue a batch (by default a few seconds' worth) for ``workers`` to deliver, with the
    ``queued`` messages already waiting: messages per second."""
    seconds = run.size(4.0, 1.0)
    count = count or max(10, round(seconds * workers * concurrency / sink.delay))
    app = create_ours(url, delivery="worker")
    before = sink.count()
    with ExitStack() as stack:
        for _ in range(workers):
            stack.enter_context(worker_process(run, url, sink.port, concurrency))
        enqueue(app, [f"d{before + i}@example.org" for i in range(count)])
        sink.wait_for(before + queued + count, 60 + 20 * seconds)
    dispose(app)
    times = [at for at, _, _ in sink.records()[before:]]
    return steady_rate(times, workers * concurrency)


def per_worker(run: Run) -> list[Guard]:
    guards = []
    for delay in DELAYS:
        with Sink(run, delay) as sink:
            ceiling = smtp_ceiling(sink, run.size(20, 5))
            url = run.sqlite(f"delivery-{delay}")
            rows: list[list[object]] = [["one smtplib connection (the ceiling)", ceiling, 1.0]]
            for concurrency in CONCURRENCIES:
                log(f"delivery: {delay * 1000:.0f} ms, CONCURRENCY {concurrency}")
                rate = deliver(run, sink, url, concurrency)
                rows.append([f"one worker, CONCURRENCY {concurrency}", rate, rate / ceiling])
        print_table(
            f"Delivery per worker, SQLite, SMTP answers after {delay * 1000:.0f} ms "
            "(ratio: to one connection's ceiling)",
            ["", "msg/s", "ratio"],
            rows,
        )
        if delay == 0.1:  # the last row's: CONCURRENCY 32
            ratio = rate / ceiling
            guards.append(
                Guard(
                    "one worker at CONCURRENCY 32, 100 ms, over one connection",
                    f"{ratio:.1f}x",
                    ">= 15x",
                    ratio >= 15,
                )
            )
    return guards


def scale_out(run: Run) -> list[Guard]:
    url = run.postgresql("scale_out")
    name = "4 workers over 1, PostgreSQL"
    if url is None:
        print(f"\nScale-out on PostgreSQL: skipped ({run.postgres_missing})")
        return [Guard(name, "-", ">= 3x", None)]
    with Sink(run, 0.1) as sink:
        log("scale_out: 1 worker")
        one = deliver(run, sink, url, 8)
        log("scale_out: 4 workers")
        four = deliver(run, sink, url, 8, workers=4)
    print_table(
        "Scale-out, PostgreSQL, CONCURRENCY 8 per worker, SMTP answers after 100 ms "
        "(ratio: to one worker)",
        ["", "msg/s", "ratio"],
        [["1 worker", one, 1.0], ["4 workers", four, four / one]],
    )
    return [Guard(name, f"{four / one:.1f}x", ">= 3x", four / one >= 3)]
