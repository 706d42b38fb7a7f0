"""Scenario 1: sign-up latency when the mail provider is slow (300 ms per message).

Every candidate answers ``POST`` sign-ups through Flask's test client, one at a time,
on its own SQLite file; all mail goes to one SMTP server that waits 300 ms before
accepting each message. Candidates:

- the floor: the same sign-up view with no mail at all;
- this extension in each delivery mode: ``thread`` (the default: a sender thread in the
  app process), ``worker`` (a ``flask confirm-mail worker`` process drains the outbox
  meanwhile) and ``sync`` (sends after the commit, before answering);
- the original design: the same view, but the app calls the mailer service over HTTP
  (``remote`` transport, ``variance`` wire: the original's GET) and waits for it, and
  the mailer waits for SMTP;
- Flask-Security ``register`` with ``confirmable``, in its default and cheap-hashing
  configurations (see :mod:`benchmarks.security_app`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field

from flask import Flask

from benchmarks import mailer_process, security_app
from benchmarks.apps import create_floor, create_ours, ours_db
from benchmarks.context import BenchContext
from benchmarks.measure import interleaved, percentile
from benchmarks.report import Column, Row, ScenarioReport, Table, Target
from benchmarks.smtp_sink import SinkProcess
from benchmarks.workers import worker_process
from flask_confirm_mail import stop_delivery

KEY = "signup_latency"
TITLE = "1. Sign-up latency, slow mail provider (SMTP answers after 300 ms)"
SMTP_DELAY = 0.3
PASSWORD = "correct horse battery"


@dataclass
class Candidate:
    """A sign-up endpoint and how to call it."""

    name: str
    label: str
    app: Flask
    form: Callable[[str], dict[str, str]]
    status: int
    requests: int
    warmup: int
    path: str = "/signup"
    latencies: list[float] = field(default_factory=list)
    _count: int = 0

    def __post_init__(self) -> None:
        self.client = self.app.test_client()

    def sign_up(self) -> float:
        """One sign-up with a new address; its latency in milliseconds."""
        self._count += 1
        data = self.form(f"cat{self._count}@example.org")
        start = time.perf_counter()
        response = self.client.post(self.path, data=data)
        elapsed = (time.perf_counter() - start) * 1000
        if response.status_code != self.status:
            raise RuntimeError(
                f"{self.label}: sign-up answered {response.status_code}, expected {self.status}"
            )
        return elapsed

    def round(self) -> tuple[float, float]:
        """``requests`` sign-ups; their p50 and p99 in milliseconds."""
        latencies = [self.sign_up() for _ in range(self.requests)]
        self.latencies.extend(latencies)
        return percentile(latencies, 50), percentile(latencies, 99)

    def warm_up(self) -> None:
        for _ in range(self.warmup):
            self.sign_up()


def _plain_form(email: str) -> dict[str, str]:
    return {"email": email, "name": "Cat"}


def _security_form(email: str) -> dict[str, str]:
    return {"email": email, "password": PASSWORD, "password_confirm": PASSWORD}


def run(context: BenchContext) -> ScenarioReport:
    fast_requests = context.size(200, 30, 4)
    slow_requests = context.size(6, 1, 1)
    rounds = context.size(5, 3, 1)
    report = ScenarioReport(
        KEY,
        TITLE,
        settings={
            "smtp_delay_s": SMTP_DELAY,
            "rounds": rounds,
            "requests_per_round_fast": fast_requests,
            "requests_per_round_slow": slow_requests,
            "database": "SQLite file per candidate",
        },
    )
    table = Table(
        f"Latency of one sign-up in ms (SQLite; median of {rounds} rounds of "
        f"{fast_requests} sign-ups, {slow_requests} for those waiting on SMTP)",
        [Column("p50", "p50 ms"), Column("p99", "p99 ms")],
        baseline="floor",
    )
    report.tables.append(table)
    missing: list[Row] = []
    with SinkProcess(delay=SMTP_DELAY) as sink, ExitStack() as cleanup:
        candidates: list[Candidate] = []

        def add(
            name: str,
            label: str,
            app: Flask,
            *,
            slow: bool,
            form: Callable[[str], dict[str, str]] = _plain_form,
            status: int = 201,
            path: str = "/signup",
        ) -> None:
            candidates.append(
                Candidate(
                    name,
                    label,
                    app,
                    form=form,
                    status=status,
                    requests=slow_requests if slow else fast_requests,
                    warmup=1 if slow else context.size(20, 5, 1),
                    path=path,
                )
            )

        add(
            "floor",
            "floor: same view, no mail",
            create_floor(context.sqlite_url("floor")),
            slow=False,
        )
        for mode in ("thread", "worker", "sync"):
            url = context.sqlite_url(f"ours-{mode}")
            app = create_ours(url, delivery=mode, smtp_port=sink.port)
            cleanup.callback(_dispose_ours, app)
            default = " (default)" if mode == "thread" else ""
            add(f"ours_{mode}", f"ours, delivery={mode}{default}", app, slow=mode == "sync")
            if mode == "worker":
                worker = worker_process(
                    context, "signup-worker", database_url=url, smtp_port=sink.port
                )
                worker.start()
                cleanup.callback(worker.stop)
                worker.wait_for_output("started")

        reason = mailer_process.available()
        if reason is None:
            mailer, mailer_url = mailer_process.mailer_process(context, smtp_port=sink.port)
            mailer.start()
            cleanup.callback(mailer.stop)
            mailer.wait_for_port(int(mailer_url.rsplit(":", 1)[1].strip("/")))
            app = create_ours(
                context.sqlite_url("original"),
                delivery="sync",
                transport="remote",
                mailer_url=mailer_url,
                mailer_wire="variance",
            )
            cleanup.callback(_dispose_ours, app)
            add("original", "original design: app -> mailer -> SMTP, synchronous", app, slow=True)
        else:
            missing.append(Row.not_measured("original", "original design", reason))

        reason = security_app.available()
        for configuration in security_app.CONFIGURATIONS:
            name = f"security_{configuration}"
            label = f"Flask-Security register, {configuration} hashing"
            if reason is not None:
                missing.append(Row.not_measured(name, label, reason))
                continue
            app = security_app.create_security_app(
                context.sqlite_url(name), configuration=configuration, smtp_port=sink.port
            )
            cleanup.callback(security_app.dispose, app)
            add(name, label, app, slow=True, form=_security_form, status=302, path="/register")

        context.log(f"{KEY}: warming up {len(candidates)} candidates")
        for candidate in candidates:
            candidate.warm_up()
        context.log(f"{KEY}: {rounds} rounds")
        results = interleaved({c.name: c.round for c in candidates}, rounds=rounds, warmup=0)
        # Let the backlog go quickly, so stopping the senders does not wait on SMTP.
        sink.set_delay(0.0)
        for candidate in candidates:
            per_round = results[candidate.name]
            table.rows.append(
                Row(
                    candidate.name,
                    candidate.label,
                    rounds={"p50": [r[0] for r in per_round], "p99": [r[1] for r in per_round]},
                    extra={"requests": len(candidate.latencies)},
                )
            )
    table.rows.extend(missing)
    report.targets.extend(_targets(table))
    report.notes.append(
        "p99 is the nearest-rank 99th percentile of each round (of a round of "
        f"{slow_requests} slow sign-ups it is the slowest); each figure is the median over "
        "rounds."
    )
    report.notes.append(
        "The sign-up view stores no password; Flask-Security's register hashes one, which "
        "is why its cheap configuration is the fair comparison."
    )
    return report


def _dispose_ours(app: Flask) -> None:
    stop_delivery(app, timeout=5.0)
    with app.app_context():
        ours_db.session.remove()
        ours_db.engine.dispose()


def _targets(table: Table) -> list[Target]:
    targets = []
    for key in ("p50", "p99"):
        ours, floor = table.value("ours_thread", key), table.value("floor", key)
        extra = table.difference("ours_thread", key)
        if ours is None or floor is None or extra is None:
            targets.append(Target(KEY, f"default mode {key} - floor {key}", "-", "<= 2 ms", None))
            continue
        targets.append(
            Target(
                KEY,
                f"default mode {key} - floor {key}",
                f"{extra:+.2f} ms ({ours:.2f} vs {floor:.2f} ms)",
                "<= 2 ms",
                extra <= 2.0,
            )
        )
    ours_p50 = table.value("ours_thread", "p50")
    for name, label in (
        ("original", "original design"),
        ("security_default", "Flask-Security (default)"),
        ("security_cheap", "Flask-Security (cheap hashing)"),
    ):
        other = table.value(name, "p50")
        ratio = table.ratio(name, "p50", to="ours_thread")
        what = f"{label} p50 / default mode p50"
        if other is None or ours_p50 is None or ratio is None:
            targets.append(Target(KEY, what, "-", ">= 20x", None, note=_why_missing(table, name)))
            continue
        targets.append(
            Target(
                KEY,
                what,
                f"{ratio:.0f}x ({other:.1f} vs {ours_p50:.2f} ms)",
                ">= 20x",
                ratio >= 20,
            )
        )
    return targets


def _why_missing(table: Table, name: str) -> str:
    try:
        return table.row(name).note
    except KeyError:
        return ""
