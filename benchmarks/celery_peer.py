"""Scenario 10: Celery delivery against its peer, and its hand-off latency.

(a) The same burst of sign-ups (through Flask's test client, as fast as they go) to two
apps, each with one ``celery worker`` process (``--pool threads``, the same ``-c``) on one
real ``redis-server``, and an SMTP server answering after 100 ms:

- ``ours``: ``CONFIRM_MAIL_DELIVERY = "celery"``, ``CONFIRM_MAIL_CONCURRENCY`` = ``-c``;
  each commit hands its outbox id to the ``deliver`` task, which claims and sends it;
- ``peer``: what Flask's Celery pattern and Flask-Security's docs suggest, a plain task
  per sign-up (``send_confirmation.delay(address)``) that signs a link with
  itsdangerous and sends it with Flask-Mail (``mail.send``: a connection per message).

Figure: messages per second, from the first sign-up to the SMTP server's acceptance of
the last email, and each as a ratio of the ceiling ``-c / 100 ms``.

(b) ``celery`` mode's commit -> SMTP accepted latency at 20 sign-ups a second, default
settings, on a SQLite file and on PostgreSQL (the sign-ups of
:func:`benchmarks.handoff_latency.sign_up_latencies`).

Run ``python -m benchmarks --only celery_peer``. The worker processes import this module
(``celery -A benchmarks.celery_peer``) and build their app from ``BENCH_*`` variables.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from celery import Celery, Task
from flask import Flask, request
from flask_mail import Mail, Message
from flask_sqlalchemy import SQLAlchemy
from itsdangerous import URLSafeTimedSerializer

from benchmarks.apps import (
    EXTERNAL_URL,
    SECRET_KEY,
    SENDER,
    FloorUser,
    create_ours,
    floor_db,
    ours_db,
)
from benchmarks.context import BenchContext
from benchmarks.handoff_latency import RATE, sign_up_latencies
from benchmarks.measure import interleaved, percentile, wait_until
from benchmarks.processes import ChildProcess
from benchmarks.report import Column, Row, ScenarioReport, Table, Target
from benchmarks.smtp_sink import SinkProcess
from tests.support.redis_server import RedisServer, redis_server_binary

KEY = "celery_peer"
TITLE = "10. Celery: our celery mode vs a plain Flask-Mail task, SMTP answers after 100 ms"
SMTP_DELAY = 0.1
#: The worker's ``-c`` and our ``CONFIRM_MAIL_CONCURRENCY`` (the default).
CONCURRENCY = 8
SIDES = ("ours", "peer")
PEER_TASK = "bench.send_confirmation"


def celery_for(app: Flask, broker_url: str, queue: str) -> Celery:
    """Flask's documented Celery pattern: tasks run in the app's context."""

    class FlaskTask(Task):  # type: ignore[misc]
        def __call__(self, *args: object, **kwargs: object) -> object:
            with app.app_context():
                return self.run(*args, **kwargs)

    celery_app = Celery(app.name, task_cls=FlaskTask)
    celery_app.conf.update(
        broker_url=broker_url,
        task_default_queue=queue,
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
    )
    app.extensions["celery"] = celery_app
    return celery_app


def create_ours_celery(database_url: str, smtp_port: int, broker_url: str, queue: str) -> Flask:
    """The extension's app with ``CONFIRM_MAIL_DELIVERY = "celery"``."""
    return create_ours(
        database_url,
        delivery="celery",
        smtp_port=smtp_port,
        concurrency=CONCURRENCY,
        prepare=lambda app: celery_for(app, broker_url, queue),
    )


def create_peer(database_url: str, smtp_port: int, broker_url: str, queue: str) -> Flask:
    """The peer: the sign-up commits, then queues a task that sends with Flask-Mail."""
    app = Flask("bench_celery_peer")
    app.config.update(
        SECRET_KEY=SECRET_KEY,
        SQLALCHEMY_DATABASE_URI=database_url,
        MAIL_SERVER="127.0.0.1",
        MAIL_PORT=smtp_port,
        MAIL_DEFAULT_SENDER=SENDER,
    )
    floor_db.init_app(app)
    mail = Mail(app)
    celery_app = celery_for(app, broker_url, queue)
    signer = URLSafeTimedSerializer(SECRET_KEY, salt="confirm")

    @celery_app.task(name=PEER_TASK)
    def send_confirmation(address: str) -> None:
        link = f"{EXTERNAL_URL}/confirm/{signer.dumps(address)}"
        body = f"Welcome! Confirm your address: {link}"
        message = Message("Confirm your email address", recipients=[address], body=body)
        message.html = f'<p>Welcome! <a href="{link}">Confirm your address</a></p>'
        mail.send(message)

    @app.post("/signup")
    def signup() -> Any:
        user = FloorUser(email=request.form["email"])
        floor_db.session.add(user)
        floor_db.session.commit()
        send_confirmation.delay(user.email)
        return "Welcome! Check your inbox.", 201

    with app.app_context():
        floor_db.create_all()
    return app


def _worker(context: BenchContext, side: str, env: dict[str, str]) -> ChildProcess:
    command = [
        sys.executable, "-m", "celery", "-A", "benchmarks.celery_peer", "worker",
        "--pool", "threads", "-c", str(CONCURRENCY), "--loglevel", "INFO",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
        "-n", f"{side}-{env['BENCH_QUEUE']}@%h",
    ]  # fmt: skip
    log = context.log_path(f"celery-{side}-{env['BENCH_QUEUE']}")
    return ChildProcess(command, log_path=log, env={**env, "BENCH_CELERY_SIDE": side})


class Burst:
    """One side of (a): its app in this process, its worker beside it."""

    def __init__(self, app: Flask, sink: SinkProcess, burst: int, tag: str) -> None:
        self.client = app.test_client()
        self.sink = sink
        self.burst = burst
        self.tag = tag
        self.sent = 0

    def round(self) -> float:
        """Messages per second: first sign-up to the last email's acceptance."""
        before = self.sink.count()
        start = time.perf_counter()
        for number in range(self.sent, self.sent + self.burst):
            response = self.client.post("/signup", data={"email": f"{self.tag}{number}@x.org"})
            if response.status_code != 201:
                raise RuntimeError(f"sign-up answered {response.status_code}")
        self.sent += self.burst
        wait_until(
            lambda: self.sink.count() - before >= self.burst,
            timeout=120,
            interval=0.005,
            what="the SMTP server to receive the burst",
        )
        return self.burst / (time.perf_counter() - start)


def _throughput(
    context: BenchContext, cleanup: ExitStack, redis: RedisServer, report: ScenarioReport
) -> None:
    burst = context.size(400, 160, 16)
    rounds = context.size(3, 1, 1)
    ceiling = CONCURRENCY / SMTP_DELAY
    table = Table(
        f"Messages per second, a burst of {burst} sign-ups (median of {rounds} rounds); "
        f"ceiling {ceiling:.0f} msg/s (-c {CONCURRENCY} / {SMTP_DELAY * 1000:.0f} ms); "
        "ratio: to the peer",
        [Column("rate", "msg/s", 1), Column("of_ceiling", "of ceiling", 2)],
        baseline="peer",
    )
    report.tables.append(table)
    sink = cleanup.enter_context(SinkProcess(delay=SMTP_DELAY))
    bursts: dict[str, Burst] = {}
    for index, side in enumerate(SIDES):
        url = context.sqlite_url(f"celery-{side}")
        queue = f"bench-{side}-{os.getpid()}"
        broker = f"{redis.url[:-1]}{index + 1}"
        factory = create_ours_celery if side == "ours" else create_peer
        app = factory(url, sink.port, broker, queue)
        env = {
            "BENCH_DATABASE_URL": url,
            "BENCH_SMTP_PORT": str(sink.port),
            "BENCH_BROKER_URL": broker,
            "BENCH_QUEUE": queue,
        }
        worker = _worker(context, side, env).start()
        cleanup.callback(worker.stop)
        cleanup.callback(_dispose, app, ours_db if side == "ours" else floor_db)
        worker.wait_for_output(" ready.", timeout=60)
        bursts[side] = Burst(app, sink, burst, f"{side}{os.getpid()}-")
    context.log(f"{KEY}: {rounds} rounds of {burst} sign-ups, ours and the peer")
    results = interleaved({side: b.round for side, b in bursts.items()}, rounds=rounds)
    for side in SIDES:
        label = (
            f"ours: celery mode, CONCURRENCY {CONCURRENCY}"
            if side == "ours"
            else "peer: a Celery task per sign-up, Flask-Mail"
        )
        row = Row(side, label)
        row.rounds = {
            "rate": results[side],
            "of_ceiling": [rate / ceiling for rate in results[side]],
        }
        table.rows.append(row)
    ratio = table.ratio("ours", "rate")
    report.targets.append(
        Target(
            KEY,
            "celery mode / the peer, msg/s",
            "-" if ratio is None else f"{ratio:.2f}x",
            ">= 1x",
            None if ratio is None else ratio >= 1,
        )
    )


def _dispose(app: Flask, db: SQLAlchemy) -> None:
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def _latency(
    context: BenchContext, cleanup: ExitStack, redis: RedisServer, report: ScenarioReport
) -> None:
    count = context.size(200, 60, 10)
    table = Table(
        f"celery mode, commit -> SMTP accepted, ms ({count} sign-ups at {RATE:g}/s, "
        "SMTP answering at once; ratio: to SQLite)",
        [Column("p50", "p50 ms", 1), Column("p99", "p99 ms", 1)],
        baseline="sqlite",
    )
    report.tables.append(table)
    sink = cleanup.enter_context(SinkProcess())
    for index, database in enumerate(("sqlite", "postgresql")):
        if database == "sqlite":
            url: str | None = context.sqlite_url("celery-handoff")
        else:
            url = context.postgres_url("celery_handoff")
        if url is None:
            table.rows.append(Row.not_measured(database, database, context.postgres_missing))
            continue
        queue = f"bench-handoff-{database}-{os.getpid()}"
        broker = f"{redis.url[:-1]}{index + 3}"
        app = create_ours_celery(url, sink.port, broker, queue)
        env = {
            "BENCH_DATABASE_URL": url,
            "BENCH_SMTP_PORT": str(sink.port),
            "BENCH_BROKER_URL": broker,
            "BENCH_QUEUE": queue,
        }
        with _worker(context, "ours", env) as worker:
            worker.wait_for_output(" ready.", timeout=60)
            context.log(f"{KEY}: hand-off latency on {database}")
            latencies = sign_up_latencies(app, sink, count, f"handoff-{database}-")
        rounds = {"p50": [percentile(latencies, 50)], "p99": [percentile(latencies, 99)]}
        table.rows.append(Row(database, f"celery mode, {database}", rounds=rounds))
    for database in ("sqlite", "postgresql"):
        p99 = table.value(database, "p99")
        report.targets.append(
            Target(
                KEY,
                f"celery mode on {database}, p99",
                "-" if p99 is None else f"{p99:.1f} ms",
                "figure only",
                None,
            )
        )


def run(context: BenchContext) -> ScenarioReport:
    report = ScenarioReport(
        KEY,
        TITLE,
        settings={"smtp_delay_s": SMTP_DELAY, "concurrency": CONCURRENCY, "pool": "threads"},
    )
    binary = redis_server_binary()
    if binary is None:
        report.skipped = "redis-server not installed"
        report.targets.append(
            Target(KEY, "celery mode / the peer, msg/s", "-", ">= 1x", None, note=report.skipped)
        )
        return report
    redis_dir = Path(tempfile.mkdtemp(prefix="bench-redis-"))
    with ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, redis_dir, True)
        redis = RedisServer(binary, redis_dir)
        redis.start()
        cleanup.callback(redis.stop)
        with ExitStack() as throughput:
            _throughput(context, throughput, redis, report)
        _latency(context, cleanup, redis, report)
    report.notes.append(
        "Both workers run -c "
        f"{CONCURRENCY} threads; the peer opens an SMTP connection per message "
        "(Flask-Mail's mail.send), ours reuses up to CONFIRM_MAIL_CONCURRENCY connections."
    )
    return report


def _app_from_environment() -> Flask:
    side = os.environ["BENCH_CELERY_SIDE"]
    factory = create_ours_celery if side == "ours" else create_peer
    return factory(
        os.environ["BENCH_DATABASE_URL"],
        int(os.environ["BENCH_SMTP_PORT"]),
        os.environ["BENCH_BROKER_URL"],
        os.environ["BENCH_QUEUE"],
    )


if "BENCH_CELERY_SIDE" in os.environ:  # a celery worker process
    flask_app = _app_from_environment()
    celery_app = flask_app.extensions["celery"]
