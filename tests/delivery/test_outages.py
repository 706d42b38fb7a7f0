"""Outages under real worker processes, each bounded in time: the SMTP server unreachable
for 30 s mid-burst, a worker killed three times, PostgreSQL restarted (``pg_ctl restart
-m fast``) under running workers. Each counts emails requested, delivered, duplicated and
lost (issues 12 and 17)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from flask_confirm_mail.outbox import SENT
from tests.apps import db
from tests.delivery.test_faults import _stop, tally, wait_until
from tests.support.fixtures import require_ci_or_skip
from tests.support.postgres import fresh_database_url
from tests.support.smtp_server import SMTPSink
from tests.support.tcp_proxy import TCPProxy
from tests.test_outbox import ROOT, _enqueue_many, _rows, _worker

#: Retries come due within seconds, and enough of them for an outage of 30 s.
QUICK_RETRIES = {
    "TEST_RETRY_BASE": "1",
    "TEST_RETRY_MAX": "3",
    "CONFIRM_MAIL_MAX_ATTEMPTS": "50",
}


class DrainedWorker:
    """A worker whose output a thread reads as it comes: a worker logging a failure per
    email for 30 s would otherwise fill its pipe and block on the next log line."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self.chunks: list[bytes] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.chunks.append(line)

    def stop(self) -> str:
        """SIGTERM, wait; the whole output."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)
        self._reader.join(10)
        assert self.process.stdout is not None
        self.process.stdout.close()
        return b"".join(self.chunks).decode()


def _all_sent(app: Any) -> bool:
    """Whether every row is ``sent``; ``False`` while the database does not answer."""
    try:
        return {row.status for row in _rows(app)} == {SENT}
    except sa.exc.OperationalError:
        return False


def _duplicated(sink: SMTPSink) -> set[str]:
    counts = Counter(r for m in sink.messages for r in m.rcpt_tos)
    return {address for address, n in counts.items() if n > 1}


@pytest.mark.slow
def test_smtp_down_for_30_seconds_mid_burst(
    make_app: Any, smtp_server: SMTPSink, database_url: str
) -> None:
    """The worker reaches SMTP through a proxy cut for 30 s while the burst is sent: every
    email arrives once the server is back; a copy is sent twice only where the cut fell
    after the message was handed over, and those rows say "outcome unknown"."""
    app = make_app(config={"CONFIRM_MAIL_DELIVERY": "worker"})
    requested = _enqueue_many(app, 200)
    smtp_server.delay = 0.02
    with TCPProxy(smtp_server.host, smtp_server.port) as proxy:
        worker = DrainedWorker(
            _worker(
                database_url,
                SimpleNamespace(port=proxy.port),  # type: ignore[arg-type]
                "--poll-interval",
                "0.2",
                CONFIRM_MAIL_CONCURRENCY="8",
                **QUICK_RETRIES,
            )
        )
        try:
            wait_until(lambda: len(smtp_server.messages) >= 40)
            proxy.cut()
            cut_at = len(smtp_server.messages)
            time.sleep(30)
            during = len(smtp_server.messages) - cut_at
            proxy.restore()
            wait_until(lambda: {row.status for row in _rows(app)} == {SENT}, timeout=90)
        finally:
            output = worker.stop()
    assert during <= 8, "nothing got through the cut but what was already on the wire"
    counts = tally(smtp_server, requested)
    assert (counts["requested"], counts["delivered"], counts["lost"]) == (200, 200, 0), output
    unknown = {row.recipient for row in _rows(app) if row.unknown_outcomes}
    assert _duplicated(smtp_server) <= unknown, "a second copy only where the first was unknown"
    assert counts["duplicated"] <= 8, counts
    assert "to retry" in output, "the failed batches were logged"


@pytest.mark.slow
def test_a_worker_killed_three_times_during_a_burst(
    make_app: Any, smtp_server: SMTPSink, database_url: str
) -> None:
    """SIGKILL three times, a new worker each time: after the leases (1 s) end, the
    emails the killed worker held go out again; at least once, never lost."""
    app = make_app(config={"CONFIRM_MAIL_DELIVERY": "worker"})
    requested = _enqueue_many(app, 150)
    smtp_server.delay = 0.02
    config = {"CONFIRM_MAIL_CONCURRENCY": "5", "TEST_LEASE": "1"}
    for kill in range(3):
        victim = _worker(database_url, smtp_server, "--poll-interval", "0.1", **config)
        wait_until(lambda n=kill: len(smtp_server.messages) >= 20 * (n + 1))
        victim.send_signal(signal.SIGKILL)
        victim.communicate(timeout=30)
    assert len(smtp_server.messages) < 150, "each worker was killed mid-burst"
    survivor = _worker(database_url, smtp_server, "--poll-interval", "0.1", **config)
    try:
        wait_until(lambda: {row.status for row in _rows(app)} == {SENT}, timeout=90)
    finally:
        output = _stop(survivor)
    counts = tally(smtp_server, requested)
    assert (counts["requested"], counts["delivered"], counts["lost"]) == (150, 150, 0), output
    retaken = {row.recipient for row in _rows(app) if row.attempts > 1}
    assert _duplicated(smtp_server) <= retaken, "only emails a killed worker held went twice"
    # A killed worker holds one batch (CONCURRENCY, 5).
    assert counts["duplicated"] <= 3 * 5, counts


def _postgres_bindir() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return found[-1].parent if found else None


@pytest.fixture
def private_postgres() -> Iterator[str]:
    """A PostgreSQL server of this test alone (``scripts/lib/postgres.sh serve``), which
    the test may restart without disturbing the others. Ask for it before ``build_app``,
    so that the apps' tables are dropped before it stops."""
    if _postgres_bindir() is None or shutil.which("bash") is None:
        require_ci_or_skip("PostgreSQL is not installed: run scripts/test, which installs it")
    server = subprocess.Popen(
        ["bash", "scripts/lib/postgres.sh", "serve"],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert server.stdout is not None and server.stdin is not None
    url = server.stdout.readline().strip()
    try:
        if not url:
            require_ci_or_skip("scripts/lib/postgres.sh serve could not start PostgreSQL")
        yield url
    finally:
        server.stdin.close()
        server.wait(timeout=60)
        server.stdout.close()


def _restart(server_url: str) -> None:
    """``pg_ctl restart -m fast``: every session ends; the server is back when it returns."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        row = conn.execute("SHOW data_directory").fetchone()
    assert row is not None
    data = Path(row[0])
    command = [str(_postgres_bindir() / "pg_ctl"), "-D", str(data), "-w", "-t", "60"]
    command += ["-l", str(data.parent / "server.log"), "restart", "-m", "fast"]
    if data.stat().st_uid != 0 and shutil.which("runuser"):
        command = ["runuser", "-u", data.owner(), "--", *command]
    subprocess.run(command, check=True, capture_output=True, timeout=90)


@pytest.mark.slow
def test_postgresql_restarted_under_running_workers(
    private_postgres: str, build_app: Any, smtp_server: SMTPSink
) -> None:
    """Two workers deliver a burst; PostgreSQL restarts with ``-m fast`` mid-way: each
    email goes out exactly once (results are recorded once the server is back)."""
    url = fresh_database_url(private_postgres, "restart")
    app = build_app(url, config={"CONFIRM_MAIL_DELIVERY": "worker"})
    requested = _enqueue_many(app, 300)
    smtp_server.delay = 0.05
    config = {"CONFIRM_MAIL_CONCURRENCY": "8", **QUICK_RETRIES}
    workers = [
        DrainedWorker(_worker(url, smtp_server, "--poll-interval", "0.2", **config))
        for _ in range(2)
    ]
    try:
        wait_until(lambda: len(smtp_server.messages) >= 60)
        _restart(make_url(private_postgres).set(drivername="postgresql").render_as_string(False))
        restarted_at = len(smtp_server.messages)
        wait_until(lambda: _all_sent(app), timeout=120)
    finally:
        outputs = [worker.stop() for worker in workers]
        with app.app_context():
            db.engine.dispose()  # the test's own connections died with the restart
    assert restarted_at < 300, "restarted mid-burst"
    assert tally(smtp_server, requested) == {
        "requested": 300,
        "delivered": 300,
        "duplicated": 0,
        "lost": 0,
    }, outputs
