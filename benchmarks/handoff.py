"""Handoff: from the sign-up's commit to the SMTP server's ``250``, in each delivery mode.

Sign-ups arrive at a steady 20 a second (``sync`` sends in the request, so it runs as
fast as it can) and the SMTP sink answers each message after 100 ms. The clock starts
when the view begins its commit and stops when the sink accepts the email (both read
``time.monotonic``, one clock for all processes). ``worker`` runs one ``flask
confirm-mail worker`` beside the app. On a SQLite file, and on PostgreSQL when available.
The baseline is one message over an open smtplib connection to the same sink.
"""

from __future__ import annotations

import time
from contextlib import ExitStack

from flask import Flask

from benchmarks.apps import COMMITTED, create_ours, dispose
from benchmarks.harness import Guard, Run, Sink, log, percentile, print_table, smtp_ceiling
from benchmarks.harness import worker as worker_process

MODES = ("sync", "thread", "worker")
SMTP_DELAY = 0.1
RATE = 20.0


def handoff_ms(app: Flask, sink: Sink, count: int, tag: str, rate: float = RATE) -> list[float]:
    """``count`` sign-ups at ``rate`` a second; each one's commit -> accepted, in ms."""
    client = app.test_client()
    before = sink.count()
    addresses = [f"{tag}{i}@example.org".lower() for i in range(count)]  # as the sink sees them
    start = time.monotonic()
    for number, address in enumerate(addresses):
        time.sleep(max(0.0, start + number / rate - time.monotonic()))
        response = client.post("/signup", data={"email": address})
        if response.status_code != 201:
            raise RuntimeError(f"{app.name}: sign-up answered {response.status_code}")
    sink.wait_for(before + count, 120)
    accepted = sink.accepted_at()
    return [(accepted[address] - COMMITTED[address]) * 1000 for address in addresses]


def run(run: Run) -> list[Guard]:
    count = run.size(200, 20)
    databases = ["SQLite", "PostgreSQL"] if run.postgres else ["SQLite"]
    rows: list[list[object]] = []
    guards = []
    with Sink(run, SMTP_DELAY) as sink:
        floor = 1000 / smtp_ceiling(sink, run.size(10, 3))
        rows.append(["one message over an open smtplib connection", floor, floor, 1.0])
        for database in databases:
            for mode in MODES:
                log(f"handoff: {mode}, {database}, {count} sign-ups")
                url = run.postgresql(mode) if database == "PostgreSQL" else run.sqlite(mode)
                assert url is not None
                with ExitStack() as stack:
                    if mode == "worker":
                        stack.enter_context(worker_process(run, url, sink.port))
                    app = create_ours(url, delivery=mode, smtp_port=sink.port)
                    latencies = handoff_ms(app, sink, count, f"{mode}-{database}-")
                    dispose(app)
                p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
                rows.append([f"delivery={mode}, {database}", p50, p99, p99 / floor])
                guards.append(
                    Guard(
                        f"handoff p99, delivery={mode}, {database}",
                        f"{p99:.0f} ms",
                        "< 1000 ms",
                        p99 < 1000,
                    )
                )
    if not run.postgres:
        print(f"\nHandoff on PostgreSQL: skipped ({run.postgres_missing})")
    print_table(
        f"Commit -> SMTP accepted, ms ({count} sign-ups at {RATE:.0f}/s, SMTP answers after "
        f"{SMTP_DELAY * 1000:.0f} ms; ratio: p99 to one smtplib message)",
        ["", "p50", "p99", "p99 ratio"],
        rows,
    )
    return guards
