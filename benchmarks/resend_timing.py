"""Resend timing: can one probe of ``POST /confirm/resend`` tell who is waiting?

    python -m benchmarks.resend_timing                    # 200 probes per kind, thread and worker
    python -m benchmarks.resend_timing --probes 50 --modes thread

A real gunicorn (one process, ``gthread``, 4 threads) serves an app on a SQLite file with
users waiting for confirmation, confirmed users, and addresses nobody has. The client probes
``waiting``, ``unknown`` and ``confirmed`` addresses in turn (a fixed seed), each probe on a new
connection, and times it from the request's
first byte to the answer's last. ``RESEND_COOLDOWN`` is 0, so every probe of a waiting address
queues an email: the most work a resend can cause. The six probes of a round (three kinds,
two routes) go in a random order, 20 ms apart.

Two routes of the same process are probed, interleaved probe by probe:

- ``ours``: the extension's ``/confirm/resend``, which answers before it looks anything up;
- ``baseline``: the code before this change, the lookup and the queueing before the answer
  (:meth:`~flask_confirm_mail.confirmation.ConfirmationFlow.resend_now` in the view).

For each pair (waiting against unknown, waiting against confirmed) it prints the median of
each kind and the accuracy of the best single-threshold classifier (the best cut of the
latencies, either direction): 50% is a coin toss; the goal is at most 60%. The ``u/c``
column, unknown against confirmed (two kinds no code tells apart), is the control: what the
best cut of 2 x N samples scores by chance on this machine.
"""

from __future__ import annotations

import argparse
import http.client
import os
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flask import Flask, abort, render_template, request

from benchmarks.apps import EXTERNAL_URL, LINK_SECRET, SECRET_KEY, SENDER, User, ours_db
from benchmarks.measure import median
from benchmarks.processes import ChildProcess, free_port
from benchmarks.smtp_sink import SinkProcess
from flask_confirm_mail import ConfirmMail
from flask_confirm_mail.addresses import normalize_address
from flask_confirm_mail.confirmation import get_flow
from flask_confirm_mail.errors import AddressError
from flask_confirm_mail.outbox import utcnow
from flask_confirm_mail.views import RESEND_NOTICE

KINDS = ("waiting", "unknown", "confirmed")
ROUTES = {"ours": "/confirm/resend", "baseline": "/baseline/resend"}
WARM_UP = 20
#: Pause between probes, so one probe's queued email is sent before the next is timed.
PAUSE = 0.02


def create_app(database_url: str, *, delivery: str, smtp_port: int) -> Flask:
    """The app under test: the extension's routes and ``/baseline/resend``."""
    app = Flask("bench_resend")
    app.config.update(
        SECRET_KEY=SECRET_KEY,
        SQLALCHEMY_DATABASE_URI=database_url,
        MAIL_SERVER="127.0.0.1",
        MAIL_PORT=smtp_port,
        MAIL_DEFAULT_SENDER=SENDER,
        CONFIRM_MAIL_SECRET=LINK_SECRET,
        CONFIRM_MAIL_EXTERNAL_URL=EXTERNAL_URL,
        CONFIRM_MAIL_DELIVERY=delivery,
        CONFIRM_MAIL_RESEND_COOLDOWN=0,
    )
    ours_db.init_app(app)
    ConfirmMail(db=ours_db, user_model=User).init_app(app)

    @app.post("/baseline/resend")
    def baseline_resend() -> Any:
        """The resend view before this change: look up and queue, then answer."""
        flow = get_flow()
        try:
            address = normalize_address(request.form.get("email"))
        except AddressError:
            abort(400)
        flow.resend_now(address)
        page = render_template("confirm_mail/resend.html", notice=RESEND_NOTICE, app_name="")
        return page, 202

    with app.app_context():
        ours_db.create_all()
    return app


def create_app_from_env() -> Flask:
    """:func:`create_app` for gunicorn, from ``BENCH_DATABASE_URL`` and friends."""
    return create_app(
        os.environ["BENCH_DATABASE_URL"],
        delivery=os.environ["BENCH_DELIVERY"],
        smtp_port=int(os.environ["BENCH_SMTP_PORT"]),
    )


def seed(app: Flask, count: int) -> dict[str, list[str]]:
    """``count`` addresses of each kind; the waiting and confirmed ones get a user row."""
    addresses = {kind: [f"{kind}{i}@example.org" for i in range(count)] for kind in KINDS}
    with app.app_context():
        for email in addresses["waiting"]:
            ours_db.session.add(User(email=email))
        for email in addresses["confirmed"]:
            ours_db.session.add(User(email=email, email_confirmed_at=utcnow()))
        ours_db.session.commit()
        ours_db.engine.dispose()
    return addresses


def probe(port: int, path: str, address: str) -> float:
    """Seconds from sending the request to having read the whole answer (new connection)."""
    body = f"email={address.replace('@', '%40')}".encode()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.connect()
    try:
        started = time.perf_counter()
        connection.request(
            "POST", path, body, {"Content-Type": "application/x-www-form-urlencoded"}
        )
        response = connection.getresponse()
        response.read()
        elapsed = time.perf_counter() - started
    finally:
        connection.close()
    if response.status != 202:
        raise RuntimeError(f"{path} answered {response.status} for {address}")
    return elapsed


def best_threshold_accuracy(first: Sequence[float], second: Sequence[float]) -> float:
    """The accuracy of the best rule "``first`` if the latency is above (or below) t"."""
    labelled = sorted([(v, 0) for v in first] + [(v, 1) for v in second])
    total = len(labelled)
    # Cut after position i: everything up to i called "second", the rest "first".
    correct_above = len(first)  # cut before everything: all called "first"
    best = max(correct_above, total - correct_above)
    for index, (value, label) in enumerate(labelled):
        correct_above += 1 if label == 1 else -1
        tie = index + 1 < total and labelled[index + 1][0] == value
        if not tie:
            best = max(best, correct_above, total - correct_above)
    return best / total


def measure(mode: str, probes: int, workdir: Path) -> dict[str, dict[str, list[float]]]:
    """Latencies (seconds) per route and kind, for one delivery mode."""
    database = workdir / f"resend-{mode}.db"
    with SinkProcess() as sink:
        app = create_app(f"sqlite:///{database}", delivery=mode, smtp_port=sink.port)
        addresses = seed(app, probes + WARM_UP)
        port = free_port()
        env = {
            "BENCH_DATABASE_URL": f"sqlite:///{database}",
            "BENCH_DELIVERY": mode,
            "BENCH_SMTP_PORT": str(sink.port),
        }
        command = [
            sys.executable, "-m", "gunicorn", "--workers", "1", "--worker-class", "gthread",
            "--threads", "4", "--bind", f"127.0.0.1:{port}", "--log-level", "warning",
            "benchmarks.resend_timing:create_app_from_env()",
        ]  # fmt: skip
        server = ChildProcess(command, log_path=workdir / f"gunicorn-{mode}.log", env=env)
        times: dict[str, dict[str, list[float]]] = {r: {k: [] for k in KINDS} for r in ROUTES}
        order = random.Random(14)
        with server:
            server.wait_for_port(port)
            for round_ in range(probes + WARM_UP):
                # All six (kind, route) probes of a round in a random order: the probe
                # before one (whose email may still be on its way) is of any kind.
                pairs = [(kind, route) for kind in KINDS for route in ROUTES]
                order.shuffle(pairs)
                for kind, route in pairs:
                    elapsed = probe(port, ROUTES[route], addresses[kind][round_])
                    if round_ >= WARM_UP:
                        times[route][kind].append(elapsed)
                    time.sleep(PAUSE)
        sent = sink.count()
    expected = 2 * (probes + WARM_UP) if mode != "worker" else 0
    print(f"  ({mode}: the SMTP server received {sent} emails, expected {expected})")
    return times


def report(mode: str, times: dict[str, dict[str, list[float]]]) -> None:
    print(f"\n== delivery = {mode}: median ms per kind, best single-threshold accuracy")
    header = f"{'route':<9} {'waiting':>8} {'unknown':>8} {'confirmed':>9}"
    print(f"{header}   {'w/u':>6} {'w/c':>6} {'u/c':>6}")
    for route, kinds in times.items():
        medians = {kind: median(values) * 1000 for kind, values in kinds.items()}
        unknown = best_threshold_accuracy(kinds["waiting"], kinds["unknown"])
        confirmed = best_threshold_accuracy(kinds["waiting"], kinds["confirmed"])
        control = best_threshold_accuracy(kinds["unknown"], kinds["confirmed"])
        print(
            f"{route:<9} {medians['waiting']:8.2f} {medians['unknown']:8.2f} "
            f"{medians['confirmed']:9.2f}   {unknown:6.1%} {confirmed:6.1%} {control:6.1%}"
        )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, default=200, help="probes per kind and route")
    parser.add_argument("--modes", nargs="+", default=["thread", "worker"])
    args = parser.parse_args(argv)
    print(f"resend timing: {args.probes} probes per kind and route, gunicorn gthread, SQLite")
    with tempfile.TemporaryDirectory(prefix="resend-timing-") as folder:
        for mode in args.modes:
            report(mode, measure(mode, args.probes, Path(folder)))
    print("\n(w/u, w/c: waiting against unknown, confirmed; u/c: the chance control;")
    print(" 50% is a coin toss; the goal for ours is <= 60%)")


if __name__ == "__main__":
    main()
