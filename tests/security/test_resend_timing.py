"""Round 2, family 4: a resend answers before it looks anything up, the same for every address.

The timing itself is not asserted here; these
tests check what makes it equal: the answer is the same bytes for waiting, unknown and
confirmed addresses, nothing is looked up or queued until the response is closed (sent), the
email still goes out in every delivery mode, and a failure after the answer is logged.
"""

from __future__ import annotations

import http.client
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_confirm_mail.outbox import utcnow
from tests.apps import User, db
from tests.security.live_server import serve
from tests.support.smtp_server import SMTPSink

WAITING, CONFIRMED, UNKNOWN = "waiting@example.org", "done@example.org", "nobody@example.org"


def _with_users(app: Flask) -> None:
    """A user waiting for confirmation and a confirmed one (created without any email)."""
    with app.app_context():
        db.session.add(User(email=WAITING))
        db.session.add(User(email=CONFIRMED, email_confirmed_at=utcnow()))
        db.session.commit()


def _outbox_recipients(app: Flask) -> list[str]:
    with app.app_context():
        table = app.extensions["confirm_mail"].outbox_table
        return list(db.session.execute(sa.select(table.c.recipient)).scalars())


def _http_resend(base: str, address: str) -> tuple[int, tuple[tuple[str, str], ...], bytes]:
    """POST the form to a live server; the status, the headers but ``Date``, the body."""
    connection = http.client.HTTPConnection(urlsplit(base).netloc, timeout=10)
    try:
        body = f"email={address.replace('@', '%40')}"
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        connection.request("POST", "/confirm/resend", body, headers)
        response = connection.getresponse()
        kept = tuple(sorted((k, v) for k, v in response.getheaders() if k.lower() != "date"))
        return response.status, kept, response.read()
    finally:
        connection.close()


@pytest.mark.parametrize("delivery", ["sync", "thread", "worker"])
def test_a_live_server_answers_every_kind_alike_and_the_email_goes_out(
    make_app: Callable[..., Flask], smtp_server: SMTPSink, delivery: str
) -> None:
    config = {"CONFIRM_MAIL_DELIVERY": delivery, "CONFIRM_MAIL_RESEND_COOLDOWN": 0}
    app = make_app(config=config)
    _with_users(app)
    with serve(app) as base:
        answers = {address: _http_resend(base, address) for address in (WAITING, UNKNOWN)}
        answers[CONFIRMED] = _http_resend(base, CONFIRMED)
        if delivery == "worker":
            runner = app.test_cli_runner()
            assert runner.invoke(args=["confirm-mail", "worker", "--once"]).exit_code == 0
        [mail] = smtp_server.wait_for(1)
    assert answers[WAITING][0] == 202
    assert answers[WAITING] == answers[UNKNOWN] == answers[CONFIRMED]
    assert mail.rcpt_tos == [WAITING]
    assert _outbox_recipients(app) == [WAITING]


@pytest.mark.parametrize("address", [WAITING, UNKNOWN, CONFIRMED])
def test_nothing_is_looked_up_or_queued_until_the_response_is_closed(
    make_app: Callable[..., Flask], smtp_server: SMTPSink, address: str
) -> None:
    app = make_app(config={"CONFIRM_MAIL_RESEND_COOLDOWN": 0})
    _with_users(app)
    statements: list[str] = []
    with app.app_context():
        engine = db.engine

    def record(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement)

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        response = app.test_client().post("/confirm/resend", data={"email": address})
        assert response.status_code == 202
        assert statements == ["SELECT 1"], "the answer depends on no lookup"
        response.close()  # what the WSGI server does once the answer is sent
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    assert len(statements) > 1
    assert _outbox_recipients(app) == ([WAITING] if address == WAITING else [])
    if address == WAITING:
        assert smtp_server.wait_for(1)[0].rcpt_tos == [WAITING]


def test_a_failure_after_the_answer_is_retried_and_logged(
    build_app: Callable[..., Flask], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "db"
    folder.mkdir()
    app = build_app(f"sqlite:///{folder / 'app.db'}")
    _with_users(app)
    response = app.test_client().post("/confirm/resend", data={"email": WAITING})
    assert response.status_code == 202
    with app.app_context():
        db.engine.dispose()
    shutil.rmtree(folder)  # the database goes away between the answer and the lookup
    try:
        with caplog.at_level(logging.WARNING, logger="flask_confirm_mail"):
            response.close()
    finally:
        folder.mkdir()
    messages = [r.getMessage() for r in caplog.records if r.name == "flask_confirm_mail"]
    assert [m.split(":")[0] for m in messages] == [
        f"A resend could not be queued (attempt {n} of 3)" for n in (1, 2, 3)
    ]
    assert "the user has to ask again" in messages[-1]
    assert caplog.records[-1].levelno == logging.ERROR
