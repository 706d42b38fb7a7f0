"""Scenario 9: wake-up latency, commit -> SMTP accepted, at 20 sign-ups a second.

Each sign-up (``POST /signup`` through Flask's test client, paced at 20 a second) notes
``time.monotonic()`` right after its commit; the SMTP server (a child process that
answers at once) notes the same clock, shared by every process of the machine, when it
accepts the message. Default settings throughout: ``CONFIRM_MAIL_POLL_INTERVAL`` 1 s,
``CONCURRENCY`` 8. Candidates, each on a SQLite file and on PostgreSQL:

- ``thread``: the sender thread of the app's own process, woken by the commit;
- ``worker``: a ``flask confirm-mail worker`` process, woken on PostgreSQL by the
  commit's ``NOTIFY`` (``LISTEN``), on SQLite by its watch of the file's commit counter
  (``PRAGMA data_version``, :class:`~flask_confirm_mail.outbox.SQLiteWatcher`).

After the sign-ups, the idle worker's CPU (user + system, from ``/proc/<pid>/stat``) is
measured over 10 s (3 s in a quick run): an idle worker should cost next to nothing.
"""

from __future__ import annotations

import os
import time

from flask import Flask

from benchmarks.apps import create_ours, ours_db
from benchmarks.context import BenchContext
from benchmarks.measure import percentile
from benchmarks.report import Column, Row, ScenarioReport, Table, Target
from benchmarks.smtp_sink import SinkProcess
from benchmarks.workers import worker_process
from flask_confirm_mail import stop_delivery

KEY = "handoff_latency"
TITLE = "9. Wake-up: commit -> SMTP accepted at 20 sign-ups/s, default settings"
RATE = 20.0
#: p99 targets in ms, by delivery mode and database.
TARGETS = {
    ("thread", "sqlite"): 25.0,
    ("thread", "postgresql"): 25.0,
    ("worker", "sqlite"): 250.0,
    ("worker", "postgresql"): 25.0,
}
#: An idle worker's CPU share, in percent of one core, to count as "near zero".
IDLE_CPU_TARGET = 1.0


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sign_up_latencies(app: Flask, sink: SinkProcess, count: int, tag: str) -> list[float]:
    """Sign ``count`` users up on ``app`` at :data:`RATE` a second; each one's
    commit -> SMTP accepted latency in ms. Stops ``thread`` mode's sender and disposes
    of ``app``'s engine at the end."""
    client = app.test_client()
    committed: dict[str, float] = {}
    sink.arrivals()  # start recording
    try:
        start = time.monotonic()
        for index in range(count):
            pause = start + index / RATE - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            address = f"{tag}{index}@example.org"
            response = client.post("/signup", data={"email": address})
            committed[address] = time.monotonic()
            if response.status_code != 201:
                raise RuntimeError(f"sign-up answered {response.status_code}")
        deadline = time.monotonic() + 30
        arrivals = sink.arrivals()
        while len(set(committed) & set(arrivals)) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(arrivals)} of {count} emails arrived in time")
            time.sleep(0.05)
            arrivals = sink.arrivals()
    finally:
        if app.config["CONFIRM_MAIL_DELIVERY"] == "thread":
            stop_delivery(app)
        with app.app_context():
            ours_db.session.remove()
            ours_db.engine.dispose()
    # Clipped at zero: the commit happens just before the view answers.
    return [max(0.0, arrivals[a] - committed[a]) * 1000 for a in committed]


def _measure(
    context: BenchContext, sink: SinkProcess, url: str, mode: str, database: str
) -> tuple[Row, Row | None]:
    """The latency row, and for ``worker`` mode the idle worker's CPU row."""
    count = context.size(200, 60, 10)
    label = f"{mode} mode, {database}"
    name = f"{mode}_{database}"
    if mode == "thread":
        latencies = sign_up_latencies(
            create_ours(url, delivery=mode, smtp_port=sink.port), sink, count, name
        )
        idle: Row | None = None
    else:
        tables = create_ours(url, delivery="worker")  # the tables, before the worker starts
        with tables.app_context():
            ours_db.engine.dispose()
        worker = worker_process(context, name, database_url=url, smtp_port=sink.port)
        worker.start()
        try:
            worker.wait_for_output("started")
            time.sleep(1.0)  # past its first poll: idle
            latencies = sign_up_latencies(
                create_ours(url, delivery=mode, smtp_port=sink.port), sink, count, name
            )
            time.sleep(1.0)
            seconds = context.size(10.0, 3.0, 1.0)
            before = _cpu_seconds(worker.pid)
            time.sleep(seconds)
            cpu = (_cpu_seconds(worker.pid) - before) / seconds * 100
            idle = Row(f"idle_{database}", f"idle worker, {database}", rounds={"cpu": [cpu]})
        finally:
            worker.stop()
    rounds = {"p50": [percentile(latencies, 50)], "p99": [percentile(latencies, 99)]}
    return Row(name, label, rounds=rounds, extra={"latencies_ms": latencies}), idle


def run(context: BenchContext) -> ScenarioReport:
    report = ScenarioReport(KEY, TITLE, settings={"rate_per_s": RATE})
    table = Table(
        f"commit -> SMTP accepted, ms ({context.size(200, 60, 10)} sign-ups at "
        f"{RATE:g}/s; ratio: to thread mode on SQLite)",
        [Column("p50", "p50 ms", 1), Column("p99", "p99 ms", 1)],
        baseline="thread_sqlite",
    )
    idle_table = Table(
        f"idle worker CPU, % of a core over {context.size(10, 3, 1)} s after the sign-ups "
        "(ratio: to SQLite)",
        [Column("cpu", "CPU %", 2)],
        baseline="idle_sqlite",
    )
    report.tables += [table, idle_table]
    with SinkProcess() as sink:
        for database in ("sqlite", "postgresql"):
            for mode in ("thread", "worker"):
                name = f"{mode}_{database}"
                if database == "sqlite":
                    url: str | None = context.sqlite_url(f"handoff-{mode}")
                else:
                    url = context.postgres_url(f"handoff_{mode}")
                if url is None:
                    label = f"{mode} mode, {database}"
                    table.rows.append(Row.not_measured(name, label, context.postgres_missing))
                    if mode == "worker":
                        idle_table.rows.append(
                            Row.not_measured(
                                f"idle_{database}",
                                f"idle worker, {database}",
                                context.postgres_missing,
                            )
                        )
                    continue
                context.log(f"{KEY}: {mode} mode on {database}")
                latency, idle = _measure(context, sink, url, mode, database)
                table.rows.append(latency)
                if idle is not None:
                    idle_table.rows.append(idle)
    for (mode, database), limit in TARGETS.items():
        p99 = table.value(f"{mode}_{database}", "p99")
        report.targets.append(
            Target(
                KEY,
                f"{mode} mode on {database}, p99",
                "-" if p99 is None else f"{p99:.1f} ms",
                f"<= {limit:g} ms",
                None if p99 is None else p99 <= limit,
            )
        )
    for database in ("sqlite", "postgresql"):
        idle = idle_table.value(f"idle_{database}", "cpu")
        report.targets.append(
            Target(
                KEY,
                f"idle worker CPU on {database}",
                "-" if idle is None else f"{idle:.2f} % of a core",
                f"<= {IDLE_CPU_TARGET:g} %",
                None if idle is None else idle <= IDLE_CPU_TARGET,
            )
        )
    return report
