"""Scenario 4: scale-out, 1, 2 and 4 ``flask confirm-mail worker`` processes on PostgreSQL.

Each worker runs ``CONFIRM_MAIL_CONCURRENCY=32`` (the concurrency of the one-worker
target) against an SMTP server answering in 300 ms, the slow end of a provider's range:
delivery is bound by waiting, and the figure shows whether claiming (``FOR UPDATE SKIP
LOCKED``) shares the work out. At 100 ms, four such workers would need about 1,000
messages a second, more CPU than the two cores hold with PostgreSQL, the SMTP server and
the client on them (scenario 3 gives the CPU per message). The workers start before the
clock: a round writes a burst of pending messages (flushed before the clock) and times
from its commit until every one is ``sent``. The burst, 1,280 messages, is ten waves of
the four workers' 128 in flight, so the first wave's start and the last one's tail weigh
little.
"""

from __future__ import annotations

import time
from contextlib import ExitStack

import sqlalchemy as sa

from benchmarks.apps import User, create_ours, ours_db
from benchmarks.context import BenchContext
from benchmarks.measure import interleaved, wait_until
from benchmarks.processes import ChildProcess
from benchmarks.report import Column, Row, ScenarioReport, Table, Target
from benchmarks.smtp_sink import SinkProcess
from benchmarks.workers import worker_process
from flask_confirm_mail import send_confirmation
from flask_confirm_mail.confirmation import get_flow
from flask_confirm_mail.outbox import SENT

KEY = "scale_out"
TITLE = "4. Scale-out: workers on PostgreSQL, CONCURRENCY 32, SMTP answers after 300 ms"
#: Emails in flight per worker (``CONFIRM_MAIL_CONCURRENCY``).
CONCURRENCY = 32
SMTP_DELAY = 0.3
WORKER_COUNTS = (1, 2, 4)
POLL_INTERVAL = 0.05


class Burst:
    """Queues ``count`` messages for workers of one database and waits until all are sent."""

    def __init__(self, database_url: str, count: int) -> None:
        self.app = create_ours(database_url, delivery="worker")
        self.count = count
        self.table = get_flow(self.app).outbox_table
        with self.app.app_context():
            ours_db.session.add_all(User(email=f"cat{i}@example.org") for i in range(count))
            ours_db.session.commit()

    def sent(self) -> int:
        c = self.table.c
        with self.app.app_context(), ours_db.engine.connect() as conn:
            query = sa.select(sa.func.count()).select_from(self.table).where(c.status == SENT)
            return int(conn.execute(query).scalar_one())

    def round(self) -> float:
        """Messages per second for one burst."""
        before = self.sent()
        with self.app.app_context():
            for user in ours_db.session.query(User).all():
                send_confirmation(user)
            ours_db.session.flush()  # the rows written before the clock; the commit timed
            start = time.perf_counter()
            ours_db.session.commit()
        wait_until(
            lambda: self.sent() - before >= self.count,
            timeout=120,
            interval=0.01,
            what="the workers to send the burst",
        )
        return self.count / (time.perf_counter() - start)

    def sent_per_worker(self) -> list[int]:
        """How many messages each worker process sent (by the worker id holding each row)."""
        c = self.table.c
        query = (
            sa.select(c.claimed_by, sa.func.count()).where(c.status == SENT).group_by(c.claimed_by)
        )
        with self.app.app_context(), ours_db.engine.connect() as conn:
            counts: dict[str, int] = {}
            for worker_id, count in conn.execute(query).all():
                # A worker id is host:pid:random; one process runs one loop.
                process = str(worker_id).rsplit(":", 1)[0]
                counts[process] = counts.get(process, 0) + int(count)
        return sorted(counts.values(), reverse=True)

    def close(self) -> None:
        with self.app.app_context():
            ours_db.session.remove()
            ours_db.engine.dispose()


def run(context: BenchContext) -> ScenarioReport:
    burst_size = context.size(1280, 80, 20)
    rounds = context.size(3, 1, 1)
    report = ScenarioReport(
        KEY,
        TITLE,
        settings={
            "smtp_delay_s": SMTP_DELAY,
            "messages_per_round": burst_size,
            "rounds": rounds,
            "worker_poll_interval_s": POLL_INTERVAL,
        },
    )
    target_name = "4 workers / 1 worker"
    if context.postgres is None:
        report.skipped = context.postgres_missing
        report.targets.append(
            Target(
                KEY, target_name, "-", ">= 3.5x", None, note=f"skipped ({context.postgres_missing})"
            )
        )
        return report
    table = Table(
        f"Messages per second (median of {rounds} rounds of {burst_size} messages)",
        [Column("rate", "msg/s", 1)],
        baseline="workers_1",
    )
    report.tables.append(table)
    with SinkProcess(delay=SMTP_DELAY) as sink, ExitStack() as cleanup:
        bursts: dict[str, Burst] = {}
        for count in WORKER_COUNTS:
            name = f"workers_{count}"
            url = context.postgres_url(name)
            assert url is not None
            burst = Burst(url, burst_size)
            cleanup.callback(burst.close)
            workers: list[ChildProcess] = []
            for index in range(count):
                worker = worker_process(
                    context,
                    f"scale-{count}-{index}",
                    database_url=url,
                    smtp_port=sink.port,
                    poll_interval=POLL_INTERVAL,
                    concurrency=CONCURRENCY,
                )
                workers.append(worker.start())
                cleanup.callback(worker.stop)
            for worker in workers:
                worker.wait_for_output("started")
            bursts[name] = burst
        context.log(f"{KEY}: {rounds} rounds of {burst_size} messages")
        results = interleaved(
            {name: b.round for name, b in bursts.items()}, rounds=rounds, warmup=0
        )
        shares = {name: burst.sent_per_worker() for name, burst in bursts.items()}
    for count in WORKER_COUNTS:
        name = f"workers_{count}"
        label = f"{count} worker{'s' if count > 1 else ''}"
        table.rows.append(
            Row(
                name, label, rounds={"rate": results[name]}, extra={"sent_per_worker": shares[name]}
            )
        )
    ratio = table.ratio("workers_4", "rate")
    report.targets.append(
        Target(
            KEY,
            target_name,
            "-" if ratio is None else f"{ratio:.2f}x",
            ">= 3.5x",
            None if ratio is None else ratio >= 3.5,
        )
    )
    report.notes.append(
        "Messages sent by each worker process over all rounds: "
        + "; ".join(f"{name.split('_')[1]} workers: {shares[name]}" for name in shares)
    )
    report.notes.append(
        f"Each worker runs CONFIRM_MAIL_CONCURRENCY={CONCURRENCY}:"
        f" at {SMTP_DELAY * 1000:.0f} ms per message its ceiling is "
        f"{CONCURRENCY / SMTP_DELAY:.0f} msg/s; the 2 cores also run PostgreSQL, the SMTP "
        "server and the client."
    )
    return report
