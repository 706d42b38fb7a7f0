"""Family 1 and 2 of security round 2: one canonical address per mailbox, and a pending
address that identifies one account.

Each test runs on SQLite and PostgreSQL; each has a positive control (a genuinely
different mailbox, or the state before the attack) that shows the check can fail.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy.exc import IntegrityError

from flask_confirm_mail import change_email, normalize_address
from flask_confirm_mail.errors import AddressError
from tests.apps import User, db
from tests.conftest import link_from
from tests.support.smtp_server import SMTPSink

JSON = {"Accept": "application/json"}


def _signup(app: Flask, email: str) -> int:
    response = app.test_client().post("/signup", data={"email": email})
    assert response.status_code == 201, response.data
    return int(response.json["id"])


def _addresses(app: Flask) -> list[tuple[str, str | None]]:
    with app.app_context():
        rows = db.session.execute(sa.select(User.email, User.pending_email).order_by(User.id))
        return [(email, pending) for email, pending in rows]


def _confirm(app: Flask, mail: Any) -> str:
    path = urlsplit(link_from(mail)).path
    status: str = app.test_client().post(path, headers=JSON).json["status"]
    return status


# --- family 1: canonical addresses ---------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "canonical"),
    [
        (" Cat@Example.ORG\t", "cat@example.org"),
        ("CAT@EXAMPLE.ORG", "cat@example.org"),
        ("cat@bücher.example", "cat@xn--bcher-kva.example"),
        ("Cat@BÜCHER.example", "cat@xn--bcher-kva.example"),
    ],
)
def test_the_canonical_form(typed: str, canonical: str) -> None:
    assert normalize_address(typed) == canonical


def test_spellings_of_one_mailbox_are_one_account(
    make_app: Callable[..., Flask], smtp_server: SMTPSink
) -> None:
    app = make_app()
    _signup(app, " Cat@Example.ORG ")
    [mail] = smtp_server.wait_for(1)
    assert mail.rcpt_tos == ["cat@example.org"]
    assert _addresses(app) == [("cat@example.org", None)]
    for variant in ("cat@EXAMPLE.org", "CAT@example.org", "\tcAt@example.ORG "):
        with pytest.raises(IntegrityError):
            app.test_client().post("/signup", data={"email": variant})
        with app.app_context():
            db.session.rollback()
    assert len(_addresses(app)) == 1
    _signup(app, "Dog@Example.org")  # positive control: another mailbox is another account
    assert _addresses(app) == [("cat@example.org", None), ("dog@example.org", None)]


def test_resend_and_its_cooldown_know_every_spelling(
    make_app: Callable[..., Flask], smtp_server: SMTPSink, clock: Any
) -> None:
    app = make_app()
    _signup(app, "Cat@EXAMPLE.org")
    smtp_server.wait_for(1)
    smtp_server.clear()
    clock.shift(61)
    client = app.test_client()
    assert client.post("/confirm/resend", data={"email": "cat@example.org"}).status_code == 202
    [mail] = smtp_server.wait_for(1)
    assert mail.rcpt_tos == ["cat@example.org"]
    for variant in ("CAT@example.org", " cat@Example.Org", "cat@example.ORG"):
        client.post("/confirm/resend", json={"email": variant})
    assert len(smtp_server.messages) == 1, "the cooldown counts per mailbox, not per spelling"
    clock.shift(61)  # positive control: after the cooldown, a variant gets a new link
    client.post("/confirm/resend", json={"email": "CAT@EXAMPLE.ORG"})
    assert len(smtp_server.wait_for(2)) == 2
    assert _confirm(app, smtp_server.messages[-1]) == "confirmed"


def test_the_cli_and_the_web_agree_on_every_lookup(
    make_app: Callable[..., Flask], smtp_server: SMTPSink, clock: Any
) -> None:
    app = make_app()
    _signup(app, "Cat@Example.org")
    smtp_server.wait_for(1)
    runner = app.test_cli_runner()
    missing = runner.invoke(args=["confirm-mail", "status", "dog@example.org"])
    assert missing.exit_code != 0  # positive control: an unknown mailbox is not found
    status = runner.invoke(args=["confirm-mail", "status", " CAT@example.ORG"])
    assert status.exit_code == 0, status.output
    confirmed = runner.invoke(args=["confirm-mail", "confirm", "cat@EXAMPLE.org"])
    assert confirmed.exit_code == 0, confirmed.output
    smtp_server.clear()
    clock.shift(61)
    app.test_client().post("/confirm/resend", data={"email": "Cat@Example.org"})
    assert smtp_server.messages == [], "the web sees the address the CLI confirmed"


def test_change_email_stores_the_canonical_form(
    make_app: Callable[..., Flask], smtp_server: SMTPSink
) -> None:
    app = make_app()
    uid = _signup(app, "cat@example.org")
    with app.app_context():
        user = db.session.get(User, uid)
        assert change_email(user, " Cat@Example.ORG") is False, "the same mailbox"
        assert change_email(user, " Kitten@Example.ORG") is True
        db.session.commit()
    assert _addresses(app) == [("cat@example.org", "kitten@example.org")]
    assert smtp_server.wait_for(2)[1].rcpt_tos == ["kitten@example.org"]


@pytest.mark.parametrize(
    "overlong",
    ["a" * 10_000 + "@example.org", "a@" + "b" * 300 + ".org", "é" * 5000 + "@x.org"],
)
def test_overlong_addresses_are_a_400_everywhere(
    make_app: Callable[..., Flask], smtp_server: SMTPSink, overlong: str
) -> None:
    app = make_app()
    client = app.test_client()
    assert client.post("/signup", data={"email": overlong}).status_code == 400
    assert client.post("/confirm/resend", data={"email": overlong}).status_code == 400
    assert client.post("/confirm/resend", json={"email": overlong}).status_code == 400
    assert _addresses(app) == []
    uid = _signup(app, "cat@example.org")
    with app.app_context(), pytest.raises(AddressError):
        change_email(db.session.get(User, uid), overlong)


def test_blanks_beyond_the_column_width_are_dropped_not_stored(
    make_app: Callable[..., Flask], smtp_server: SMTPSink
) -> None:
    app = make_app()
    _signup(app, " " * 300 + "cat@example.org" + "\t" * 300)  # PostgreSQL once gave a 500
    assert _addresses(app) == [("cat@example.org", None)]


# --- family 2: a pending address identifies one account ------------------------------------


def _confirmed_users(app: Flask, smtp_server: SMTPSink, *emails: str) -> list[int]:
    ids = [_signup(app, email) for email in emails]
    for mail in smtp_server.wait_for(len(emails)):
        assert _confirm(app, mail) == "confirmed"
    smtp_server.clear()
    return ids


def _ask_for(app: Flask, uid: int, address: str) -> None:
    with app.app_context():
        assert change_email(db.session.get(User, uid), address) is True
        db.session.commit()


def test_a_confirmation_goes_to_the_account_that_asked(
    make_app: Callable[..., Flask], smtp_server: SMTPSink, clock: Any
) -> None:
    app = make_app()
    attacker, victim = _confirmed_users(app, smtp_server, "mallory@example.org", "vic@example.org")
    _ask_for(app, attacker, "vic@new.example")  # parked first
    squat_link = smtp_server.wait_for(1)[0]
    clock.shift(61)
    app.test_client().post("/confirm/resend", data={"email": "vic@new.example"})
    control = smtp_server.wait_for(2)[1]  # positive control: the parked claim is live
    control_path = urlsplit(link_from(control)).path
    assert app.test_client().get(control_path, headers=JSON).json["status"] == "pending"
    _ask_for(app, victim, "VIC@new.example")
    assert _addresses(app) == [
        ("mallory@example.org", None),
        ("vic@example.org", "vic@new.example"),
    ]
    clock.shift(61)
    smtp_server.clear()
    app.test_client().post("/confirm/resend", data={"email": "vic@new.example"})
    [resent] = smtp_server.wait_for(1)
    assert _confirm(app, squat_link) == "invalid"
    assert _confirm(app, control) == "invalid"
    assert _confirm(app, resent) == "confirmed"
    assert _addresses(app) == [("mallory@example.org", None), ("vic@new.example", None)]


def test_a_sign_up_voids_another_accounts_pending_claim(
    make_app: Callable[..., Flask], smtp_server: SMTPSink
) -> None:
    app = make_app()
    [attacker] = _confirmed_users(app, smtp_server, "mallory@example.org")
    _ask_for(app, attacker, "vic@example.org")
    squat_link = smtp_server.wait_for(1)[0]
    path = urlsplit(link_from(squat_link)).path
    assert app.test_client().get(path, headers=JSON).json["status"] == "pending"  # control
    _signup(app, "Vic@Example.org")
    assert _addresses(app) == [("mallory@example.org", None), ("vic@example.org", None)]
    assert _confirm(app, squat_link) == "invalid"


def test_confirming_an_address_voids_every_other_claim_to_it(
    make_app: Callable[..., Flask], smtp_server: SMTPSink, clock: Any
) -> None:
    app = make_app()
    first, second, third = _confirmed_users(
        app, smtp_server, "a@example.org", "b@example.org", "c@example.org"
    )
    _ask_for(app, second, "shared@example.org")
    link = smtp_server.wait_for(1)[0]
    with app.app_context():  # rows from before the fix: two accounts parked one address
        db.session.execute(
            sa.update(User)
            .where(User.id.in_([first, third]))
            .values(pending_email="shared@example.org")
        )
        db.session.commit()
    clock.shift(61)
    app.test_client().post("/confirm/resend", data={"email": "shared@example.org"})
    assert len(smtp_server.messages) == 1, "an ambiguous pending address mails nobody"
    assert _confirm(app, link) == "confirmed"
    assert _addresses(app) == [
        ("a@example.org", None),
        ("shared@example.org", None),
        ("c@example.org", None),
    ]


# --- the migration of rows stored as typed -------------------------------------------------


def test_canonicalize_rewrites_rows_stored_as_typed(
    make_app: Callable[..., Flask], smtp_server: SMTPSink, clock: Any
) -> None:
    app = make_app()
    ids = [_signup(app, email) for email in ("a@example.org", "b@example.org", "c@example.org")]
    smtp_server.wait_for(3)
    smtp_server.clear()
    with app.app_context():  # rows as earlier versions stored them (no flush hook runs)
        for uid, (email, pending) in zip(
            ids,
            [("Cat@Example.ORG", None), ("dog@example.org", " New@BÜCHER.example"),
             ("CAT@example.org", None)],
            strict=True,
        ):  # fmt: skip
            db.session.execute(
                sa.update(User).where(User.id == uid).values(email=email, pending_email=pending)
            )
        db.session.commit()
    clock.shift(61)
    client = app.test_client()
    client.post("/confirm/resend", data={"email": "new@xn--bcher-kva.example"})
    assert smtp_server.messages == [], "positive control: the typed rows are not found"
    runner = app.test_cli_runner()
    dry = runner.invoke(args=["confirm-mail", "canonicalize"])
    assert dry.exit_code == 0, dry.output
    assert f"Would rewrite user {ids[1]}" in dry.output
    assert f"user {ids[0]} email, shared with user(s) {ids[2]}" in dry.output
    assert _addresses(app)[1] == ("dog@example.org", " New@BÜCHER.example"), "a dry run"
    done = runner.invoke(args=["confirm-mail", "canonicalize", "--yes"])
    assert "Rewrote 1 account(s); 2 address(es) left as is." in done.output, done.output
    assert _addresses(app) == [
        ("Cat@Example.ORG", None),  # two accounts share the mailbox: a person decides
        ("dog@example.org", "new@xn--bcher-kva.example"),
        ("CAT@example.org", None),
    ]
    client.post("/confirm/resend", data={"email": "New@Bücher.example"})
    [mail] = smtp_server.wait_for(1)
    assert mail.rcpt_tos == ["new@xn--bcher-kva.example"]
    assert _confirm(app, mail) == "confirmed"
