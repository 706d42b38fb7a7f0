"""A delivery loop whose database goes away (issue 35, item 6): it says so once when the
database is lost and once when it is back, and a stopping sender that cannot record what
it sent stops within its grace, leaving the lease to expire."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from flask_confirm_mail.confirmation import get_flow
from flask_confirm_mail.delivery import DeliveryLoop
from flask_confirm_mail.outbox import SENDING
from tests.support.smtp_server import SMTPSink
from tests.test_outbox import _enqueue_many, _rows

WORKER = {"CONFIRM_MAIL_DELIVERY": "worker"}


def _messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "flask_confirm_mail"]


def test_a_lost_database_is_logged_once_and_its_return_once(
    build_app: Any, smtp_server: SMTPSink, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    database_url = f"sqlite:///{tmp_path / 'app.db'}"  # taken away by moving the file
    app = build_app(database_url, config=WORKER)
    _enqueue_many(app, 1)
    loop = DeliveryLoop(app, get_flow(app).deliverer)
    path = Path(database_url.removeprefix("sqlite:///"))
    with app.app_context():
        engine = get_flow(app).db.engine
        engine.dispose()
        path.rename(path.with_suffix(".away"))  # a new connection finds no tables
        for _ in range(5):
            assert loop.run_once().claimed == 0
        engine.dispose()
        path.unlink()
        path.with_suffix(".away").rename(path)
    assert loop.run_once().sent == 1
    get_flow(app).transport.close()  # run_once keeps its connection for the next batch
    lines = _messages(caplog)
    assert sum("waits for the database" in line for line in lines) == 1
    assert sum("works again" in line for line in lines) == 1
    assert not any(r.exc_info for r in caplog.records if r.name == "flask_confirm_mail")


@pytest.mark.faults
def test_a_stopping_sender_that_cannot_record_stops_within_its_grace(
    build_app: Any, smtp_server: SMTPSink, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    database_url = f"sqlite:///{tmp_path / 'app.db'}"  # taken away by an exclusive lock
    app = build_app(database_url, config=WORKER)
    _enqueue_many(app, 1)
    deliverer = get_flow(app).deliverer
    deliverer.record_grace = 0.5
    loop = DeliveryLoop(app, deliverer)
    smtp_server.delay = 1.0  # the email is on the wire while the database goes away
    runner = threading.Thread(target=loop.run)
    runner.start()
    deadline = time.monotonic() + 10
    while [row.status for row in _rows(app)] != [SENDING] and time.monotonic() < deadline:
        time.sleep(0.02)
    locker = sqlite3.connect(database_url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        locker.execute("BEGIN EXCLUSIVE")  # nobody else reads or writes
        smtp_server.wait_for(1)
        time.sleep(0.5)  # the first try to record is waiting for the lock
        loop.stop()
        runner.join(timeout=60)
        assert not runner.is_alive(), "the sender did not stop"
    finally:
        locker.close()
    [row] = _rows(app)
    assert row.status == SENDING, "unrecorded: the lease ends and the row comes due"
    assert len(smtp_server.messages) == 1
    lines = _messages(caplog)
    assert sum("Could not record the results" in line for line in lines) == 1
    assert sum("Stopped with the results of 1 emails unrecorded" in line for line in lines) == 1
