"""Email templates at delivery: a worker compiles them all before its first poll, and an
email that cannot be written is the attempt's recorded outcome."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from jinja2 import ChoiceLoader, DictLoader

import flask_confirm_mail.transport as transport_module
from flask_confirm_mail.confirmation import get_flow
from flask_confirm_mail.delivery import DeliveryLoop
from flask_confirm_mail.outbox import DEAD
from tests.support.smtp_server import SMTPSink


def _signed_up(make_app: Any, address: str, **config: Any) -> Flask:
    app: Flask = make_app(config={"CONFIRM_MAIL_DELIVERY": "worker", **config})
    app.test_client().post("/signup", data={"email": address})
    return app


def test_an_email_that_cannot_be_written_fails_its_attempt_and_is_recorded(
    make_app: Any, smtp_server: SMTPSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A template error is the attempt's outcome (retried, then dead); nothing is lost."""
    app = _signed_up(make_app, "broken@example.org", CONFIRM_MAIL_MAX_ATTEMPTS=1)
    calls: list[int] = []

    def broken(email: Any, settings: Any) -> Any:
        calls.append(email.outbox_id)
        raise RuntimeError("template exploded")

    monkeypatch.setattr(transport_module, "render_message", broken)
    report = DeliveryLoop(app, get_flow(app).deliverer).run(until_idle=True)
    assert report.claimed == 1 and report.sent == 0 and report.dead == 1
    assert len(calls) == 1
    assert smtp_server.messages == []
    with app.app_context():
        model = get_flow(app).outbox_model
        [row] = get_flow(app).db.session.query(model).all()
        assert row.status == DEAD and row.last_error == "Unexpected RuntimeError"


@pytest.mark.parametrize(
    ("name", "source"),
    [
        ("confirm_mail/email/reminder.html", "<p>{{ _('Hello,') }</p>"),
        ("confirm_mail/email/change_subject.txt", "{% if %}"),
    ],
)
def test_a_worker_with_a_broken_template_stops_at_start_naming_it(
    make_app: Any, smtp_server: SMTPSink, name: str, source: str
) -> None:
    """The worker compiles every email template before its first poll: a broken override
    is a clear error at start-up, not a traceback per email later; nothing is claimed."""
    app = _signed_up(make_app, "template@example.org")
    app.jinja_env.loader = ChoiceLoader([DictLoader({name: source}), app.jinja_env.loader])
    result = app.test_cli_runner().invoke(args=["confirm-mail", "worker", "--once"])
    assert result.exit_code == 1
    assert f"{name} does not compile" in result.output
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
