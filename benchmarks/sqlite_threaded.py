"""SQLite under a threaded server: 500 concurrent sign-ups, ``gunicorn -w 4 --threads 8``.

    .venv/bin/python -m benchmarks.sqlite_threaded [--signups 500] [--rounds 3]

The app is the smallest complete one (the README's shape: SQLite file, ``thread`` delivery)
against an SMTP server that answers after 100 ms, so the background senders write their
results while sign-ups commit. Each round serves a fresh database twice, with
``CONFIRM_MAIL_SQLITE_TUNING`` off (the baseline: SQLite's defaults) and on, and fires the
sign-ups all at once. It prints errors (non-201 answers) and latency percentiles of each,
and the ratio tuned / baseline per round (median over rounds). Goal: 0 errors, p99 < 1 s.
"""

from __future__ import annotations

import argparse
import http.client
import os
import sys
import tempfile
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from threading import Barrier
from typing import Any

from flask import Flask, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import Mapped, mapped_column

from benchmarks.measure import median, percentile
from benchmarks.processes import ChildProcess, child_environment, free_port
from benchmarks.smtp_sink import SinkProcess
from flask_confirm_mail import ConfirmableMixin, ConfirmMail, signup_view

db = SQLAlchemy()


class User(ConfirmableMixin, db.Model):  # type: ignore[name-defined,misc]
    id: Mapped[int] = mapped_column(primary_key=True)


def create_app() -> Flask:
    """The served app, configured from ``BENCH_*`` variables (for gunicorn)."""
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="bench-" + "k" * 40,
        SQLALCHEMY_DATABASE_URI=os.environ["BENCH_DATABASE_URL"],
        MAIL_SERVER="127.0.0.1",
        MAIL_PORT=int(os.environ["BENCH_SMTP_PORT"]),
        MAIL_DEFAULT_SENDER="noreply@bench.example",
        CONFIRM_MAIL_EXTERNAL_URL="http://127.0.0.1:5000",
        CONFIRM_MAIL_SQLITE_TUNING=os.environ["BENCH_SQLITE_TUNING"] == "1",
        CONFIRM_MAIL_DELIVERY=os.environ.get("BENCH_DELIVERY", "thread"),
    )
    db.init_app(app)
    ConfirmMail(app, db=db, user_model=User)

    @app.post("/signup")
    @signup_view
    def signup() -> Any:
        email = request.form["email"]
        if db.session.query(User.id).filter_by(email=email).first() is not None:
            return "taken", 409
        db.session.add(User(email=email))
        db.session.commit()
        return "queued", 201

    return app


def _prepare(database_url: str) -> None:
    os.environ.update(BENCH_DATABASE_URL=database_url, BENCH_SMTP_PORT="1", BENCH_SQLITE_TUNING="0")
    app = create_app()
    with app.app_context():
        db.create_all()
        db.engine.dispose()


def _wait_ready(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/")
            connection.getresponse().read()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("gunicorn did not start")


def _burst(port: int, count: int, prefix: str) -> tuple[list[float], int, str]:
    """Sign ``count`` users up at once; return latencies, errors, the first error."""
    barrier = Barrier(count)

    def one(i: int) -> tuple[float, int, str]:
        body = urllib.parse.urlencode({"email": f"{prefix}{i}@example.org"})
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        barrier.wait()
        start = time.perf_counter()
        try:
            connection.request("POST", "/signup", body, headers)
            answer = connection.getresponse()
            text = answer.read().decode(errors="replace")[-200:]
            return time.perf_counter() - start, answer.status, text
        except OSError as exc:
            return time.perf_counter() - start, 0, type(exc).__name__
        finally:
            connection.close()

    with ThreadPoolExecutor(count) as pool:
        results = list(pool.map(one, range(count)))
    errors = [f"{status} {text}" for _, status, text in results if status != 201]
    return [seconds for seconds, _, _ in results], len(errors), errors[0] if errors else ""


def _round(work: Path, sink: SinkProcess, tuned: bool, signups: int) -> dict[str, Any]:
    name = "tuned" if tuned else "baseline"
    database = work / f"{name}.db"
    database_url = f"sqlite:///{database}"
    _prepare(database_url)
    port = free_port()
    env = child_environment(
        {
            "BENCH_DATABASE_URL": database_url,
            "BENCH_SMTP_PORT": str(sink.port),
            "BENCH_SQLITE_TUNING": "1" if tuned else "0",
        }
    )
    command = [
        sys.executable, "-m", "gunicorn", "-w", "4", "--threads", "8", "--backlog", "1024",
        "-b", f"127.0.0.1:{port}", "--log-level", "warning",
        "benchmarks.sqlite_threaded:create_app()",
    ]  # fmt: skip
    with ChildProcess(command, log_path=work / f"gunicorn-{name}.log", env=env):
        _wait_ready(port)
        latencies, errors, first_error = _burst(port, signups, name)
    database.unlink()
    return {
        "errors": errors,
        "first_error": first_error,
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
        "max": max(latencies),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--signups", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--smtp-delay-ms", type=float, default=100.0)
    args = parser.parse_args()
    rows: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp, SinkProcess(args.smtp_delay_ms / 1000) as sink:
        for number in range(args.rounds):
            order = (False, True) if number % 2 == 0 else (True, False)
            for tuned in order:
                rows[tuned].append(_round(Path(tmp), sink, tuned, args.signups))
    print(
        f"{args.signups} concurrent sign-ups, gunicorn -w 4 --threads 8, SQLite file, "
        f"SMTP answering after {args.smtp_delay_ms:.0f} ms; {args.rounds} rounds (median)"
    )
    print(f"{'':28} {'errors*':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for tuned, label in (
        (False, "baseline (SQLite defaults)"),
        (True, "CONFIRM_MAIL_SQLITE_TUNING"),
    ):
        r = rows[tuned]
        print(
            f"{label:28} {sum(x['errors'] for x in r):7d} "
            f"{median([x['p50'] for x in r]) * 1000:8.0f} "
            f"{median([x['p99'] for x in r]) * 1000:8.0f} "
            f"{median([x['max'] for x in r]) * 1000:8.0f}"
        )
        errors = [x["first_error"] for x in r if x["first_error"]]
        if errors:
            print(f"{'':28} first error: {' '.join(errors[0].split())[:60]}")
    ratios = [t["p99"] / b["p99"] for t, b in zip(rows[True], rows[False], strict=True)]
    print(f"p99 ratio tuned / baseline: {median(ratios):.2f}")
    print(f"* errors: non-201 answers, summed over the {args.rounds} rounds")


if __name__ == "__main__":
    main()
