"""Growth and memory: does anything get slower or bigger as the outbox's history grows?

- ``growth``: two SQLite files, one whose outbox holds a single ``sent`` message and one
  holding 100,000 (with their 100,000 users, copied in bulk from a real row). In
  interleaved rounds, on each: sign-ups (``worker`` mode: the request's own cost), then
  one worker (``CONCURRENCY`` 8) claims and delivers them and a batch to an SMTP sink
  that answers at once. The baseline is the small file.
- ``memory``: one worker delivers 10,000 messages; its resident set size is read from
  ``/proc`` as it goes. The baseline is its size after the first 1,000.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

import sqlalchemy as sa
from flask import Flask

from benchmarks.apps import User, confirm_mail, create_ours, dispose, enqueue, ours_db
from benchmarks.delivery import deliver
from benchmarks.harness import Guard, Run, Sink, log, median, percentile, print_table
from benchmarks.harness import worker as worker_process
from benchmarks.signup import Client

FLAT = 1.25  # at most this ratio to the baseline: growth is noise, not a trend
FLAT_MEMORY = 1.10


def add_history(app: Flask, count: int) -> None:
    """``count`` users, each with a ``sent`` email, copied from one real outbox row."""
    enqueue(app, ["template@example.org"])
    outbox, users = confirm_mail.outbox_model.__table__, User.__table__
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    with app.app_context():
        session = ours_db.session
        template = dict(session.execute(sa.select(outbox)).mappings().one())
        del template["id"]
        for start in range(0, count, 10_000):
            ids = range(1_000_000 + start, 1_000_000 + min(count, start + 10_000))
            session.execute(
                sa.insert(users), [{"id": i, "email": f"h{i}@example.org"} for i in ids]
            )
            rows = [{**template, "user_id": str(i), "recipient": f"h{i}@example.org"} for i in ids]
            session.execute(sa.insert(outbox), rows)
        values = {"status": "sent", "sent_at": now} if "sent_at" in template else {"status": "sent"}
        session.execute(sa.update(outbox).values(values))
        session.commit()


def growth(run: Run) -> list[Guard]:
    history = run.size(100_000, 10_000)
    batch, rounds, per_round = run.size(1000, 200), run.size(3, 2), run.size(200, 40)
    with Sink(run) as sink:
        urls: dict[str, str] = {}
        rates: dict[str, list[float]] = {}
        clients: dict[str, Client] = {}
        for name, count in (("1 sent message", 1), (f"{history:,} sent messages", history)):
            log(f"growth: {name}")
            urls[name] = url = run.sqlite("growth")
            app = create_ours(url, delivery="worker")
            add_history(app, count - 1)
            clients[name], rates[name] = Client(name, app, per_round), []
        log(f"growth: {rounds} rounds of a delivery of {batch} and {per_round} sign-ups")
        for _ in range(rounds):
            for name, client in clients.items():
                client.round()
                rates[name].append(deliver(run, sink, urls[name], 8, count=batch, queued=per_round))
    small, large = clients.values()
    rate_ratio = median([b / a for a, b in zip(*rates.values(), strict=True)])
    p50_ratio = percentile(large.latencies, 50) / percentile(small.latencies, 50)
    rows = []
    for name, client in clients.items():
        p50, p99 = percentile(client.latencies, 50), percentile(client.latencies, 99)
        rows.append([f"outbox holds {name}", median(rates[name]), p50, p99])
        dispose(client.app)
    rows.append(
        [
            "ratio (large / small)",
            rate_ratio,
            p50_ratio,
            percentile(large.latencies, 99) / percentile(small.latencies, 99),
        ]
    )
    print_table(
        f"Growth, SQLite (median of {rounds} rounds): one worker delivering {batch + per_round}"
        " messages, and sign-ups (worker mode)",
        ["", "delivery msg/s", "sign-up p50 ms", "sign-up p99 ms"],
        rows,
    )
    return [
        Guard(
            f"sign-up p50 with {history:,} sent messages over 1",
            f"{p50_ratio:.2f}",
            f"<= {FLAT}",
            p50_ratio <= FLAT,
        ),
        Guard(
            f"delivery rate with {history:,} sent messages over 1",
            f"{rate_ratio:.2f}",
            f">= {1 / FLAT:.1f}",
            rate_ratio >= 1 / FLAT,
        ),
    ]


def memory(run: Run) -> list[Guard]:
    total = run.size(10_000, 2_000)
    first = total // 10
    with Sink(run) as sink:
        url = run.sqlite("memory")
        app = create_ours(url, delivery="worker")
        log(f"memory: queueing {total:,} messages")
        enqueue(app, [f"m{i}@example.org" for i in range(total)])
        dispose(app)
        samples: list[tuple[int, float]] = []
        with worker_process(run, url, sink.port) as worker:
            deadline = time.monotonic() + 600
            while sink.count() < total and time.monotonic() < deadline:
                samples.append((sink.count(), worker.rss_mib()))
                time.sleep(0.05)
            samples.append((sink.count(), worker.rss_mib()))
    if samples[-1][0] < total:
        raise TimeoutError(f"the worker delivered {samples[-1][0]} of {total} in 600 s")
    start = next(rss for count, rss in samples if count >= first)
    peak = max(rss for count, rss in samples if count >= first)
    end = samples[-1][1]
    print_table(
        f"Worker memory, resident set size in MiB, {total:,} messages (ratio: to the first)",
        ["", "RSS MiB", "ratio"],
        [
            [f"after {first:,} messages", start, 1.0],
            [f"largest from {first:,} to {total:,}", peak, peak / start],
            [f"after {total:,} messages", end, end / start],
        ],
    )
    return [
        Guard(
            f"worker memory over {total:,} messages",
            f"{end / start:.2f}x of the size after {first:,} ({end - start:+.1f} MiB)",
            f"<= {FLAT_MEMORY}x",
            end / start <= FLAT_MEMORY,
        )
    ]
