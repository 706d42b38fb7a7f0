"""Family 2 of security round 2, in reverse order: the squatter asks for the address second.

The victim asks to change to ``X``; the attacker then asks for ``X`` on their own account,
which voids the victim's claim (the forward-order fix) and leaves ``X`` pending on the
attacker's account. The victim, whose link stopped working, asks the anonymous resend form
for ``X``. Before the fix, that mailed the attacker's change link to ``X``, and the victim,
following it, confirmed the attacker's account with the victim's address. A resend for a
pending *change* address now mails only the logged-in account that holds it; everyone else
gets the uniform answer and nothing is sent.

Each test runs on SQLite and PostgreSQL and has a positive control.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.conftest import link_from
from tests.security.test_addresses import (
    JSON,
    LINKS_ONLY,
    _addresses,
    _as,
    _ask_for,
    _confirm,
    _confirmed_users,
)
from tests.support.smtp_server import SMTPSink
from tests.test_confirm_code import code_from

WANTED = "vic@new.example"


def _client(app: Flask, uid: int | None) -> FlaskClient:
    """A client logged in as ``uid`` (``None``: anonymous)."""
    return app.test_client() if uid is None else _as(app, uid)


def _resend(client: FlaskClient, address: str, *, json: bool = False) -> Any:
    if json:
        return client.post("/confirm/resend", json={"email": address}, headers=JSON, buffered=True)
    return client.post("/confirm/resend", data={"email": address}, buffered=True)


def _squatted(
    make_app: Callable[..., Flask], smtp_server: SMTPSink, clock: Any
) -> tuple[Flask, int, int, Any]:
    """The attack's set-up: the victim asked for ``X`` first, the attacker second.

    Returns the app, the victim's and the attacker's ids, and the victim's own first link.
    """
    app = make_app(config=LINKS_ONLY)
    victim, attacker = _confirmed_users(app, smtp_server, "vic@example.org", "mallory@example.org")
    _ask_for(app, victim, WANTED)
    victims_link = smtp_server.wait_for(1)[0]
    clock.shift(61)  # past the resend cooldown of the victim's email to ``X``
    _ask_for(app, attacker, "Vic@New.Example")
    smtp_server.wait_for(2)
    assert _addresses(app) == [("vic@example.org", None), ("mallory@example.org", WANTED)]
    smtp_server.clear()
    clock.shift(61)  # past the resend cooldown of the attacker's own email
    return app, victim, attacker, victims_link


@pytest.mark.parametrize(
    "who,mails",
    [
        pytest.param("anonymous", 0, id="the anonymous form mails nobody"),
        pytest.param("victim", 0, id="another logged-in account mails nobody"),
        pytest.param("attacker", 1, id="control: the holder, logged in, gets its link"),
    ],
)
def test_a_resend_for_a_pending_change_mails_only_its_holder(
    make_app: Callable[..., Flask], smtp_server: SMTPSink, clock: Any, who: str, mails: int
) -> None:
    app, victim, attacker, victims_link = _squatted(make_app, smtp_server, clock)
    assert _confirm(app, victims_link) == "invalid"  # the victim's link stopped working
    uid = {"anonymous": None, "victim": victim, "attacker": attacker}[who]
    answer = _resend(_client(app, uid), WANTED)
    assert answer.status_code == 202
    assert len(smtp_server.messages) == mails
    if mails:  # the positive control: the holder's resend is its own change link
        [mail] = smtp_server.messages
        assert mail.rcpt_tos == [WANTED]
        assert _confirm(app, mail) == "confirmed"
        assert _addresses(app) == [("vic@example.org", None), (WANTED, None)]
    else:
        assert _addresses(app) == [("vic@example.org", None), ("mallory@example.org", WANTED)]


def test_the_victim_who_asks_again_gets_their_own_link(
    make_app: Callable[..., Flask], smtp_server: SMTPSink, clock: Any
) -> None:
    """The way out for the victim: ask again while logged in; the squat is voided."""
    app, victim, attacker, _ = _squatted(make_app, smtp_server, clock)
    _ask_for(app, victim, WANTED)
    [link] = smtp_server.wait_for(1)
    clock.shift(61)
    smtp_server.clear()
    assert _resend(_client(app, attacker), WANTED).status_code == 202  # no longer its claim
    assert _resend(_client(app, None), WANTED).status_code == 202
    assert smtp_server.messages == []
    assert _resend(_client(app, victim), WANTED).status_code == 202
    [resent] = smtp_server.wait_for(1)
    assert _confirm(app, resent) == "confirmed"
    assert _confirm(app, link) == "already_confirmed"  # the same account, already done
    assert _addresses(app) == [(WANTED, None), ("mallory@example.org", None)]


@pytest.mark.parametrize("json", [False, True], ids=["form", "JSON"])
def test_the_anonymous_answer_is_the_same_for_every_kind_of_address(
    make_app: Callable[..., Flask], smtp_server: SMTPSink, clock: Any, json: bool
) -> None:
    """Enumeration safety: a pending change, a waiting sign-up, a confirmed and an unknown
    address get one answer; only the sign-up (the control) is mailed."""
    app, _, _, _ = _squatted(make_app, smtp_server, clock)
    response = app.test_client().post("/signup", data={"email": "new@example.org"})
    assert response.status_code == 201
    smtp_server.wait_for(1)
    clock.shift(61)
    smtp_server.clear()
    anonymous = app.test_client()
    answers = {
        address: _resend(anonymous, address, json=json)
        for address in (WANTED, "new@example.org", "vic@example.org", "nobody@example.org")
    }
    first = answers[WANTED]
    for address, answer in answers.items():
        assert (answer.status_code, answer.get_data()) == (first.status_code, first.get_data())
        assert answer.headers.get("Retry-After") is None, address
    [mail] = smtp_server.wait_for(1)
    assert mail.rcpt_tos == ["new@example.org"]


def test_a_change_link_and_code_work_only_while_the_account_holds_the_address(
    make_app: Callable[..., Flask], smtp_server: SMTPSink, clock: Any
) -> None:
    app = make_app(config=LINKS_ONLY)
    victim, attacker = _confirmed_users(app, smtp_server, "vic@example.org", "mallory@example.org")
    _ask_for(app, victim, WANTED)
    [victims_mail] = smtp_server.wait_for(1)
    path = urlsplit(link_from(victims_mail)).path
    assert app.test_client().get(path, headers=JSON).json["status"] == "pending"  # control
    _ask_for(app, attacker, WANTED)
    assert app.test_client().get(path, headers=JSON).json["status"] == "invalid"
    code = code_from(victims_mail)
    answer = app.test_client().post("/confirm/code", json={"email": WANTED, "code": code})
    assert answer.status_code == 400 and answer.json["status"] == "invalid_code"
    assert _confirm(app, victims_mail) == "invalid"
    assert _addresses(app) == [("vic@example.org", None), ("mallory@example.org", WANTED)]


def test_the_sign_up_variant_mails_the_sign_up_email_the_squatter_already_caused(
    make_app: Callable[..., Flask], smtp_server: SMTPSink, clock: Any
) -> None:
    """The attacker signs up with ``X`` after the victim asked to change to it.

    The sign-up voids the victim's claim; an anonymous resend for ``X`` mails the
    attacker's sign-up link, as the sign-up itself already did: a sign-up link has to
    reach a user who is not logged in (another device, an expired session), and it says
    it is a sign-up, not the change the victim asked for. What it never mails is a change
    link of another account.
    """
    app = make_app(config=LINKS_ONLY)
    [victim] = _confirmed_users(app, smtp_server, "vic@example.org")
    _ask_for(app, victim, WANTED)
    [victims_link] = smtp_server.wait_for(1)
    response = app.test_client().post("/signup", data={"email": WANTED})
    assert response.status_code == 201
    [signup_mail] = smtp_server.wait_for(2)[1:]
    assert _addresses(app) == [("vic@example.org", None), (WANTED, None)]
    clock.shift(61)
    smtp_server.clear()
    assert _resend(_client(app, None), WANTED).status_code == 202
    [resent] = smtp_server.wait_for(1)
    for mail in (signup_mail, resent):
        text = mail.message.get_body(("plain",)).get_content()
        assert "If you did not sign up" in text and "You asked to use this address" not in text
    assert _confirm(app, victims_link) == "invalid"
    assert _addresses(app) == [("vic@example.org", None), (WANTED, None)]


def test_a_logged_in_user_is_sent_only_their_own_link(
    make_app: Callable[..., Flask], smtp_server: SMTPSink, clock: Any
) -> None:
    """The attacker signs up with ``X`` first; the victim then asks to change to ``X``.

    The victim, logged in, asks for their link again: the only account found for ``X``
    is the attacker's sign-up, and its link is not what the victim asked for. Anonymous,
    the same request mails the sign-up link (the control), as the sign-up did.
    """
    app = make_app(config=LINKS_ONLY)
    [victim] = _confirmed_users(app, smtp_server, "vic@example.org")
    response = app.test_client().post("/signup", data={"email": WANTED})
    assert response.status_code == 201
    clock.shift(61)  # past the resend cooldown of the attacker's sign-up email
    _ask_for(app, victim, WANTED)
    smtp_server.wait_for(2)
    assert _addresses(app) == [("vic@example.org", WANTED), (WANTED, None)]
    clock.shift(61)
    smtp_server.clear()
    assert _resend(_client(app, victim), WANTED).status_code == 202
    assert smtp_server.messages == []
    assert _resend(_client(app, None), WANTED).status_code == 202
    [mail] = smtp_server.wait_for(1)
    assert "If you did not sign up" in mail.message.get_body(("plain",)).get_content()
