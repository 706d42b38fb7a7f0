"""POST /confirm/resend: one answer for every address, a cooldown per address.

The resend runs once the response is closed (after it is sent); ``buffered=True`` has the
test client close it, as a WSGI server does.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from flask import Flask

from flask_confirm_mail import confirmation_requested
from tests.support.smtp_server import SMTPSink


def _setup(make_app: Any, smtp_server: SMTPSink, **config: Any) -> Flask:
    app = make_app(config=config)
    client = app.test_client()
    assert client.post("/signup", data={"email": "waiting@example.org"}).status_code == 201
    assert client.post("/signup", data={"email": "done@example.org"}).status_code == 201
    smtp_server.wait_for(2)
    runner = app.test_cli_runner()
    assert runner.invoke(args=["confirm-mail", "confirm", "done@example.org"]).exit_code == 0
    smtp_server.clear()
    return app


@pytest.mark.parametrize("as_json", [False, True])
def test_same_answer_for_unknown_unconfirmed_and_confirmed(
    make_app: Any, smtp_server: SMTPSink, clock: Any, as_json: bool
) -> None:
    app = _setup(make_app, smtp_server, CONFIRM_MAIL_RESEND_COOLDOWN=0)
    client = app.test_client()
    answers = []
    for address in ("nobody@example.org", "waiting@example.org", "done@example.org"):
        if as_json:
            response = client.post("/confirm/resend", json={"email": address}, buffered=True)
        else:
            response = client.post("/confirm/resend", data={"email": address}, buffered=True)
        answers.append((response.status_code, response.data))
    assert answers[0] == answers[1] == answers[2]
    assert answers[0][0] == 202
    [mail] = smtp_server.wait_for(1)
    assert mail.rcpt_tos == ["waiting@example.org"]


def test_cooldown_limits_to_one_email(make_app: Any, smtp_server: SMTPSink, clock: Any) -> None:
    app = _setup(make_app, smtp_server)
    client = app.test_client()
    client.post("/confirm/resend", data={"email": "waiting@example.org"}, buffered=True)
    assert smtp_server.messages == [], "the sign-up email starts the cooldown"
    clock.shift(61)
    bodies = {
        client.post("/confirm/resend", data={"email": "waiting@example.org"}, buffered=True).data
        for _ in range(10)
    }
    assert len(bodies) == 1
    assert len(smtp_server.wait_for(1)) == 1
    clock.shift(59)
    client.post("/confirm/resend", data={"email": "waiting@example.org"}, buffered=True)
    assert len(smtp_server.messages) == 1
    clock.shift(2)
    client.post("/confirm/resend", data={"email": "waiting@example.org"}, buffered=True)
    assert len(smtp_server.wait_for(2)) == 2


@pytest.mark.parametrize("value", ["", "not an address", "a@x.com, b@y.com", "a@x.com\r\nBcc: b@y"])
def test_invalid_address_is_a_clear_400(app: Flask, smtp_server: SMTPSink, value: str) -> None:
    client = app.test_client()
    page = client.post("/confirm/resend", data={"email": value})
    assert page.status_code == 400
    assert b"valid email address" in page.data
    answer = client.post("/confirm/resend", json={"email": value})
    assert answer.status_code == 400
    assert answer.json["status"] == "invalid_address"
    assert client.post("/confirm/resend", json=["not", "an", "object"]).status_code == 400
    assert smtp_server.messages == []


def test_resend_page_renders(app: Flask) -> None:
    page = app.test_client().get("/confirm/resend")
    assert page.status_code == 200
    assert b'name="email"' in page.data


def test_in_thread_mode_the_sender_thread_does_a_resends_work_not_the_connections(
    make_app: Any, smtp_server: SMTPSink
) -> None:
    # The connection's thread would otherwise run the lookup and the queueing after the
    # answer, and its next request (a probe on a kept-alive connection) would wait for it.
    app = make_app(config={"CONFIRM_MAIL_DELIVERY": "thread", "CONFIRM_MAIL_RESEND_COOLDOWN": 0})
    client = app.test_client()
    assert client.post("/signup", data={"email": "wait@example.org"}).status_code == 201
    smtp_server.wait_for(1)
    threads: list[str] = []
    with confirmation_requested.connected_to(
        lambda sender, **kw: threads.append(threading.current_thread().name), app
    ):
        answer = client.post("/confirm/resend", data={"email": "wait@example.org"})
        assert answer.status_code == 202
        smtp_server.wait_for(2)
    assert threads == ["confirm-mail-sender"]
