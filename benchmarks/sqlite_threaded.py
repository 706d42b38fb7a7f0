"""SQLite under a threaded server: 500 concurrent sign-ups, ``gunicorn -w 4 --threads 8``.

    .venv/bin/python -m benchmarks.sqlite_threaded [--signups 500] [--rounds 3]

The app is the smallest complete one (the README's shape: SQLite file, ``thread`` delivery)
against an SMTP server that answers after 100 ms, so the background senders write their
results while sign-ups commit. Each round serves a fresh database five times: with
``CONFIRM_MAIL_SQLITE_TUNING`` off (the baseline: SQLite's defaults), on, on with the
sending moved out of the web processes (``worker`` delivery, one ``flask confirm-mail
worker`` under ``nice -n 19``), on with gunicorn's ``--worker-connections 8`` (a worker
then takes no more connections than it has threads, so the burst is spread evenly over
the four), and the floor: the same view and table served by Flask and
Flask-SQLAlchemy alone (no extension, no mail, the tuning's PRAGMAs). Each time it fires
the sign-ups all at once and prints errors (non-201 answers) and latency percentiles,
and the ratio to the baseline per round (median over rounds), and to the floor. Goal: 0
errors, p99 < 1 s; the last lines say, for each of the extension's rows, whether the
median of the rounds meets it and in how many rounds the p99 was under 1 s.

It also prints the CPU each sign-up costs (the gunicorn processes' and this client's, read
from ``/proc`` around the burst) and the floor that puts on the last answer: all that CPU
spread over the cores this process may use. The burst arrives at once, so the p99 answer
waits for nearly all the others; no locking scheme gets it below that floor. The idle
column says how far a row is from its floor: the share of the cores' time that went
unused from the first request to the p99's answer (``/proc/stat``, the whole machine).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import selectors
import socket
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from flask import Flask, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import Mapped, mapped_column

from benchmarks.measure import median, percentile, percentile_rank
from benchmarks.processes import ChildProcess, flask_command, free_port
from benchmarks.smtp_sink import SinkProcess
from flask_confirm_mail import ConfirmableMixin, ConfirmMail, signup_view
from flask_confirm_mail.extension import SQLITE_BUSY_TIMEOUT

db = SQLAlchemy()


class User(ConfirmableMixin, db.Model):  # type: ignore[name-defined,misc]
    id: Mapped[int] = mapped_column(primary_key=True)


def _wal(dbapi_connection: Any, connection_record: Any) -> None:
    """The floor's engine: the PRAGMAs ``CONFIRM_MAIL_SQLITE_TUNING`` sets."""
    busy = f"busy_timeout = {SQLITE_BUSY_TIMEOUT * 1000}"
    for pragma in (busy, "journal_mode = WAL", "synchronous = NORMAL"):
        dbapi_connection.execute(f"PRAGMA {pragma}")


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
    bare = os.environ.get("BENCH_DELIVERY") == "none"
    if bare:  # the floor: Flask and Flask-SQLAlchemy alone, on the tuning's PRAGMAs
        with app.app_context():
            sa.event.listen(db.engine, "connect", _wal)
    else:
        ConfirmMail(app, db=db, user_model=User)

    def signup() -> Any:
        email = request.form["email"]
        if db.session.query(User.id).filter_by(email=email).first() is not None:
            return "taken", 409
        db.session.add(User(email=email))
        db.session.commit()
        return "queued", 201

    app.post("/signup")(signup if bare else signup_view(signup))
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


def _wait_idle(root: int, timeout: float = 30.0) -> None:
    """Wait until process ``root`` and its children stop using CPU: all workers booted.

    The first worker answers while the others still import the app (0.67 s of CPU after
    the first answer, measured: 1.3 ms per sign-up wrongly added to the burst's CPU).
    """
    deadline = time.monotonic() + timeout
    before = _cpu_seconds(root)
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = _cpu_seconds(root)
        if now - before < 0.02:
            return
        before = now


def _cpu_seconds(root: int) -> float:
    """User + system CPU seconds used so far by process ``root`` and its children (Linux)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended meanwhile
        # fields[1] is the parent id; fields[11], fields[12] are utime, stime
        if int(entry.name) == root or int(fields[1]) == root:
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def _idle_seconds() -> tuple[float, float]:
    """The machine's idle and total CPU seconds so far, over all cores (Linux)."""
    ticks = os.sysconf("SC_CLK_TCK")
    with open("/proc/stat") as stat:
        fields = [int(field) for field in stat.readline().split()[1:]]
    return (fields[3] + fields[4]) / ticks, sum(fields) / ticks  # idle + iowait, all


def _idle_share(before: tuple[float, float], after: tuple[float, float]) -> float:
    """The share of the cores' time spent idle between two :func:`_idle_seconds`."""
    return (after[0] - before[0]) / max(after[1] - before[1], 1e-9)


def _burst(
    port: int, count: int, prefix: str, at_p99: Callable[[], object]
) -> tuple[list[float], int, str]:
    """Sign ``count`` users up at once; return latencies, errors, the first error.

    ``at_p99`` is called once, when the answer of the p99's rank comes in.

    Raw sockets: all connections are opened first, then every request is written in one
    go, and one ``selectors`` loop reads the answers. The client shares the cores with the
    server, so its CPU per sign-up matters: 500 threads with ``http.client`` cost it
    0.6-0.8 ms, asyncio streams 0.84 ms, this loop less (printed apart as client CPU).
    """
    requests = []
    for i in range(count):
        body = urllib.parse.urlencode({"email": f"{prefix}{i}@example.org"}).encode()
        requests.append(
            b"POST /signup HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
    answers: dict[int, list[bytes]] = {i: [] for i in range(count)}
    latencies: dict[int, float] = {}
    failed: dict[int, str] = {}
    p99_rank = percentile_rank(count, 99)
    with selectors.DefaultSelector() as selector:
        start = time.perf_counter()
        sockets = []
        for i, request in enumerate(requests):
            sock = socket.create_connection(("127.0.0.1", port))
            sockets.append(sock)
            sock.sendall(request)
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ, i)
        deadline = start + 60
        while len(latencies) + len(failed) < count and time.perf_counter() < deadline:
            for key, _ in selector.select(timeout=1.0):
                i = key.data
                try:
                    chunk = key.fileobj.recv(65536)  # type: ignore[union-attr]
                except OSError as exc:
                    chunk, failed[i] = b"", type(exc).__name__
                if chunk:
                    answers[i].append(chunk)
                    continue
                latencies[i] = time.perf_counter() - start
                if len(latencies) == p99_rank:
                    at_p99()
                selector.unregister(key.fileobj)
                # At once: gunicorn's gthread worker waits in its main thread for the
                # client to close (its graceful close) before it serves the next one.
                key.fileobj.close()  # type: ignore[union-attr]
        for sock in sockets:
            sock.close()
    results = []
    for i in range(count):
        data = b"".join(answers[i])
        try:
            status = 0 if i in failed else int(data.split(b" ", 2)[1])
        except (ValueError, IndexError):
            status = 0
        text = failed.get(i) or data[-200:].decode(errors="replace") or "no answer"
        results.append((latencies.get(i, 60.0), status, text))
    errors = [f"{status} {text}" for _, status, text in results if status != 201]
    return [seconds for seconds, _, _ in results], len(errors), errors[0] if errors else ""


#: The goal for the extension's rows (seconds): issue 17, "0 errors and p99 under 1 s".
GOAL_P99 = 1.0


@dataclass(frozen=True)
class Variant:
    """One way of serving the burst."""

    name: str
    label: str
    tuned: bool
    #: ``thread``: the web processes send; ``worker``: one ``nice -n 19`` worker does.
    delivery: str
    #: Added to the gunicorn command line.
    gunicorn_args: tuple[str, ...] = ()


VARIANTS = (
    Variant("baseline", "baseline (SQLite defaults)", tuned=False, delivery="thread"),
    Variant("tuned", "CONFIRM_MAIL_SQLITE_TUNING", tuned=True, delivery="thread"),
    Variant("worker", "tuned + niced worker", tuned=True, delivery="worker"),
    # Left alone, a gthread worker accepts all it can: one of the four can take most of
    # the burst and serve it on one core while the others idle.
    Variant(
        "spread",
        "tuned + worker-connections 8",
        tuned=True,
        delivery="thread",
        gunicorn_args=("--worker-connections", "8"),
    ),
    Variant("flask", "floor: Flask alone, no mail", tuned=True, delivery="none"),
)


def _round(work: Path, sink: SinkProcess, variant: Variant, signups: int) -> dict[str, Any]:
    database = work / f"{variant.name}.db"
    database_url = f"sqlite:///{database}"
    _prepare(database_url)
    port = free_port()
    env = {
        "BENCH_DATABASE_URL": database_url,
        "BENCH_SMTP_PORT": str(sink.port),
        "BENCH_SQLITE_TUNING": "1" if variant.tuned else "0",
        "BENCH_DELIVERY": variant.delivery,
    }
    app = "benchmarks.sqlite_threaded:create_app()"
    command = [
        sys.executable, "-m", "gunicorn", "-w", "4", "--threads", "8", "--backlog", "1024",
        "-b", f"127.0.0.1:{port}", "--log-level", "warning", *variant.gunicorn_args, app,
    ]  # fmt: skip
    with contextlib.ExitStack() as running:
        server = running.enter_context(
            ChildProcess(command, log_path=work / f"gunicorn-{variant.name}.log", env=env)
        )
        worker = None
        if variant.delivery == "worker":
            worker_command = ["nice", "-n", "19", *flask_command(app, "confirm-mail", "worker")]
            log_path = work / f"worker-{variant.name}.log"
            worker = running.enter_context(ChildProcess(worker_command, log_path=log_path, env=env))
        _wait_ready(port)
        _wait_idle(server.pid)
        server_cpu, client_cpu = _cpu_seconds(server.pid), time.process_time()
        worker_cpu = _cpu_seconds(worker.pid) if worker else 0.0
        cores_before = _idle_seconds()
        cores_at_p99: list[tuple[float, float]] = []
        latencies, errors, first_error = _burst(
            port, signups, variant.name, lambda: cores_at_p99.append(_idle_seconds())
        )
        client_cpu = time.process_time() - client_cpu
        server_cpu = _cpu_seconds(server.pid) - server_cpu
        worker_cpu = _cpu_seconds(worker.pid) - worker_cpu if worker else 0.0
    database.unlink()
    return {
        "errors": errors,
        "first_error": first_error,
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
        "max": max(latencies),
        "server_cpu": server_cpu / signups,
        "client_cpu": client_cpu / signups,
        "worker_cpu": worker_cpu / signups,
        "idle": _idle_share(cores_before, cores_at_p99[0]) if cores_at_p99 else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--signups", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--smtp-delay-ms", type=float, default=100.0)
    args = parser.parse_args()
    rows: dict[Variant, list[dict[str, Any]]] = {variant: [] for variant in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp, SinkProcess(args.smtp_delay_ms / 1000) as sink:
        for number in range(args.rounds):
            order = VARIANTS if number % 2 == 0 else VARIANTS[::-1]
            for variant in order:
                rows[variant].append(_round(Path(tmp), sink, variant, args.signups))
    print(
        f"{args.signups} concurrent sign-ups, gunicorn -w 4 --threads 8, SQLite file, "
        f"SMTP answering after {args.smtp_delay_ms:.0f} ms; {args.rounds} rounds (median)"
    )
    cores = len(os.sched_getaffinity(0))
    print(
        f"{'':28} {'errors*':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
        f"{'server CPU':>10} {'client CPU':>10} {'floor ms':>8} {'idle':>5}"
    )
    for variant in VARIANTS:
        r = rows[variant]
        server_cpu = median([x["server_cpu"] for x in r])
        client_cpu = median([x["client_cpu"] for x in r])
        print(
            f"{variant.label:28} {sum(x['errors'] for x in r):7d} "
            f"{median([x['p50'] for x in r]) * 1000:8.0f} "
            f"{median([x['p99'] for x in r]) * 1000:8.0f} "
            f"{median([x['max'] for x in r]) * 1000:8.0f} "
            f"{server_cpu * 1000:8.2f}ms {client_cpu * 1000:8.2f}ms "
            f"{(server_cpu + client_cpu) * args.signups / cores * 1000:8.0f} "
            f"{median([x['idle'] for x in r]):5.0%}"
        )
        per_round = " ".join(f"{x['p99'] * 1000:.0f}" for x in r)
        print(f"{'':28} p99 of each round, ms: {per_round}")
        errors = [x["first_error"] for x in r if x["first_error"]]
        if errors:
            print(f"{'':28} first error: {' '.join(errors[0].split())[:60]}")
    baseline, tuned, worker, spread, floor = (rows[variant] for variant in VARIANTS)
    # Against Flask alone too: the 1 s goal is absolute, but the machine's speed moves every
    # row (Flask alone has read 813 to 1804 ms on this 2-core machine).
    spread_row = ("tuned + worker-connections 8", spread)
    ours = (("tuned", tuned), ("tuned + niced worker", worker), spread_row)
    comparisons = (
        (ours, "baseline", baseline),
        (ours, "Flask alone", floor),
        ((spread_row,), "tuned", tuned),
    )
    for variants, against, reference in comparisons:
        for label, variant_rows in variants:
            ratios = [b["p99"] / a["p99"] for b, a in zip(variant_rows, reference, strict=True)]
            print(f"p99 ratio {label} / {against}: {median(ratios):.2f}")
    for label, variant_rows in ours:  # issue 17's goal, on this machine, now
        errors = sum(x["errors"] for x in variant_rows)
        p99 = median([x["p99"] for x in variant_rows])
        under = sum(x["p99"] < GOAL_P99 for x in variant_rows)
        verdict = "met" if errors == 0 and p99 < GOAL_P99 else "NOT met"
        print(
            f"goal (0 errors, p99 < {GOAL_P99:.0f} s) {label}: {verdict}: {errors} errors, "
            f"median p99 {p99 * 1000:.0f} ms, {under} of {len(variant_rows)} rounds under"
        )
    worker_cpu = median([x["worker_cpu"] for x in worker])
    print(f"* errors: non-201 answers, summed over the {args.rounds} rounds")
    print(
        f"CPU: per sign-up, of the gunicorn processes and of this client, during the burst "
        f"(the niced worker's: {worker_cpu * 1000:.2f} ms, left out of the floor: it yields "
        f"to the web processes); floor: that CPU spread over the {cores} cores, the "
        f"shortest the last answer can take; idle: the share of the machine's CPU time "
        f"left unused from the first request to the p99's answer"
    )


if __name__ == "__main__":
    main()
