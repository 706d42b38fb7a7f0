"""Confirm by code: the email's short code confirms like its link, on any device.

Real SMTP (tests/support/smtp_server.py), the app's own routes, SQLite and PostgreSQL.
"""

from __future__ import annotations

import logging
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_confirm_mail import change_email, is_confirmed
from flask_confirm_mail.confirmation import CODE_MAX_TRIES
from flask_confirm_mail.outbox import TABLE_NAME
from flask_confirm_mail.tokens import CodeHasher
from tests.apps import db, user_model
from tests.conftest import link_from
from tests.support.smtp_server import ReceivedMail, SMTPSink

CODE_LINE = re.compile(r"^ {4}(\S+)\r?$", re.MULTILINE)
JSON = {"Accept": "application/json"}


def code_from(mail: ReceivedMail) -> str:
    """The code in a received mail's text part (checked against the HTML part)."""
    text = mail.message.get_body(("plain",)).get_content()
    html = mail.message.get_body(("html",)).get_content()
    [code] = CODE_LINE.findall(text)
    assert f">{code}</p>" in html
    return str(code)


def _path(link: str) -> str:
    return link.removeprefix("https://app.example.com")


def _signup(app: Flask, smtp_server: SMTPSink, email: str) -> ReceivedMail:
    count = len(smtp_server.messages)
    assert app.test_client().post("/signup", data={"email": email}).status_code == 201
    return smtp_server.wait_for(count + 1)[count]


def _confirmed(app: Flask, email: str, shape: str = "mixin") -> bool:
    model = user_model(shape)
    attribute = "email" if shape == "mixin" else "aut_email"
    with app.app_context():
        user = db.session.execute(
            sa.select(model).where(getattr(model, attribute) == email)
        ).scalar_one()
        return is_confirmed(user)


def _try(app: Flask, email: str, code: str) -> Any:
    return app.test_client().post("/confirm/code", json={"email": email, "code": code})


def _tries(app: Flask, email: str) -> Any:
    """The code tries counted against the account that asked for ``email``, with it."""
    state = app.extensions["confirm_mail"].state_table
    stmt = sa.select(state.c.tries).where(state.c.address == email, state.c.user_id != "")
    with app.app_context():
        return db.session.execute(stmt).scalar()


def test_the_email_carries_a_six_digit_code_stored_nowhere(
    make_app: Any, smtp_server: SMTPSink
) -> None:
    app = make_app()
    mail = _signup(app, smtp_server, "ann@example.org")
    code = code_from(mail)
    assert re.fullmatch(r"[0-9]{6}", code)
    assert link_from(mail)  # the link is there too
    with app.app_context():
        rows = db.session.execute(sa.text(f"SELECT * FROM {TABLE_NAME}")).mappings().all()
        state = db.session.execute(sa.text("SELECT * FROM confirm_mail_state")).mappings().all()
    [row] = rows
    assert row["code_expires_at"] is not None
    assert code == app.extensions["confirm_mail"].codes.code_for(row["id"], row["recipient"])
    assert not any(code in str(value) for value in row.values())
    assert not any(code in str(value) for s_row in state for value in s_row.values())


@pytest.mark.parametrize("shape", ["mixin", "legacy"])
def test_the_code_confirms_then_the_link_says_already_confirmed(
    make_app: Any, smtp_server: SMTPSink, shape: str
) -> None:
    app = make_app(shape=shape)
    mail = _signup(app, smtp_server, "bob@example.org")
    page = app.test_client().post(
        "/confirm/code", data={"email": " bob@example.org ", "code": code_from(mail)}
    )
    assert page.status_code == 200
    assert b"Email confirmed" in page.data
    assert _confirmed(app, "bob@example.org", shape)
    answer = app.test_client().post(_path(link_from(mail)), headers=JSON)
    assert answer.json["status"] == "already_confirmed"


def test_link_first_then_the_code_is_void(make_app: Any, smtp_server: SMTPSink) -> None:
    app = make_app()
    mail = _signup(app, smtp_server, "cat@example.org")
    answer = app.test_client().post(_path(link_from(mail)), headers=JSON)
    assert answer.json["status"] == "confirmed"
    answer = _try(app, "cat@example.org", code_from(mail))
    assert (answer.status_code, answer.json["status"]) == (400, "invalid_code")


def test_wrong_codes_count_and_void_the_code_after_max_tries(
    make_app: Any, smtp_server: SMTPSink
) -> None:
    app = make_app()
    code = code_from(_signup(app, smtp_server, "dan@example.org"))
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    for tries in range(1, CODE_MAX_TRIES + 1):
        answer = _try(app, "dan@example.org", wrong)
        assert answer.json["status"] == "invalid_code"
        assert _tries(app, "dan@example.org") == tries
    answer = _try(app, "dan@example.org", code)
    assert (answer.status_code, answer.json["status"]) == (400, "invalid_code")
    assert "new email" in answer.json["message"]
    assert answer.json["resend_url"] == "/confirm/resend"
    assert not _confirmed(app, "dan@example.org")


def test_the_right_code_works_on_the_last_try(make_app: Any, smtp_server: SMTPSink) -> None:
    app = make_app()
    code = code_from(_signup(app, smtp_server, "eve@example.org"))
    wrong = "000000" if code != "000000" else "111111"
    for _ in range(CODE_MAX_TRIES - 1):
        assert _try(app, "eve@example.org", wrong).status_code == 400
    assert _try(app, "eve@example.org", code).json["status"] == "confirmed"


def test_another_accounts_code_does_not_confirm(make_app: Any, smtp_server: SMTPSink) -> None:
    app = make_app()
    code_a = code_from(_signup(app, smtp_server, "a@example.org"))
    code_b = code_from(_signup(app, smtp_server, "b@example.org"))
    if code_a != code_b:  # one in a million
        assert _try(app, "b@example.org", code_a).json["status"] == "invalid_code"
    assert not _confirmed(app, "a@example.org") and not _confirmed(app, "b@example.org")
    assert _try(app, "b@example.org", code_b).json["status"] == "confirmed"
    assert not _confirmed(app, "a@example.org")


def test_unknown_address_and_wrong_code_get_the_same_answer(
    make_app: Any, smtp_server: SMTPSink
) -> None:
    app = make_app()
    code = code_from(_signup(app, smtp_server, "fay@example.org"))
    wrong = "123456" if code != "123456" else "654321"
    client = app.test_client()
    unknown = client.post("/confirm/code", json={"email": "nobody@example.org", "code": code})
    mistaken = client.post("/confirm/code", json={"email": "fay@example.org", "code": wrong})
    assert (unknown.status_code, unknown.json) == (mistaken.status_code, mistaken.json)
    pages = [
        client.post("/confirm/code", data={"email": email, "code": typed}).data.replace(
            email.encode(), b"ADDRESS"
        )
        for email, typed in (("nobody@example.org", code), ("fay@example.org", wrong))
    ]
    assert pages[0] == pages[1]


def test_a_new_email_voids_the_previous_code(
    make_app: Any, smtp_server: SMTPSink, clock: Any
) -> None:
    app = make_app()
    first = code_from(_signup(app, smtp_server, "gus@example.org"))
    clock.shift(61)
    client = app.test_client()
    resent = client.post("/confirm/resend", data={"email": "gus@example.org"}, buffered=True)
    assert resent.status_code == 202
    second = code_from(smtp_server.wait_for(2)[1])
    if first != second:
        assert _try(app, "gus@example.org", first).json["status"] == "invalid_code"
    assert _try(app, "gus@example.org", second).json["status"] == "confirmed"


def test_the_code_expires_with_the_link(make_app: Any, smtp_server: SMTPSink, clock: Any) -> None:
    app = make_app(config={"CONFIRM_MAIL_LIFETIME": 600})
    code = code_from(_signup(app, smtp_server, "hal@example.org"))
    clock.shift(601)
    assert _try(app, "hal@example.org", code).json["status"] == "invalid_code"
    assert not _confirmed(app, "hal@example.org")


def test_the_code_confirms_an_email_change(make_app: Any, smtp_server: SMTPSink) -> None:
    app = make_app(config={"CONFIRM_MAIL_RESEND_COOLDOWN": 0})  # old@ was mailed just now
    signup = _signup(app, smtp_server, "old@example.org")
    app.test_client().post(_path(link_from(signup)))
    model = user_model("mixin")
    with app.app_context():
        user = db.session.execute(sa.select(model)).scalar_one()
        assert change_email(user, "new@example.org")
        db.session.commit()
    # The change sends two emails: the notice to the old address and the new link.
    [mail] = [m for m in smtp_server.wait_for(3) if m.rcpt_tos == ["new@example.org"]]
    assert _try(app, "old@example.org", code_from(mail)).json["status"] == "invalid_code"
    assert _try(app, "new@example.org", code_from(mail)).json["status"] == "confirmed"
    with app.app_context():
        user = db.session.execute(sa.select(model)).scalar_one()
        assert (user.email, user.pending_email) == ("new@example.org", None)
    answer = app.test_client().post(_path(link_from(mail)), headers=JSON)
    assert answer.json["status"] == "already_confirmed"


def test_the_page_shows_a_form_and_says_when_the_code_is_wrong(
    make_app: Any, smtp_server: SMTPSink
) -> None:
    app = make_app()
    _signup(app, smtp_server, "ida@example.org")
    client = app.test_client()
    page = client.get("/confirm/code")
    assert page.status_code == 200
    assert b'name="email"' in page.data and b'name="code"' in page.data
    assert b'inputmode="numeric"' in page.data
    page = client.post("/confirm/code", data={"email": "ida@example.org", "code": "12"})
    assert page.status_code == 400
    assert b"does not confirm that address" in page.data
    assert b'href="/confirm/resend"' in page.data
    assert b'value="ida@example.org"' in page.data


@pytest.mark.parametrize(
    "body",
    [
        {"json": ["not", "an", "object"]},
        {"json": {}},
        {"json": {"email": "jo@example.org"}},
        {"json": {"email": "jo@example.org", "code": 123456}},
        {"json": {"email": "jo@example.org", "code": None}},
        {"json": {"email": "jo@example.org", "code": "9" * 10_000}},
        {"json": {"email": ["jo@example.org"], "code": "123456"}},
        {"json": {"email": "jo@example.org\r\nBcc: x@y.org", "code": "123456"}},
        {"data": {"email": "jo@example.org", "code": "١٢٣٤٥٦"}},
        {"data": {"code": "123456"}},
        {"data": "email=%ff%fe&code=%00", "content_type": "application/x-www-form-urlencoded"},
        {"data": "{broken json", "content_type": "application/json"},
    ],
)
def test_bad_input_is_a_400_never_a_500(
    make_app: Any, smtp_server: SMTPSink, body: dict[str, Any]
) -> None:
    app = make_app()
    _signup(app, smtp_server, "jo@example.org")
    answer = app.test_client().post("/confirm/code", **body)
    assert answer.status_code == 400
    assert not _confirmed(app, "jo@example.org")


def test_the_code_is_never_in_the_logs(
    make_app: Any, smtp_server: SMTPSink, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.INFO, logger="sqlalchemy.engine")  # every statement and value
    app = make_app()
    mail = _signup(app, smtp_server, "kim@example.org")
    code = code_from(mail)
    _try(app, "kim@example.org", code[::-1] if code != code[::-1] else "000001")
    app.test_client().post("/confirm/code", data={"email": "kim@example.org", "code": code})
    assert _confirmed(app, "kim@example.org")
    # mail.log is the test's SMTP server (aiosmtpd) printing the DATA it received.
    ours = [r for r in caplog.records if not r.name.startswith("mail.log")]
    assert any(r.name.startswith("sqlalchemy") for r in ours), "the SQL is in the log"
    text = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in ours)
    assert code not in text


def test_codes_typed_with_separators_are_accepted(make_app: Any, smtp_server: SMTPSink) -> None:
    app = make_app()
    code = code_from(_signup(app, smtp_server, "lu@example.org"))
    assert re.fullmatch(r"[0-9]{6}", code)
    typed = f"{code[:3]} - {code[3:]}"
    assert _try(app, "lu@example.org", typed).json["status"] == "confirmed"


def test_letter_codes_accept_either_case() -> None:
    hasher = CodeHasher(b"k" * 32, length=6, alphabet="ABCDEFGHJKLMNPQRSTUVWXYZ23456789")
    code = hasher.code_for(7, "lu@example.org")
    assert re.fullmatch(r"[A-Z2-9]{6}", code)
    assert hasher.matches(f"{code[:3].lower()}-{code[3:].lower()}", 7, "lu@example.org")


def test_codes_bind_to_their_row_and_recipient() -> None:
    hasher = CodeHasher(b"k" * 32, length=6, alphabet="0123456789")
    code = hasher.code_for(7, "mo@example.org")
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    assert hasher.matches(code, 7, "MO@example.org")
    assert not hasher.matches(code, 8, "mo@example.org")
    assert not hasher.matches(code, 7, "other@example.org")
    assert not hasher.matches(wrong, 7, "mo@example.org")
    assert not hasher.matches("", 7, "mo@example.org")
    assert not CodeHasher(b"n" * 32, length=6, alphabet="0123456789").matches(
        code, 7, "mo@example.org"
    )
    rotated = CodeHasher(b"n" * 32, [b"k" * 32], length=6, alphabet="0123456789")
    assert rotated.matches(f"{code[:3]} {code[3:]}", 7, "mo@example.org")


def test_parallel_wrong_tries_never_exceed_max_tries(make_app: Any, smtp_server: SMTPSink) -> None:
    app = make_app()
    code = code_from(_signup(app, smtp_server, "max@example.org"))
    wrong = [f"{(int(code) + n) % 10**6:06d}" for n in range(1, 17)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda typed: _try(app, "max@example.org", typed), wrong))
    assert {answer.status_code for answer in answers} == {400}
    assert _tries(app, "max@example.org") == CODE_MAX_TRIES
    assert _try(app, "max@example.org", code).json["status"] == "invalid_code"
    assert not _confirmed(app, "max@example.org")


def test_the_code_confirms_a_change_without_a_pending_column(
    make_app: Any, smtp_server: SMTPSink
) -> None:
    app = make_app(shape="legacy")
    first = _signup(app, smtp_server, "was@example.org")
    model = user_model("legacy")
    with app.app_context():
        user = db.session.execute(sa.select(model)).scalar_one()
        change_email(user, "now@example.org")
        db.session.commit()
    # was@ was never confirmed, so it gets no notice: the change sends the new link only.
    [mail] = [m for m in smtp_server.wait_for(2) if m.rcpt_tos == ["now@example.org"]]
    assert _try(app, "was@example.org", code_from(first)).json["status"] == "invalid_code"
    assert _try(app, "now@example.org", code_from(mail)).json["status"] == "confirmed"
    assert _confirmed(app, "now@example.org", "legacy")
    answer = app.test_client().post(_path(link_from(mail)), headers=JSON)
    assert answer.json["status"] == "already_confirmed"
