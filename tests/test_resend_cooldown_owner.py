"""Inside the resend cooldown, the logged-in owner is told the truth; nobody else is."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from flask_confirm_mail.views import RESEND_NOTICE
from tests.conftest import link_from
from tests.support.smtp_server import SMTPSink

JSON = {"Accept": "application/json"}
OWNER = "owner@example.org"
TRUTH = "A link was sent 12 s ago; you can ask for another one in 48 s."


def _signed_up(app: Flask, email: str) -> FlaskClient:
    """A client logged in as a new user of ``email`` (the test app logs in at sign-up)."""
    client = app.test_client()
    assert client.post("/signup", data={"email": email}).status_code == 201
    return client


@pytest.fixture
def owner(app: Flask, smtp_server: SMTPSink, clock: Any) -> FlaskClient:
    """The client of :data:`OWNER`, logged in, whose link left 12 s ago."""
    client = _signed_up(app, OWNER)
    smtp_server.wait_for(1)
    clock.shift(12)
    return client


def test_the_owner_learns_when_the_link_was_sent_and_when_to_ask_again(
    owner: FlaskClient, smtp_server: SMTPSink, clock: Any
) -> None:

    page = owner.get("/confirm/resend")
    assert page.status_code == 200 and TRUTH in page.get_data(as_text=True)

    answer = owner.post("/confirm/resend", data={"email": OWNER}, buffered=True)
    assert answer.status_code == 429 and answer.headers["Retry-After"] == "48"
    assert TRUTH in answer.get_data(as_text=True)

    as_json = owner.post("/confirm/resend", json={"email": OWNER}, headers=JSON, buffered=True)
    assert as_json.status_code == 429
    assert as_json.json == {
        "status": "cooldown", "message": TRUTH, "sent_seconds_ago": 12, "retry_after": 48,
    }  # fmt: skip
    assert len(smtp_server.messages) == 1, "nothing more was sent"

    clock.shift(48)
    again = owner.post("/confirm/resend", data={"email": OWNER}, buffered=True)
    assert again.status_code == 202 and RESEND_NOTICE in again.get_data(as_text=True)
    assert [m.rcpt_tos for m in smtp_server.wait_for(2)] == [[OWNER], [OWNER]]


def test_anyone_else_gets_the_uniform_answer(
    make_app: Any, smtp_server: SMTPSink, clock: Any
) -> None:
    app = make_app()
    _signed_up(app, OWNER)
    clock.shift(5)
    other = _signed_up(app, "other@example.org")
    clock.shift(7)  # the owner's link is 12 s old, the other user's 7 s
    for client in (app.test_client(), other):
        html = client.post("/confirm/resend", data={"email": OWNER}, buffered=True)
        assert html.status_code == 202 and "Retry-After" not in html.headers
        body = html.get_data(as_text=True)
        assert RESEND_NOTICE in body and "12 s" not in body and "48 s" not in body
        as_json = client.post("/confirm/resend", json={"email": OWNER}, headers=JSON, buffered=True)
        assert (as_json.status_code, as_json.json["status"]) == (202, "resend_requested")
    assert "12 s" not in app.test_client().get("/confirm/resend").get_data(as_text=True)
    own = other.get("/confirm/resend").get_data(as_text=True)
    assert "A link was sent 7 s ago" in own and "12 s" not in own
    assert len(smtp_server.wait_for(2)) == 2


def test_a_confirmed_owner_or_another_address_gets_the_uniform_answer(
    owner: FlaskClient, smtp_server: SMTPSink
) -> None:
    other_address = owner.post(
        "/confirm/resend", data={"email": "nobody@example.org"}, buffered=True
    )
    assert other_address.status_code == 202
    bad = owner.post("/confirm/resend", data={"email": "not an address"}, buffered=True)
    assert bad.status_code == 400

    path = link_from(smtp_server.wait_for(1)[0]).removeprefix("https://app.example.com")
    assert owner.post(path).status_code == 200
    confirmed = owner.post("/confirm/resend", data={"email": OWNER}, buffered=True)
    assert confirmed.status_code == 202 and "12 s" not in confirmed.get_data(as_text=True)
