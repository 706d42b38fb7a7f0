"""End to end: sign-up -> real SMTP -> link from the email -> confirm page -> confirmed row."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import Flask

from tests.apps import db, user_model
from tests.conftest import link_from
from tests.support.smtp_server import SMTPSink


def _row(app: Flask, shape: str, uid: int) -> Any:
    with app.app_context():
        return db.session.get(user_model(shape), uid)


def test_signup_mail_link_confirm(make_app: Any, shape: str, smtp_server: SMTPSink) -> None:
    app = make_app(shape=shape)
    client = app.test_client()
    response = client.post("/signup", data={"email": "cat@example.org"})
    assert response.status_code == 201
    uid = response.json["id"]

    [mail] = smtp_server.wait_for(1)
    assert mail.rcpt_tos == ["cat@example.org"]
    message = mail.message
    # Flask-Mail's structure: text and HTML alternatives (inside multipart/mixed).
    assert message.get_body(("plain",)) is not None and message.get_body(("html",)) is not None
    assert message["From"] == "CatLoader <noreply@app.example.com>"
    assert message["Message-ID"] and message["Date"]
    assert "48 hours" in message.get_body(("plain",)).get_content()
    link = link_from(mail)

    with app.app_context():
        columns = app.extensions["confirm_mail"].columns
        assert not columns.is_confirmed(_row(app, shape, int(uid)))

    path = urlsplit(link).path
    page = client.get(path)
    assert page.status_code == 200
    assert b"Confirm my email address" in page.data
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert page.headers["Cache-Control"] == "no-store"
    with app.app_context():
        assert not columns.is_confirmed(_row(app, shape, int(uid))), "GET must not confirm"

    done = client.post(path)
    assert done.status_code == 200
    with app.app_context():
        assert columns.is_confirmed(_row(app, shape, int(uid)))

    again = client.post(path, headers={"Accept": "application/json"})
    assert again.json["status"] == "already_confirmed"
