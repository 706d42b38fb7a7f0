"""Peer: a Celery task per sign-up that sends with Flask-Mail, beside the extension's worker.

The peer is what Flask's Celery pattern and Flask-Security's docs suggest: the sign-up
commits, then ``send_confirmation.delay(address)``; the task signs a link with
itsdangerous and sends it with ``mail.send`` (Flask-Mail: a connection per message). It
runs in one ``celery worker --pool threads -c 8`` on a throwaway ``redis-server``
(``scripts/lib/redis.sh``). Ours: ``worker`` mode and one ``flask confirm-mail worker``
(``CONCURRENCY`` 8). Both on SQLite files; the SMTP sink answers after 100 ms.

Figures: a burst of sign-ups as fast as the test client goes, in messages per second
from the first commit to the last email accepted; and commit -> accepted at 20
sign-ups a second (:func:`benchmarks.handoff.handoff_ms`).
"""

from __future__ import annotations

import os
import sys
import time
from importlib.util import find_spec
from typing import Any

from flask import Flask, request
from flask_mail import Mail, Message
from itsdangerous import URLSafeTimedSerializer

from benchmarks.apps import (
    COMMITTED,
    EXTERNAL_URL,
    SECRET_KEY,
    FloorUser,
    base_app,
    create_ours,
    dispose,
    floor_db,
    same_sqlite_settings,
    sign_up,
)
from benchmarks.handoff import handoff_ms
from benchmarks.harness import Child, Guard, Run, Server, Sink, log, percentile, print_table
from benchmarks.harness import worker as worker_process

CONCURRENCY = 8
SMTP_DELAY = 0.1


def create_peer(database_url: str, smtp_port: int, broker_url: str) -> Flask:
    """The peer app; its Celery is ``app.extensions["celery"]`` (Flask's pattern)."""
    from celery import Celery, Task

    app = base_app("bench_celery_peer", database_url, smtp_port)
    floor_db.init_app(app)
    same_sqlite_settings(app, floor_db)
    mail = Mail(app)

    class FlaskTask(Task):  # type: ignore[misc]
        def __call__(self, *args: object, **kwargs: object) -> object:
            with app.app_context():
                return self.run(*args, **kwargs)

    queue = Celery(app.name, task_cls=FlaskTask)
    queue.conf.update(
        broker_url=broker_url, task_ignore_result=True, broker_connection_retry_on_startup=True
    )
    app.extensions["celery"] = queue
    signer = URLSafeTimedSerializer(SECRET_KEY, salt="confirm")

    @queue.task(name="bench.send_confirmation")  # type: ignore[untyped-decorator]
    def send_confirmation(address: str) -> None:
        link = f"{EXTERNAL_URL}/confirm/{signer.dumps(address)}"
        message = Message("Confirm your email address", recipients=[address])
        message.body = f"Welcome! Confirm your address: {link}"
        message.html = f'<p>Welcome! <a href="{link}">Confirm your address</a></p>'
        mail.send(message)

    @app.post("/signup")
    def signup() -> Any:
        answer = sign_up(floor_db, FloorUser)
        send_confirmation.delay(request.form["email"])
        return answer

    with app.app_context():
        floor_db.create_all()
    return app


def burst_rate(app: Flask, sink: Sink, count: int, tag: str) -> float:
    """``count`` sign-ups back to back: messages/s, first commit to last email accepted."""
    client = app.test_client()
    before = sink.count()
    addresses = [f"{tag}{i}@example.org" for i in range(count)]
    for address in addresses:
        if client.post("/signup", data={"email": address}).status_code != 201:
            raise RuntimeError(f"{app.name}: a sign-up failed")
    sink.wait_for(before + count, 300)
    return count / (max(sink.accepted_at()[a] for a in addresses) - COMMITTED[addresses[0]])


def celery_peer(run: Run) -> list[Guard]:
    if not find_spec("celery"):
        print("\nCelery peer: skipped (Celery is not installed: pip install -e '.[bench]')")
        return []
    redis = Server("redis.sh")
    broker = redis.start()
    if broker is None:
        print("\nCelery peer: skipped (redis-server is not installed)")
        return []
    burst, count = run.size(400, 60), run.size(100, 20)
    rows: list[list[Any]] = []
    try:
        with Sink(run, SMTP_DELAY) as sink:
            for side in ("ours", "peer"):
                url = run.sqlite(f"celery-{side}")
                if side == "ours":
                    app = create_ours(url, delivery="worker")
                    child = worker_process(run, url, sink.port, CONCURRENCY)
                    label = f"ours: flask confirm-mail worker, CONCURRENCY {CONCURRENCY}"
                else:
                    app = create_peer(url, sink.port, broker)
                    command = [
                        sys.executable,
                        "-m",
                        "celery",
                        "-A",
                        "benchmarks.peers:celery_app",
                        "worker",
                        "--pool",
                        "threads",
                        "-c",
                        str(CONCURRENCY),
                        "-l",
                        "INFO",
                        "--without-gossip",
                        "--without-mingle",
                        "--without-heartbeat",
                    ]
                    child = Child(
                        run,
                        "celery",
                        command,
                        " ready.",
                        BENCH_CELERY_BROKER=broker,
                        BENCH_DATABASE_URL=url,
                        BENCH_SMTP_PORT=sink.port,
                    )
                    label = f"Celery task + Flask-Mail, -c {CONCURRENCY} threads"
                with child:
                    log(f"celery: {side}, a burst of {burst} and {count} paced sign-ups")
                    handoff_ms(app, sink, 3, f"warm-{side}-")
                    rate = burst_rate(app, sink, burst, f"burst-{side}-")
                    time.sleep(1)
                    latencies = handoff_ms(app, sink, count, f"paced-{side}-")
                dispose(app)
                rows.append([label, rate, percentile(latencies, 50), percentile(latencies, 99)])
    finally:
        redis.stop()
    rows.append(
        [
            "ratio (Celery / ours)",
            *[peer / ours for ours, peer in zip(rows[0][1:], rows[1][1:], strict=True)],
        ]
    )
    print_table(
        f"Celery peer, SQLite, SMTP answers after {SMTP_DELAY * 1000:.0f} ms: a burst of {burst} "
        f"sign-ups, and commit -> accepted at 20 sign-ups/s",
        ["", "burst msg/s", "handoff p50 ms", "handoff p99 ms"],
        rows,
    )
    return []


if "BENCH_CELERY_BROKER" in os.environ:  # the peer's celery worker process
    celery_app = create_peer(
        os.environ["BENCH_DATABASE_URL"],
        int(os.environ["BENCH_SMTP_PORT"]),
        os.environ["BENCH_CELERY_BROKER"],
    ).extensions["celery"]
