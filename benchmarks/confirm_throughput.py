"""Scenario 2: confirm throughput, requests per second through Flask's test client.

Each request confirms a different, unconfirmed user, on a SQLite file database and then
on PostgreSQL:

- the floor: a bare Flask route making the one-row ``UPDATE`` a confirmation needs
  (``WHERE id = ? AND email_confirmed_at IS NULL``), committing, answering a line of text;
- ours: ``POST /confirm/<token>``, what the button of the confirm page sends: verifying
  the link token, the conditional ``UPDATE``, the commit, the ``email_confirmed`` signal
  and the HTML page;
- Flask-Security's ``GET /confirm/<token>`` in its two configurations (the default one
  verifies a ``sha256_crypt`` hash of the address on every confirmation).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from flask import Flask

from benchmarks import security_app
from benchmarks.apps import FloorUser, User, create_floor, create_ours, floor_db, ours_db
from benchmarks.context import BenchContext
from benchmarks.measure import interleaved
from benchmarks.report import Column, Row, ScenarioReport, Table, Target
from flask_confirm_mail.confirmation import get_flow

KEY = "confirm_throughput"
TITLE = "2. Confirm throughput"


@dataclass
class Candidate:
    """Confirmation URLs made before the clock starts, used one per request."""

    name: str
    label: str
    app: Flask
    method: str
    urls: list[str]
    status: int
    per_round: int
    dispose: Callable[[], None]

    def round(self) -> float:
        """``per_round`` confirmations; requests per second."""
        client = self.app.test_client()
        urls, self.urls = self.urls[: self.per_round], self.urls[self.per_round :]
        if len(urls) < self.per_round:
            raise RuntimeError(f"{self.label}: ran out of confirmation links")
        start = time.perf_counter()
        for url in urls:
            response = client.open(url, method=self.method)
            if response.status_code != self.status:
                raise RuntimeError(f"{self.label}: {url} answered {response.status_code}")
        return len(urls) / (time.perf_counter() - start)

    def statements(self) -> str:
        """What one more confirmation sends to the database, e.g. ``BEGIN UPDATE COMMIT``."""
        sent: list[str] = []

        def begin(conn: Any) -> None:
            sent.append("BEGIN")

        def execute(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
            sent.append(statement.split(None, 1)[0].upper())

        def commit(conn: Any) -> None:
            sent.append("COMMIT")

        def rollback(conn: Any) -> None:
            # SQLAlchemy also "rolls back" a connection that has no transaction open.
            if conn.in_transaction():
                sent.append("ROLLBACK")

        with self.app.app_context():
            engine = self.app.extensions["sqlalchemy"].engine
        listeners = [
            ("begin", begin),
            ("before_cursor_execute", execute),
            ("commit", commit),
            ("rollback", rollback),
        ]
        for name, listener in listeners:
            sa.event.listen(engine, name, listener)
        try:
            url = self.urls.pop()
            response = self.app.test_client().open(url, method=self.method)
            if response.status_code != self.status:
                raise RuntimeError(f"{self.label}: {url} answered {response.status_code}")
        finally:
            for name, listener in listeners:
                sa.event.remove(engine, name, listener)
        return " ".join(sent)


def _emails(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{i}@example.org" for i in range(count)]


def _floor(url: str, count: int, per_round: int) -> Candidate:
    app = create_floor(url)
    with app.app_context():
        users = [FloorUser(email=email) for email in _emails("floor", count)]
        floor_db.session.add_all(users)
        floor_db.session.commit()
        urls = [f"/confirm/{user.id}" for user in users]

    def dispose() -> None:
        with app.app_context():
            floor_db.session.remove()
            floor_db.engine.dispose()

    return Candidate(
        "floor", "floor: bare route, one-row UPDATE", app, "POST", urls, 200, per_round, dispose
    )


def _ours(url: str, count: int, per_round: int) -> Candidate:
    app = create_ours(url, delivery="worker")
    flow = get_flow(app)
    with app.app_context():
        users = [User(email=email) for email in _emails("ours", count)]
        ours_db.session.add_all(users)
        ours_db.session.commit()
        urls = [f"/confirm/{flow.signer.issue(str(u.id), u.email)[0]}" for u in users]

    def dispose() -> None:
        with app.app_context():
            ours_db.session.remove()
            ours_db.engine.dispose()

    return Candidate(
        "ours", "ours: POST /confirm/<token>", app, "POST", urls, 200, per_round, dispose
    )


def _security(url: str, configuration: str, count: int, per_round: int) -> Candidate:
    app = security_app.create_security_app(url, configuration=configuration, smtp_port=25)
    tokens = security_app.confirmation_tokens(app, _emails(configuration, count))
    return Candidate(
        f"security_{configuration}",
        f"Flask-Security GET /confirm/<token>, {configuration} hashing",
        app,
        "GET",
        [f"/confirm/{token}" for token in tokens],
        302,
        per_round,
        lambda: security_app.dispose(app),
    )


def measure(context: BenchContext, database: str, make_url: Callable[[str], str | None]) -> Table:
    """The table for one database."""
    rounds = context.size(7, 3, 1)
    per_round = context.size(150, 40, 5)
    # Flask-Security's default configuration spends ~150 ms per confirmation hashing.
    slow_per_round = context.size(6, 2, 1)
    table = Table(
        f"Confirmations per second, {database} (median of {rounds} rounds of {per_round} "
        f"requests; {slow_per_round} for Flask-Security's default hashing)",
        [Column("rate", "req/s", 0)],
        baseline="floor",
    )
    # A warm-up round, the measured rounds, and one for the statement count.
    need = (rounds + 1) * per_round + 1
    need_slow = (rounds + 1) * slow_per_round + 1

    def url(name: str) -> str:
        value = make_url(name)
        assert value is not None
        return value

    candidates = [_floor(url("floor"), need, per_round), _ours(url("ours"), need, per_round)]
    missing: list[Row] = []
    reason = security_app.available()
    for configuration in security_app.CONFIGURATIONS:
        name = f"security_{configuration}"
        if reason is not None:
            missing.append(Row.not_measured(name, f"Flask-Security, {configuration}", reason))
            continue
        slow = configuration == "default"
        count, size = (need_slow, slow_per_round) if slow else (need, per_round)
        context.log(f"{KEY} ({database}): making {count} Flask-Security links ({configuration})")
        candidates.append(_security(url(name), configuration, count, size))
    try:
        context.log(f"{KEY} ({database}): {rounds} rounds")
        results = interleaved({c.name: c.round for c in candidates}, rounds=rounds)
        statements = {c.name: c.statements() for c in candidates}
    finally:
        for candidate in candidates:
            candidate.dispose()
    for candidate in candidates:
        table.rows.append(
            Row(
                candidate.name,
                candidate.label,
                rounds={"rate": results[candidate.name]},
                note=f"per confirmation: {statements[candidate.name]}",
            )
        )
    table.rows.extend(missing)
    return table


def run(context: BenchContext) -> ScenarioReport:
    report = ScenarioReport(KEY, TITLE, settings={"client": "flask test client"})
    for database, make_url in (
        ("SQLite file", context.sqlite_url),
        ("PostgreSQL", context.postgres_url),
    ):
        if database == "PostgreSQL" and context.postgres is None:
            report.notes.append(f"PostgreSQL: skipped ({context.postgres_missing})")
            for target in ("ours / floor", "ours / Flask-Security"):
                report.targets.append(
                    Target(
                        KEY, f"{target}, {database}", "-", "", None, note=context.postgres_missing
                    )
                )
            continue
        table = measure(context, database, make_url)
        report.tables.append(table)
        report.targets.extend(_targets(table, database))
    return report


def _targets(table: Table, database: str) -> list[Target]:
    targets = []
    ratio = table.ratio("ours", "rate")
    ours = table.value("ours", "rate")
    floor = table.value("floor", "rate")
    targets.append(
        Target(
            KEY,
            f"ours / floor, {database}",
            "-" if ratio is None else f"{ratio:.2f} ({ours:.0f} vs {floor:.0f} req/s)",
            ">= 0.8",
            None if ratio is None else ratio >= 0.8,
        )
    )
    for configuration in security_app.CONFIGURATIONS:
        name = f"security_{configuration}"
        peer = table.value(name, "rate")
        versus = table.ratio("ours", "rate", to=name)
        what = f"ours / Flask-Security ({configuration}), {database}"
        if peer is None or versus is None:
            targets.append(Target(KEY, what, "-", "> 1", None, note=table.row(name).note))
            continue
        targets.append(
            Target(
                KEY,
                what,
                f"{versus:.2f} ({ours:.0f} vs {peer:.0f} req/s)",
                "> 1",
                versus > 1,
            )
        )
    return targets
