"""The delivery loop's own thread does the CPU work ahead of the senders: messages are
written by :meth:`Transport.prepare`."""

from __future__ import annotations

from email import message_from_bytes, policy
from typing import Any

import jwt
import pytest
from flask import Flask
from jinja2 import ChoiceLoader, DictLoader

import flask_confirm_mail.transport as transport_module
from flask_confirm_mail.confirmation import get_flow
from flask_confirm_mail.delivery import DeliveryLoop, new_worker_id
from flask_confirm_mail.outbox import DEAD
from flask_confirm_mail.tokens import LINK_AUDIENCE
from tests.apps import LINK_SECRET
from tests.conftest import link_from
from tests.support.smtp_server import SMTPSink


def _signed_up(make_app: Any, address: str, **config: Any) -> Flask:
    app: Flask = make_app(config={"CONFIRM_MAIL_DELIVERY": "worker", **config})
    app.test_client().post("/signup", data={"email": address})
    return app


def test_a_claimed_email_is_written_before_it_is_sent(make_app: Any, smtp_server: SMTPSink) -> None:
    app = _signed_up(make_app, "ahead@example.org")
    deliverer = get_flow(app).deliverer
    with app.app_context():
        [email] = deliverer.claim(new_worker_id())
    assert email.wire is not None
    message = message_from_bytes(email.wire, policy=policy.default)
    assert email.link in message.get_body(("plain",)).get_content()
    assert "wire" not in repr(email) and email.link_token not in repr(email)
    with app.app_context(), deliverer.transport:
        deliverer.transport.send(email)
    [received] = smtp_server.wait_for(1)
    assert received.rcpt_tos == ["ahead@example.org"]
    # The bytes written at the claim are the bytes on the wire (dots doubled aside).
    assert received.raw.replace(b"\r\n", b"\n") == email.wire.replace(b"\r\n", b"\n")
    token = link_from(received).rsplit("/", 1)[1]
    assert jwt.decode(token, LINK_SECRET, algorithms=["HS256"], audience=LINK_AUDIENCE)


def test_what_cannot_be_written_ahead_fails_in_send_and_is_recorded(
    make_app: Any, smtp_server: SMTPSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A template error at the claim leaves the email unwritten; sending writes it again,
    the error is the attempt's outcome (retried, then dead) and nothing is lost."""
    app = _signed_up(make_app, "broken@example.org", CONFIRM_MAIL_MAX_ATTEMPTS=1)
    calls: list[int] = []

    def broken(email: Any, settings: Any) -> bytes:
        calls.append(email.outbox_id)
        raise RuntimeError("template exploded")

    monkeypatch.setattr(transport_module, "render_wire", broken)
    report = DeliveryLoop(app, get_flow(app).deliverer).run(until_idle=True)
    assert report.claimed == 1 and report.sent == 0 and report.dead == 1
    assert len(calls) == 2  # once ahead, once in send
    assert smtp_server.messages == []
    with app.app_context():
        model = get_flow(app).outbox_model
        [row] = get_flow(app).db.session.query(model).all()
        assert row.status == DEAD and row.last_error == "Unexpected RuntimeError"


def test_a_worker_with_a_broken_template_stops_at_start_naming_it(
    make_app: Any, smtp_server: SMTPSink
) -> None:
    """The worker compiles every email template before its first poll: a broken override
    is a clear error at start-up, not a traceback per email later; nothing is claimed."""
    app = _signed_up(make_app, "template@example.org")
    broken = {"confirm_mail/email/reminder.html": "<p>{{ _('Hello,') }</p>"}
    app.jinja_env.loader = ChoiceLoader([DictLoader(broken), app.jinja_env.loader])
    result = app.test_cli_runner().invoke(args=["confirm-mail", "worker", "--once"])
    assert result.exit_code == 1
    assert "confirm_mail/email/reminder.html does not compile" in result.output
    assert "Traceback" not in result.output
    with app.app_context():
        model = get_flow(app).outbox_model
        [row] = get_flow(app).db.session.query(model).all()
        assert row.status == "pending" and row.attempts == 0
    assert smtp_server.messages == []


def test_a_worker_with_its_templates_compiling_delivers(
    make_app: Any, smtp_server: SMTPSink
) -> None:
    """The positive control: the same command with the shipped templates sends."""
    app = _signed_up(make_app, "template@example.org")
    result = app.test_cli_runner().invoke(args=["confirm-mail", "worker", "--once"])
    assert result.exit_code == 0, result.output
    assert smtp_server.wait_for(1)[0].rcpt_tos == ["template@example.org"]
