"""Scenario 5: growth, the cost of enqueueing and claiming with a big delivered history.

Two outboxes per database, one holding 1,000 ``sent`` rows, the other 100,000 (bulk
inserted before the clock starts; on PostgreSQL followed by ``ANALYZE``, as autovacuum
would do). A round measures, on each:

- enqueue: :func:`~flask_confirm_mail.send_confirmation` for an existing user and the
  commit, per message (``worker`` delivery mode, so nothing is sent);
- claim: one :func:`~flask_confirm_mail.outbox.claim` of a batch of 20 due messages in
  its own transaction, as a worker does.

The rows a round adds are deleted after it (off the clock), so both outboxes keep
their size.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from benchmarks.apps import User, create_ours, ours_db
from benchmarks.context import BenchContext
from benchmarks.measure import interleaved, median
from benchmarks.report import Column, Row, ScenarioReport, Table, Target
from flask_confirm_mail import outbox, send_confirmation
from flask_confirm_mail.confirmation import get_flow
from flask_confirm_mail.outbox import PENDING, SENT, utcnow

KEY = "growth"
TITLE = "5. Growth: enqueue and claim with 1,000 and 100,000 delivered rows"
BATCH = 20
ALLOWED = 1.2


def _sent_rows(start: int, count: int) -> list[dict[str, Any]]:
    now = utcnow()
    return [
        {
            "user_id": str(i % 500 + 1),
            "recipient": f"old{i}@example.org",
            "purpose": "signup",
            "status": SENT,
            "attempts": 1,
            "due_at": None,
            "claimed_by": "bench:history",
            "message_id": f"<history{i}@app.example.com>",
            "created_at": now - timedelta(seconds=i),
            "sent_at": now - timedelta(seconds=i),
        }
        for i in range(start, start + count)
    ]


class Outbox:
    """One database whose outbox holds ``history`` delivered rows."""

    def __init__(self, url: str, history: int, *, users: int, operations: int) -> None:
        self.app = create_ours(url, delivery="worker")
        self.table: sa.Table = get_flow(self.app).outbox_table
        self.operations = operations
        with self.app.app_context():
            ours_db.session.add_all(User(email=f"cat{i}@example.org") for i in range(users))
            ours_db.session.commit()
            engine = ours_db.engine
            with engine.begin() as conn:
                for start in range(0, history, 10_000):
                    rows = _sent_rows(start, min(10_000, history - start))
                    conn.execute(self.table.insert(), rows)
            if engine.dialect.name == "postgresql":
                with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                    conn.exec_driver_sql(f"ANALYZE {self.table.name}")
            with engine.connect() as conn:
                self.history = int(
                    conn.execute(sa.select(sa.func.count()).select_from(self.table)).scalar_one()
                )

    def _delete(self, ids: list[int]) -> None:
        """Delete rows by primary key: a scan of the table would evict the caches."""
        with ours_db.engine.begin() as conn:
            conn.execute(sa.delete(self.table).where(self.table.c.id.in_(ids)))

    def enqueue_round(self) -> float:
        """Microseconds per enqueue (``send_confirmation`` + commit)."""
        with self.app.app_context():
            users = ours_db.session.query(User).limit(self.operations).all()
            timings = []
            ids = []
            for user in users:
                start = time.perf_counter()
                message = send_confirmation(user)
                ours_db.session.commit()
                timings.append(time.perf_counter() - start)
                ids.append(message.id)
            ours_db.session.remove()
            self._delete(ids)
        return median(timings) * 1e6

    def claim_round(self) -> float:
        """Microseconds per claim of a batch of 20."""
        timings = []
        with self.app.app_context():
            engine = ours_db.engine
            for index in range(max(1, self.operations // 4)):
                now = utcnow()
                rows = [
                    {
                        "user_id": "1",
                        "recipient": f"due{index}-{i}@example.org",
                        "purpose": "signup",
                        "status": PENDING,
                        "attempts": 0,
                        "due_at": now,
                        "message_id": f"<due{index}-{i}@app.example.com>",
                        "created_at": now,
                    }
                    for i in range(BATCH)
                ]
                with engine.begin() as conn:
                    conn.execute(self.table.insert(), rows)
                start = time.perf_counter()
                with engine.begin() as conn:
                    claimed = outbox.claim(
                        conn,
                        self.table,
                        worker_id="bench:growth",
                        limit=BATCH,
                        lease=timedelta(minutes=2),
                    )
                timings.append(time.perf_counter() - start)
                if len(claimed) != BATCH:
                    raise RuntimeError(f"claimed {len(claimed)} of {BATCH} due messages")
                self._delete([message.id for message in claimed])
        return median(timings) * 1e6

    def claim_plan(self) -> str:
        """The database's plan for the claim statement, as :func:`outbox.claim` sends it."""
        captured: list[tuple[str, Any]] = []

        def capture(conn: Any, cursor: Any, statement: str, parameters: Any, *rest: Any) -> None:
            captured.append((statement, parameters))

        with self.app.app_context():
            engine = ours_db.engine
            sa.event.listen(engine, "before_cursor_execute", capture)
            try:
                with engine.begin() as conn:
                    outbox.claim(
                        conn,
                        self.table,
                        worker_id="bench:plan",
                        limit=BATCH,
                        lease=timedelta(minutes=2),
                    )
            finally:
                sa.event.remove(engine, "before_cursor_execute", capture)
            statement, parameters = captured[-1]
            sqlite = engine.dialect.name == "sqlite"
            with engine.connect() as conn:
                prefix = "EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN "
                rows = conn.exec_driver_sql(prefix + statement, parameters).all()
                conn.rollback()
        return " | ".join(str(row[-1]).strip() for row in rows)

    def close(self) -> None:
        with self.app.app_context():
            ours_db.session.remove()
            ours_db.engine.dispose()


def measure(
    context: BenchContext, database: str, make_url: Callable[[str], str | None]
) -> tuple[Table, Table, dict[str, str]]:
    small, large = 1_000, context.size(100_000, 100_000, 10_000)
    rounds = context.size(7, 3, 1)
    operations = context.size(100, 40, 10)
    context.log(f"{KEY} ({database}): filling outboxes with {small:,} and {large:,} sent rows")
    outboxes = {}
    for name, history in (("small", small), ("large", large)):
        url = make_url(f"growth-{name}")
        assert url is not None
        outboxes[name] = Outbox(url, history, users=operations, operations=operations)
    labels = {name: f"{box.history:,} rows in the outbox" for name, box in outboxes.items()}
    tables = []
    try:
        context.log(f"{KEY} ({database}): {rounds} rounds")
        for what, unit in (("enqueue", "enqueue + commit"), ("claim", "claim of 20")):
            results = interleaved(
                {name: getattr(box, f"{what}_round") for name, box in outboxes.items()},
                rounds=rounds,
            )
            table = Table(
                f"{database}: microseconds per {unit} (median of {rounds} rounds)",
                [Column("us", "us", 0)],
                baseline="small",
            )
            for name in outboxes:
                table.rows.append(Row(name, labels[name], rounds={"us": results[name]}))
            tables.append(table)
        plans = {name: box.claim_plan() for name, box in outboxes.items()}
    finally:
        for box in outboxes.values():
            box.close()
    return tables[0], tables[1], plans


def run(context: BenchContext) -> ScenarioReport:
    report = ScenarioReport(KEY, TITLE)
    for database, make_url in (
        ("SQLite file", context.sqlite_url),
        ("PostgreSQL", context.postgres_url),
    ):
        if database == "PostgreSQL" and context.postgres is None:
            report.notes.append(f"PostgreSQL: skipped ({context.postgres_missing})")
            for what in ("enqueue", "claim"):
                report.targets.append(
                    Target(
                        KEY,
                        f"{what}, {database}: 100k / 1k",
                        "-",
                        f"<= {ALLOWED}x",
                        None,
                        note=context.postgres_missing,
                    )
                )
            continue
        enqueue, claim, plans = measure(context, database, make_url)
        report.tables += [enqueue, claim]
        report.settings[f"claim_plan_{database}"] = plans
        report.notes.append(f"{database} plan of the claim's SELECT (100k rows): {plans['large']}")
        for what, table in (("enqueue", enqueue), ("claim", claim)):
            ratio = table.ratio("large", "us")
            report.targets.append(
                Target(
                    KEY,
                    f"{what}, {database}: 100k / 1k",
                    "-" if ratio is None else f"{ratio:.2f}x",
                    f"<= {ALLOWED}x",
                    None if ratio is None else ratio <= ALLOWED,
                )
            )
    return report
