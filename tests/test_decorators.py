"""signup_view and confirmed_required on async views, and OPTIONS let through."""

from __future__ import annotations

from typing import Any

from flask import Flask

from tests.apps import db, user_model
from tests.conftest import link_from
from tests.support.smtp_server import SMTPSink


def test_async_signup_view_queues_the_email(make_app: Any, smtp_server: SMTPSink) -> None:
    app: Flask = make_app()
    response = app.test_client().post("/signup-async", data={"email": "async@example.org"})
    assert response.status_code == 201
    [mail] = smtp_server.wait_for(1)
    assert mail.rcpt_tos == ["async@example.org"]
    assert link_from(mail).startswith("https://app.example.com/confirm/")


def test_async_signup_view_refuses_a_bad_address(make_app: Any, smtp_server: SMTPSink) -> None:
    app: Flask = make_app()
    response = app.test_client().post("/signup-async", data={"email": "a@x.com, b@y.com"})
    assert response.status_code == 400
    with app.app_context():
        assert db.session.query(user_model("mixin")).count() == 0
    assert smtp_server.messages == []


def test_options_passes_signup_view_without_capturing(make_app: Any, smtp_server: SMTPSink) -> None:
    app: Flask = make_app()
    response = app.test_client().options("/signup-async", data={"email": "bad, address"})
    assert response.status_code == 204
    assert smtp_server.messages == []


def test_async_confirmed_required(make_app: Any, smtp_server: SMTPSink) -> None:
    app: Flask = make_app()
    client = app.test_client()
    assert client.get("/members-async").status_code == 401
    client.post("/signup", data={"email": "member@example.org"})
    unconfirmed = client.get("/members-async", headers={"Accept": "application/json"})
    assert unconfirmed.status_code == 403 and unconfirmed.json["status"] == "unconfirmed"
    link = link_from(smtp_server.wait_for(1)[0]).removeprefix("https://app.example.com")
    assert client.post(link).status_code == 200
    confirmed = client.get("/members-async")
    assert confirmed.status_code == 200 and confirmed.text == "members only, async"


def test_options_passes_confirmed_required(make_app: Any) -> None:
    app: Flask = make_app()
    response = app.test_client().options("/members-async")
    assert response.status_code == 200 and response.text == "members only, async"
