"""The reminder scan of a worker: one look for due reminders with many confirmed sign-ups.

    .venv/bin/python -m benchmarks.reminder_scan [--signups 20000] [--rounds 5]

An outbox with ``--signups`` sign-ups older than every delay of ``"1d, 3d"``, all confirmed
but one (the one reminder due), on a SQLite file and on PostgreSQL (the server
``CONFIRM_MAIL_TEST_POSTGRES_URL`` names, else a throwaway one; ``--no-postgres`` skips
it). A round is one dry-run ``ConfirmationFlow.queue_reminders`` (what each worker runs
every ``CONFIRM_MAIL_REMINDER_INTERVAL``). The baseline is the same scan without the SQL
filter on the user table (``UserColumns.waiting_ids``), so every old sign-up is loaded and
checked in Python: the path UUID-keyed models take. It prints the median milliseconds of
each and the ratio filtered / baseline per round (median over rounds).
"""

from __future__ import annotations

import argparse
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import Mapped, mapped_column

from benchmarks.measure import interleaved, median, timed
from benchmarks.postgres import PostgresServer
from flask_confirm_mail import ConfirmableMixin, ConfirmMail
from flask_confirm_mail.confirmation import get_flow
from flask_confirm_mail.outbox import utcnow

db = SQLAlchemy()


class User(ConfirmableMixin, db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "reminder_scan_users"
    id: Mapped[int] = mapped_column(primary_key=True)


def _app(database_url: str, signups: int) -> Flask:
    """An app on a fresh database holding ``signups`` old sign-ups, one of them unconfirmed."""
    app = Flask("bench_reminder_scan")
    app.config.update(
        SQLALCHEMY_DATABASE_URI=database_url,
        MAIL_SUPPRESS_SEND=True,
        MAIL_DEFAULT_SENDER="bench@app.example.com",
        CONFIRM_MAIL_SECRET="bench-link-secret-0123456789abcdef0123456789",
        CONFIRM_MAIL_EXTERNAL_URL="https://app.example.com",
        CONFIRM_MAIL_DELIVERY="worker",
    )
    db.init_app(app)
    ConfirmMail(db=db, user_model=User, reminders="1d, 3d").init_app(app)
    old = utcnow() - timedelta(days=10)
    users = [
        {"id": i, "email": f"u{i}@example.org", "email_confirmed_at": old if i > 1 else None}
        for i in range(1, signups + 1)
    ]
    rows = [
        {"user_id": str(i), "recipient": f"u{i}@example.org", "purpose": "signup",
         "status": "sent", "attempts": 1, "created_at": old, "message_id": f"<{i}@bench>",
         "unknown_outcomes": 0}
        for i in range(1, signups + 1)
    ]  # fmt: skip
    with app.app_context():
        db.drop_all()
        db.create_all()
        db.session.execute(sa.insert(User.__table__), users)
        db.session.execute(sa.insert(get_flow().outbox_table), rows)
        db.session.commit()
        if db.engine.dialect.name == "postgresql":
            with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("ANALYZE")
    return app


def _scan(app: Flask, *, filtered: bool) -> float:
    with app.app_context():
        flow = get_flow()
        waiting_ids = flow.columns.waiting_ids
        if not filtered:
            flow.columns.waiting_ids = lambda dialect: None  # type: ignore[method-assign]
        try:
            seconds = timed(lambda: flow.queue_reminders(dry_run=True))
        finally:
            flow.columns.waiting_ids = waiting_ids  # type: ignore[method-assign]
        return seconds


def measure(database_url: str, signups: int, rounds: int) -> dict[str, Any]:
    app = _app(database_url, signups)
    results = interleaved(
        {
            "filtered": lambda: _scan(app, filtered=True),
            "baseline": lambda: _scan(app, filtered=False),
        },
        rounds=rounds,
    )
    with app.app_context():
        db.drop_all()
        db.engine.dispose()
    ratios = [f / b for f, b in zip(results["filtered"], results["baseline"], strict=True)]
    return {
        "filtered_ms": median(results["filtered"]) * 1000,
        "baseline_ms": median(results["baseline"]) * 1000,
        "ratio": median(ratios),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--signups", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    args = parser.parse_args()
    server, why = (None, "skipped") if args.no_postgres else PostgresServer.find_or_start()
    print(f"reminder scan, {args.signups} old sign-ups (1 unconfirmed), {args.rounds} rounds")
    try:
        with tempfile.TemporaryDirectory() as work:
            databases = {"sqlite": f"sqlite:///{Path(work) / 'scan.db'}"}
            if server is not None:
                databases["postgresql"] = server.database("bench_reminder_scan")
            for name, url in databases.items():
                figures = measure(url, args.signups, args.rounds)
                print(
                    f"{name:10} filtered {figures['filtered_ms']:8.1f} ms   "
                    f"baseline {figures['baseline_ms']:8.1f} ms   ratio {figures['ratio']:.3f}"
                )
            if server is None:
                print(f"postgresql {why}")
    finally:
        if server is not None:
            server.close()


if __name__ == "__main__":
    main()
