"""Scenario 7: peak memory of a worker process draining the outbox.

``flask confirm-mail worker --once`` drains N pending messages (SQLite file, SMTP with
no delay) and exits; its peak resident set size comes from the kernel
(``wait4``'s ``ru_maxrss``). The baseline is the same worker draining 10x fewer messages:
a worker that keeps nothing per message peaks at the same size for both.
"""

from __future__ import annotations

from benchmarks.apps import User, create_ours, ours_db
from benchmarks.context import BenchContext
from benchmarks.measure import interleaved
from benchmarks.report import Column, Row, ScenarioReport, Table, Target
from benchmarks.smtp_sink import SinkProcess
from benchmarks.workers import worker_process
from flask_confirm_mail import send_confirmation

KEY = "memory"
TITLE = "7. Memory: peak RSS of a worker draining the outbox"
MB = 1024 * 1024
ALLOWED_GROWTH_MB = 10.0


class Drain:
    """A database with ``count`` users; each round queues one message each and drains them."""

    def __init__(self, context: BenchContext, sink: SinkProcess, count: int) -> None:
        self.context = context
        self.sink = sink
        self.count = count
        self.url = context.sqlite_url(f"memory-{count}")
        self.app = create_ours(self.url, delivery="worker")
        self.rounds = 0
        with self.app.app_context():
            ours_db.session.add_all(User(email=f"cat{i}@example.org") for i in range(count))
            ours_db.session.commit()

    def round(self) -> float:
        """Peak RSS in MB of a worker draining ``count`` messages."""
        with self.app.app_context():
            for user in ours_db.session.query(User).all():
                send_confirmation(user)
            ours_db.session.commit()
        self.rounds += 1
        before = self.sink.count()
        worker = worker_process(
            self.context,
            f"memory-{self.count}-{self.rounds}",
            database_url=self.url,
            smtp_port=self.sink.port,
            once=True,
        )
        worker.start()
        try:
            code = worker.wait(timeout=600)
        finally:
            worker.stop()
        sent = self.sink.count() - before
        if code != 0 or sent != self.count or worker.peak_rss is None:
            raise RuntimeError(
                f"the worker exited with {code} after sending {sent} of {self.count}:\n"
                + worker.output()[-2000:]
            )
        return worker.peak_rss / MB

    def close(self) -> None:
        with self.app.app_context():
            ours_db.session.remove()
            ours_db.engine.dispose()


def run(context: BenchContext) -> ScenarioReport:
    large = context.size(10_000, 1_000, 200)
    small = large // 10
    rounds = context.size(3, 1, 1)
    report = ScenarioReport(
        KEY, TITLE, settings={"messages": [small, large], "rounds": rounds, "smtp_delay_s": 0}
    )
    table = Table(
        f"Peak RSS of `flask confirm-mail worker --once` in MB (median of {rounds} rounds)",
        [Column("rss", "peak MB", 1)],
        baseline="small",
    )
    report.tables.append(table)
    with SinkProcess() as sink:
        drains = {"small": Drain(context, sink, small), "large": Drain(context, sink, large)}
        try:
            context.log(f"{KEY}: {rounds} rounds of {small} and {large} messages")
            results = interleaved({k: d.round for k, d in drains.items()}, rounds=rounds, warmup=0)
        finally:
            for drain in drains.values():
                drain.close()
    table.rows.append(
        Row("small", f"draining {small:,} messages", rounds={"rss": results["small"]})
    )
    table.rows.append(
        Row("large", f"draining {large:,} messages", rounds={"rss": results["large"]})
    )
    growth = table.difference("large", "rss")
    report.targets.append(
        Target(
            KEY,
            f"peak RSS growth, {small:,} -> {large:,} messages",
            "-" if growth is None else f"{growth:+.1f} MB",
            f"<= {ALLOWED_GROWTH_MB:g} MB",
            None if growth is None else growth <= ALLOWED_GROWTH_MB,
        )
    )
    return report
