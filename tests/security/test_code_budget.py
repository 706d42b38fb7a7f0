"""Round 3, family 1: a confirmation code cannot be guessed by asking for more emails.

The try budget lives on the (account, address) pair and on the address, not on outbox rows:
new emails, resends, changes and retries do not reset it; a row's code is the same on every
delivery of that row; only emails that show a code have one; the change flow keeps the
per-address cooldown; the code route has the per-client limit.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask import Flask

from flask_confirm_mail import change_email, outbox
from flask_confirm_mail.confirmation import CODE_MAX_TRIES
from tests.apps import db, user_model
from tests.support.smtp_server import ReceivedMail, SMTPSink
from tests.test_confirm_code import code_from

VICTIM = "victim@example.org"


def _sign_up(app: Flask, smtp: SMTPSink, email: str) -> tuple[int, ReceivedMail]:
    count = len(smtp.messages)
    answer = app.test_client().post("/signup", data={"email": email})
    assert answer.status_code == 201
    return int(answer.json["id"]), smtp.wait_for(count + 1)[count]


def _change(app: Flask, smtp: SMTPSink, uid: int, new: str, emails: int = 1) -> list[ReceivedMail]:
    count = len(smtp.messages)
    with app.app_context():
        user = db.session.get(user_model("mixin"), uid)
        change_email(user, new)
        db.session.commit()
    return smtp.wait_for(count + emails)[count:] if emails else []


def _try(app: Flask, email: str, code: str, client_address: str = "192.0.2.1") -> Any:
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = client_address
    return client.post("/confirm/code", json={"email": email, "code": code})


def _wrong(code: str, n: int = 1) -> str:
    return f"{(int(code) + n) % 10**6:06d}"


def _pending(app: Flask, uid: int) -> Any:
    with app.app_context():
        user = db.session.get(user_model("mixin"), uid)
        return user.pending_email, user.email_confirmed_at


def test_new_change_emails_do_not_give_fresh_tries(make_app: Any, smtp_server: SMTPSink) -> None:
    app = make_app(config={"CONFIRM_MAIL_RESEND_COOLDOWN": 0, "CONFIRM_MAIL_CHANGE_NOTICE": False})
    attacker, _ = _sign_up(app, smtp_server, "mallory@example.org")
    for _ in range(3):  # each round: a new email to the victim, and its tries spent
        [mail] = _change(app, smtp_server, attacker, VICTIM)
        code = code_from(mail)
        for n in range(1, CODE_MAX_TRIES + 1):
            assert _try(app, VICTIM, _wrong(code, n)).json["status"] == "invalid_code"
    [mail] = _change(app, smtp_server, attacker, VICTIM)
    answer = _try(app, VICTIM, code_from(mail))  # the right code of the newest email
    assert answer.json["status"] == "invalid_code", "a new email reset the budget"
    assert _pending(app, attacker)[0] == VICTIM  # still only asked for, not confirmed


def test_the_budget_holds_across_accounts_asking_for_one_address(
    make_app: Any, smtp_server: SMTPSink
) -> None:
    app = make_app(config={"CONFIRM_MAIL_RESEND_COOLDOWN": 0, "CONFIRM_MAIL_CHANGE_NOTICE": False})
    accounts = [_sign_up(app, smtp_server, f"m{i}@example.org")[0] for i in range(4)]
    for account in accounts[:-1]:
        [mail] = _change(app, smtp_server, account, VICTIM)
        code = code_from(mail)
        for n in range(1, CODE_MAX_TRIES + 1):
            _try(app, VICTIM, _wrong(code, n))
    [mail] = _change(app, smtp_server, accounts[-1], VICTIM)
    assert _try(app, VICTIM, code_from(mail)).json["status"] == "invalid_code"


def test_the_budget_comes_back_once_the_link_lifetime_has_passed(
    make_app: Any, smtp_server: SMTPSink, clock: Any
) -> None:
    app = make_app(config={"CONFIRM_MAIL_RESEND_COOLDOWN": 0})
    uid, mail = _sign_up(app, smtp_server, "slow@example.org")
    for n in range(1, CODE_MAX_TRIES + 1):
        _try(app, "slow@example.org", _wrong(code_from(mail), n))
    clock.shift(48 * 3600 + 1)  # the lifetime: the old code is void, a new email's works
    with app.app_context():
        from flask_confirm_mail import send_confirmation

        send_confirmation(db.session.get(user_model("mixin"), uid))
        db.session.commit()
    fresh = smtp_server.wait_for(2)[1]
    assert _try(app, "slow@example.org", code_from(fresh)).json["status"] == "confirmed"


def test_every_delivery_of_one_row_carries_the_same_code(
    make_app: Any, smtp_server: SMTPSink
) -> None:
    app = make_app()
    _, first = _sign_up(app, smtp_server, "twice@example.org")
    table = app.extensions["confirm_mail"].outbox_table
    with app.app_context(), db.engine.begin() as conn:  # as if the DATA reply was lost
        conn.execute(sa.update(table).values(status="pending", due_at=sa.func.now()))
    with app.app_context():
        app.extensions["confirm_mail"].deliverer.deliver_now([1])
    second = smtp_server.wait_for(2)[1]
    assert second.message["Message-ID"] == first.message["Message-ID"]
    assert code_from(second) == code_from(first)
    assert _try(app, "twice@example.org", code_from(first)).json["status"] == "confirmed"


def test_the_change_notice_has_no_code(make_app: Any, smtp_server: SMTPSink) -> None:
    app = make_app(config={"CONFIRM_MAIL_RESEND_COOLDOWN": 0})
    uid, signup = _sign_up(app, smtp_server, "olga@example.org")
    with app.app_context():  # confirmed by hand: the notice goes to confirmed addresses
        user = db.session.get(user_model("mixin"), uid)
        app.extensions["confirm_mail"].confirm_user(user)
        db.session.commit()
    mails = _change(app, smtp_server, uid, "new@example.org", emails=2)
    table = app.extensions["confirm_mail"].outbox_table
    with app.app_context(), db.engine.connect() as conn:
        notice = conn.execute(sa.select(table).where(table.c.purpose == "change_notice")).one()
        # Its cancel link ends like any link, but it shows no code: none is checked against it.
        newest = outbox.newest_code(conn, table, "olga@example.org")
    assert notice.code_expires_at is not None and newest.purpose == "signup"
    change = next(m for m in mails if m.rcpt_tos == ["new@example.org"])
    assert _try(app, "new@example.org", code_from(change)).json["status"] == "confirmed"


def test_a_confirmed_address_gets_one_notice_per_cooldown_even_just_after_its_sign_up(
    make_app: Any, smtp_server: SMTPSink
) -> None:
    app = make_app()  # the default cooldown: the sign-up email went out a moment ago
    uid, _ = _sign_up(app, smtp_server, "olga@example.org")
    with app.app_context():
        app.extensions["confirm_mail"].confirm_user(db.session.get(user_model("mixin"), uid))
        db.session.commit()
    first = _change(app, smtp_server, uid, "new@example.org", emails=2)
    second = _change(app, smtp_server, uid, "newer@example.org")
    assert sorted(m.rcpt_tos[0] for m in first) == ["new@example.org", "olga@example.org"]
    assert [m.rcpt_tos for m in second] == [["newer@example.org"]]
    assert sum(m.rcpt_tos == ["olga@example.org"] for m in smtp_server.messages) == 2


def test_no_notice_goes_to_an_old_address_that_was_never_confirmed(
    make_app: Any, smtp_server: SMTPSink
) -> None:
    app = make_app()
    uid, _ = _sign_up(app, smtp_server, "never@example.org")
    mails = _change(app, smtp_server, uid, "elsewhere@example.org")
    assert [m.rcpt_tos for m in mails] == [["elsewhere@example.org"]]


def test_change_requests_keep_the_per_address_cooldown(
    make_app: Any, smtp_server: SMTPSink
) -> None:
    app = make_app(config={"CONFIRM_MAIL_CHANGE_NOTICE": False})
    attacker, _ = _sign_up(app, smtp_server, "spam@example.org")
    _change(app, smtp_server, attacker, VICTIM)
    for _ in range(5):
        _change(app, smtp_server, attacker, VICTIM, emails=0)
    assert sum(m.rcpt_tos == [VICTIM] for m in smtp_server.messages) == 1


def test_the_code_route_has_the_per_client_limit(make_app: Any, smtp_server: SMTPSink) -> None:
    app = make_app(config={"CONFIRM_MAIL_RESEND_LIMIT": "5/minute"})
    statuses = [_try(app, "x@example.org", "123456").status_code for _ in range(7)]
    assert statuses == [400] * 5 + [429] * 2
    assert _try(app, "x@example.org", "123456", "198.51.100.9").status_code == 400
