"""Family 1 and 2 of security round 2: one canonical address per mailbox, and a pending
address that identifies one account.

Each test runs on SQLite and PostgreSQL; each has a positive control (a genuinely
different mailbox, or the state before the attack) that shows the check can fail.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa
from flask import Flask, request
from flask.testing import FlaskClient
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from flask_confirm_mail import (
    ConfirmableMixin,
    ConfirmMail,
    change_email,
    normalize_address,
    signup_view,
)
from flask_confirm_mail.errors import AddressError
from flask_confirm_mail.views import MAX_BODY_BYTES
from tests.apps import User, base_config, db
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
        ("cat@xn--BCHER-kva.example", "cat@xn--bcher-kva.example"),
        ("cat@ＥＸＡＭＰＬＥ.ORG", "cat@example.org"),  # fullwidth: UTS 46 maps it (NFKC)
        ("cat@example。org", "cat@example.org"),  # an ideographic full stop
        # IDNA 2008, not 2003: fuß.de is its own domain, not fuss.de (another owner).
        ("cat@fuß.de", "cat@xn--fu-hia.de"),
        ("cat@fuss.de", "cat@fuss.de"),
    ],
)
def test_the_canonical_form(typed: str, canonical: str) -> None:
    assert normalize_address(typed) == canonical


@pytest.mark.parametrize(
    "refused",
    [
        "cat@example.org\x00",
        "cat@exa\x00mple.org",
        "cat@example.org\x0b",
        "cat@example.org\r\n",
        "\xa0cat@example.org",  # blanks other than space and tab are no blanks to drop
        "cat@example.org\u3000",
        "\ufeffcat@example.org",
        "ｃａｔ@example.org",  # a fullwidth local part: not ASCII
        "cat@xn--zz.example",  # not a valid A-label
        "cat@-x.example",
        "cat@example.org.",
    ],
)
def test_addresses_with_control_or_odd_characters_are_refused_everywhere(
    make_app: Callable[..., Flask], smtp_server: SMTPSink, refused: str
) -> None:
    app = make_app()
    client = app.test_client()
    assert client.post("/signup", data={"email": refused}).status_code == 400
    assert client.post("/confirm/resend", data={"email": refused}, buffered=True).status_code == 400
    assert client.post("/confirm/resend", json={"email": refused}, buffered=True).status_code == 400
    status = app.test_cli_runner().invoke(args=["confirm-mail", "status", refused])
    assert status.exit_code == 2 and "Invalid value for EMAIL" in status.output
    assert _addresses(app) == []
    uid = _signup(app, "cat@ＥＸＡＭＰＬＥ.org")  # positive control: a mapped form is accepted
    assert _addresses(app) == [("cat@example.org", None)]
    with app.app_context(), pytest.raises(AddressError):
        change_email(db.session.get(User, uid), refused)


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
    assert (
        client.post("/confirm/resend", data={"email": "cat@example.org"}, buffered=True).status_code
        == 202
    )
    [mail] = smtp_server.wait_for(1)
    assert mail.rcpt_tos == ["cat@example.org"]
    for variant in ("CAT@example.org", " cat@Example.Org", "cat@example.ORG"):
        client.post("/confirm/resend", json={"email": variant}, buffered=True)
    assert len(smtp_server.messages) == 1, "the cooldown counts per mailbox, not per spelling"
    clock.shift(61)  # positive control: after the cooldown, a variant gets a new link
    client.post("/confirm/resend", json={"email": "CAT@EXAMPLE.ORG"}, buffered=True)
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
    app.test_client().post("/confirm/resend", data={"email": "Cat@Example.org"}, buffered=True)
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
    # the link to the new address; the old one, never confirmed, gets no change notice
    changed = sorted(m.rcpt_tos for m in smtp_server.wait_for(2)[1:])
    assert changed == [["kitten@example.org"]]


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
    # The blueprint's routes refuse a body over MAX_BODY_BYTES before reading it (413).
    form_body = len(urllib.parse.urlencode({"email": overlong}))
    expected = 413 if form_body > MAX_BODY_BYTES else 400
    form = client.post("/confirm/resend", data={"email": overlong}, buffered=True)
    assert form.status_code == expected
    as_json = client.post("/confirm/resend", json={"email": overlong}, buffered=True)
    assert as_json.status_code == (413 if len(json.dumps(overlong)) > MAX_BODY_BYTES else 400)
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


# Only links matter here: the change notice to the old address (tests/test_change_notice.py)
# would be one more mail in each count.
LINKS_ONLY = {"CONFIRM_MAIL_CHANGE_NOTICE": False}


def _confirmed_users(app: Flask, smtp_server: SMTPSink, *emails: str) -> list[int]:
    ids = [_signup(app, email) for email in emails]
    for mail in smtp_server.wait_for(len(emails)):
        assert _confirm(app, mail) == "confirmed"
    smtp_server.clear()
    return ids


def _as(app: Flask, uid: int) -> FlaskClient:
    """A client logged in as ``uid``: resends of a pending change need its holder."""
    client = app.test_client()
    assert client.post(f"/login/{uid}").status_code == 200
    return client


def _ask_for(app: Flask, uid: int, address: str) -> None:
    with app.app_context():
        assert change_email(db.session.get(User, uid), address) is True
        db.session.commit()


def test_a_confirmation_goes_to_the_account_that_asked(
    make_app: Callable[..., Flask], smtp_server: SMTPSink, clock: Any
) -> None:
    app = make_app(config=LINKS_ONLY)
    attacker, victim = _confirmed_users(app, smtp_server, "mallory@example.org", "vic@example.org")
    _ask_for(app, attacker, "vic@new.example")  # parked first
    squat_link = smtp_server.wait_for(1)[0]
    clock.shift(61)
    _as(app, attacker).post("/confirm/resend", data={"email": "vic@new.example"}, buffered=True)
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
    _as(app, victim).post("/confirm/resend", data={"email": "vic@new.example"}, buffered=True)
    [resent] = smtp_server.wait_for(1)
    assert _confirm(app, squat_link) == "invalid"
    assert _confirm(app, control) == "invalid"
    assert _confirm(app, resent) == "confirmed"
    assert _addresses(app) == [("mallory@example.org", None), ("vic@new.example", None)]


def test_a_sign_up_voids_another_accounts_pending_claim(
    make_app: Callable[..., Flask], smtp_server: SMTPSink
) -> None:
    app = make_app(config=LINKS_ONLY)
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
    app = make_app(config=LINKS_ONLY)
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
    _as(app, second).post("/confirm/resend", data={"email": "shared@example.org"}, buffered=True)
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
    client = _as(app, ids[1])  # a change link is resent to its logged-in holder only
    client.post("/confirm/resend", data={"email": "new@xn--bcher-kva.example"}, buffered=True)
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
    client.post("/confirm/resend", data={"email": "New@Bücher.example"}, buffered=True)
    [mail] = smtp_server.wait_for(1)
    assert mail.rcpt_tos == ["new@xn--bcher-kva.example"]
    assert _confirm(app, mail) == "confirmed"


def test_an_address_longer_than_the_apps_column_is_a_400(
    database_url: str, smtp_server: SMTPSink
) -> None:
    """An existing table may hold shorter addresses than 254: PostgreSQL once gave a 500."""
    app = Flask(__name__)
    app.config.update(base_config(database_url, smtp_server))
    short_db = SQLAlchemy(app)

    class ShortMember(ConfirmableMixin, short_db.Model):  # type: ignore[name-defined,misc]
        id: Mapped[int] = mapped_column(primary_key=True)
        email: Mapped[str] = mapped_column(sa.String(40), unique=True)

    ConfirmMail(app, db=short_db, user_model=ShortMember)

    @app.post("/signup")
    @signup_view
    def signup() -> Any:
        short_db.session.add(ShortMember(email=request.form["email"]))
        short_db.session.commit()
        return "", 201

    long = "a" * 40 + "@example.org"  # a valid address, longer than the column
    with app.app_context():
        short_db.create_all()
    try:
        client = app.test_client()
        assert client.post("/signup", data={"email": long}).status_code == 400
        assert client.post("/signup", data={"email": " Cat@Example.org"}).status_code == 201
        with app.app_context():  # positive control above: a short address fits
            member = short_db.session.execute(sa.select(ShortMember)).scalar_one()
            assert member.email == "cat@example.org"
            with pytest.raises(AddressError, match="too long"):
                change_email(member, long)
    finally:
        with app.app_context():
            short_db.session.remove()
            short_db.drop_all()
            short_db.engine.dispose()


def test_a_bounce_mark_knows_every_spelling(
    make_app: Callable[..., Flask], smtp_server: SMTPSink, clock: Any
) -> None:
    app = make_app()
    smtp_server.fail_next(1, 550)
    _signup(app, "Cat@Example.ORG")  # its email bounces: the canonical address is marked
    smtp_server.clear()
    clock.shift(61)
    client = app.test_client()
    assert (
        client.post(
            "/confirm/resend", data={"email": "CAT@example.org "}, buffered=True
        ).status_code
        == 202
    )
    assert smtp_server.messages == [], "no more mail to a mailbox known to bounce"
    runner = app.test_cli_runner()
    cleared = runner.invoke(args=["confirm-mail", "bounces", "--clear", " cat@EXAMPLE.org"])
    assert cleared.exit_code == 0, cleared.output
    client.post(
        "/confirm/resend", json={"email": "cAt@example.ORG"}, buffered=True
    )  # positive control
    assert smtp_server.wait_for(1)[0].rcpt_tos == ["cat@example.org"]


# --- the lifecycle's entry points: change notice, reminders, owner cooldown, prune ---------

DAY = 86_400
NOTICE_SUBJECT = "Your email address is being changed"
REMINDER_SUBJECT = "Reminder: confirm your email address"


def test_the_change_notice_goes_to_the_canonical_old_address(
    make_app: Callable[..., Flask], smtp_server: SMTPSink
) -> None:
    # No cooldown: the old address got its sign-up email just now.
    app = make_app(config={"CONFIRM_MAIL_RESEND_COOLDOWN": 0})
    uid = _signup(app, " Cat@Example.ORG ")
    assert _confirm(app, smtp_server.wait_for(1)[0]) == "confirmed"  # only a confirmed one
    smtp_server.clear()
    with app.app_context():
        user = db.session.get(User, uid)
        assert change_email(user, "CAT@example.org\t") is False, "one mailbox: no change"
        db.session.commit()
    assert smtp_server.messages == [], "no notice and no link for a spelling of one's own"
    _ask_for(app, uid, " Kitten@BÜCHER.example")  # positive control: another mailbox
    mails = smtp_server.wait_for(2)
    [notice] = [m for m in mails if m.message["Subject"] == NOTICE_SUBJECT]
    [link] = [m for m in mails if m.message["Subject"] != NOTICE_SUBJECT]
    assert notice.rcpt_tos == ["cat@example.org"]
    # masked as written (bücher), not by the x of the stored xn--bcher-kva
    assert "k***@b***.example" in notice.message.get_body(("plain",)).get_content()
    assert link.rcpt_tos == ["kitten@xn--bcher-kva.example"]


def test_reminders_go_to_the_canonical_address_and_respect_a_bounce_of_any_spelling(
    make_app: Callable[..., Flask], smtp_server: SMTPSink, clock: Any
) -> None:
    app = make_app(config={"CONFIRM_MAIL_REMINDERS": "1d"})
    waiting = _signup(app, " Waiting@Example.ORG")
    smtp_server.fail_next(1, 550)  # its sign-up email bounces: the mailbox is marked
    bounced = _signup(app, "BOUNCED@example.org")
    smtp_server.wait_for(1)
    with app.app_context():  # a row stored as typed by an earlier version, not rewritten
        db.session.execute(
            sa.update(User).where(User.id == bounced).values(email="Bounced@Example.ORG")
        )
        db.session.commit()
    smtp_server.clear()
    clock.shift(DAY + 1)
    runner = app.test_cli_runner()
    sent = runner.invoke(args=["confirm-mail", "remind", "--yes"])
    assert sent.exit_code == 0, sent.output
    assert f"Reminded user {waiting} <waiting@example.org> (reminder 1)" in sent.output
    assert "Queued 1 reminder(s)." in sent.output, "the bounced mailbox is not reminded"
    [reminder] = smtp_server.wait_for(1)  # positive control: the waiting one is
    assert reminder.message["Subject"] == REMINDER_SUBJECT
    assert reminder.rcpt_tos == ["waiting@example.org"]
    assert _confirm(app, reminder) == "confirmed"


def test_the_owner_is_told_the_cooldown_under_any_spelling_and_nobody_else(
    make_app: Callable[..., Flask], smtp_server: SMTPSink, clock: Any
) -> None:
    app = make_app()
    owner = app.test_client()  # the test app logs in at sign-up
    assert owner.post("/signup", data={"email": "Owner@Example.org"}).status_code == 201
    smtp_server.wait_for(1)
    clock.shift(12)
    for spelling in ("owner@example.org", " OWNER@example.ORG", "Owner@Example.org\t"):
        answer = owner.post(
            "/confirm/resend", json={"email": spelling}, headers=JSON, buffered=True
        )
        assert answer.status_code == 429 and answer.json["status"] == "cooldown", spelling
        assert answer.headers["Retry-After"] == "48"
    stranger = app.test_client().post(
        "/confirm/resend", json={"email": "OWNER@example.org"}, buffered=True
    )
    assert stranger.status_code == 202 and "Retry-After" not in stranger.headers
    other = owner.post(
        "/confirm/resend", json={"email": "other@example.org"}, headers=JSON, buffered=True
    )
    assert other.status_code == 202, "the truth is about the owner's own address only"
    assert len(smtp_server.messages) == 1


def test_prune_frees_the_mailbox_for_every_spelling(
    make_app: Callable[..., Flask], smtp_server: SMTPSink, clock: Any
) -> None:
    app = make_app()
    _signup(app, "Cat@Example.ORG")
    smtp_server.wait_for(1)
    with pytest.raises(IntegrityError):  # positive control: the mailbox is taken
        app.test_client().post("/signup", data={"email": "CAT@example.org"})
    with app.app_context():
        db.session.rollback()
    clock.shift(15 * DAY)
    runner = app.test_cli_runner()
    dry = runner.invoke(args=["confirm-mail", "prune", "--older-than", "14d"])
    assert "<cat@example.org>" in dry.output, dry.output
    done = runner.invoke(args=["confirm-mail", "prune", "--older-than", "14d", "--yes"])
    assert "Deleted 1 never-confirmed account(s)." in done.output, done.output
    _signup(app, " cAt@EXAMPLE.org")
    assert _addresses(app) == [("cat@example.org", None)]
