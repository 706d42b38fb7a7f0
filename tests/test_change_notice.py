"""The change notice: after an email change the old address hears of it; its one link cancels."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask, jsonify, request, session

from flask_confirm_mail import change_email
from flask_confirm_mail.addresses import mask_address
from flask_confirm_mail.mailer import RemoteTransport
from flask_confirm_mail.outbox import utcnow
from tests.apps import db, user_model
from tests.conftest import LINK_RE, link_from
from tests.support.smtp_server import ReceivedMail, SMTPSink

ROOT = Path(__file__).resolve().parent.parent
OLD, NEW = "old@example.org", "Newcomer@Example.NET"
MASKED = "n***@e***.net"  # of the canonical form (issue 14)
# The old address got its sign-up email just now: no resend cooldown in the way of the notice.
NO_COOLDOWN = {"CONFIRM_MAIL_RESEND_COOLDOWN": 0}


def _add_change_route(app: Flask) -> None:
    """``POST /change`` changes the logged-in user's address, in a request (thread mode)."""

    @app.post("/change")
    def change() -> Any:
        user = db.session.get(app.extensions["confirm_mail"].columns.model, session["uid"])
        changed = change_email(user, request.form["email"])
        db.session.commit()
        return jsonify(changed=changed)


def _confirm(app: Flask, uid: int) -> None:
    """Confirm the account's address: only a confirmed old address gets the notice."""
    with app.app_context():
        flow = app.extensions["confirm_mail"]
        assert flow.confirm_user(db.session.get(flow.columns.model, uid))
        db.session.commit()


def _sign_up(app: Flask, email: str = OLD) -> int:
    """Sign up with ``email``, then confirm it."""
    answer = app.test_client().post("/signup", data={"email": email})
    assert answer.status_code == 201
    _confirm(app, int(answer.json["id"]))
    return int(answer.json["id"])


def _change(app: Flask, uid: int, new: str = NEW) -> None:
    with app.app_context():
        user = db.session.get(app.extensions["confirm_mail"].columns.model, uid)
        assert change_email(user, new) is True
        db.session.commit()


def _rows(app: Flask, purpose: str) -> list[Any]:
    table = app.extensions["confirm_mail"].outbox_table
    with app.app_context(), db.engine.connect() as conn:
        return list(conn.execute(sa.select(table).where(table.c.purpose == purpose)).all())


def _texts(mail: ReceivedMail) -> tuple[str, str]:
    text = mail.message.get_body(("plain",)).get_content()
    html = mail.message.get_body(("html",)).get_content()
    return text, html


def assert_is_notice(mail: ReceivedMail, *, replaced: bool = False) -> None:
    """A notice to the old address: the new one masked, no full address (not in the token
    either), no confirm link; a cancel link unless the address was ``replaced`` at once."""
    assert mail.rcpt_tos == [OLD]
    assert mail.message["Subject"] == "Your email address is being changed"
    for part in _texts(mail):
        assert MASKED in part
        assert "example.net" not in part.lower() and "newcomer" not in part.lower()
        assert all(link.endswith("/confirm/cancel") for link in LINK_RE.findall(part))
        cancel = re.findall(r"/confirm/cancel/([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\.", part)
        assert len(set(cancel)) == (0 if replaced else 1)
        for _, payload in cancel:  # nor does the token say the new address
            claims = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).lower()
            assert b"example.net" not in claims and b"newcomer" not in claims
        assert ("now the one on the account" in part) is replaced


def _mail_to(sink: SMTPSink, count: int, address: str) -> ReceivedMail:
    """The one mail to ``address`` among the first ``count``, the sign-up email left out."""
    mails = sink.wait_for(count)
    [mail] = [m for m in mails if m.rcpt_tos == [address] and "Confirm" not in m.message["Subject"]]
    return mail


@pytest.mark.parametrize(
    ("address", "masked"),
    [
        ("john.doe@example.com", "j***@e***.com"),
        ("a@b.co", "a***@b***.co"),
        ("ann@mail.example.co.uk", "a***@m***.uk"),
        ("x@localhost", "x***@l***"),
        ("cat@xn--fu-hia.de", "c***@f***.de"),  # fuß.de, as the user typed it
        ("cat@xn--80aswg.xn--p1ai", "c***@с***.рф"),  # сайт.рф
        # A last label that is no short word could carry a sender's text: hidden too.
        ("x@example.call5551234now", "x***@e***"),
        ("x@example.example", "x***@e***.example"),
        ("x@example.callmeatsomewhereelse", "x***@e***"),
    ],
)
def test_mask_address_keeps_first_characters_and_the_last_label(address: str, masked: str) -> None:
    assert mask_address(address) == masked


def test_the_old_address_gets_a_notice_without_confirm_link_and_the_new_one_its_link(
    make_app: Any, shape: str, smtp_server: SMTPSink
) -> None:
    app = make_app(shape=shape, config=NO_COOLDOWN)
    uid = _sign_up(app)
    smtp_server.wait_for(1)
    _change(app, uid)

    new_address = "newcomer@example.net"
    notice = _mail_to(smtp_server, 3, OLD)
    assert_is_notice(notice, replaced=shape == "legacy")
    [link_mail] = [m for m in smtp_server.messages if m.rcpt_tos == [new_address]]
    link_from(link_mail)  # the new address gets its link
    [row] = _rows(app, "change_notice")
    assert (row.recipient, row.status, row.user_id) == (OLD, "sent", str(uid))
    assert row.context == {"new_email": MASKED, "replaced": shape == "legacy"}


def test_the_notice_shows_an_internationalized_domain_as_the_user_wrote_it(
    make_app: Any, smtp_server: SMTPSink
) -> None:
    app = make_app(config=NO_COOLDOWN)
    uid = _sign_up(app)
    smtp_server.wait_for(1)
    _change(app, uid, "Kater@Fuß.de")  # stored as kater@xn--fu-hia.de

    notice = _mail_to(smtp_server, 3, OLD)
    for part in _texts(notice):
        assert "k***@f***.de" in part and "xn--" not in part and "kater" not in part


def test_the_notice_is_queued_in_the_change_transaction(
    make_app: Any, smtp_server: SMTPSink
) -> None:
    app = make_app()
    uid = _sign_up(app)
    with app.app_context():
        user = db.session.get(user_model("mixin"), uid)
        change_email(user, NEW)
        db.session.rollback()
    assert _rows(app, "change_notice") == [] and _rows(app, "change") == []
    assert len(smtp_server.wait_for(1)) == 1


def test_no_notice_when_turned_off(make_app: Any, smtp_server: SMTPSink) -> None:
    app = make_app(config={"CONFIRM_MAIL_CHANGE_NOTICE": False})
    uid = _sign_up(app)
    _change(app, uid)
    assert [m.rcpt_tos for m in smtp_server.wait_for(2)] == [[OLD], ["newcomer@example.net"]]
    assert _rows(app, "change_notice") == []


def test_no_notice_to_an_old_address_that_bounces(make_app: Any, smtp_server: SMTPSink) -> None:
    app = make_app()
    smtp_server.fail_next(1, 550)  # the sign-up email bounces: the address is marked
    uid = _sign_up(app)
    _change(app, uid)
    assert _rows(app, "change_notice") == []
    assert [m.rcpt_tos for m in smtp_server.wait_for(1)] == [["newcomer@example.net"]]


def test_thread_mode_delivers_the_notice_from_the_request(
    make_app: Any, smtp_server: SMTPSink
) -> None:
    app = make_app(config={"CONFIRM_MAIL_DELIVERY": "thread", **NO_COOLDOWN})
    _add_change_route(app)
    client = app.test_client()
    answer = client.post("/signup", data={"email": OLD})
    assert answer.status_code == 201
    _confirm(app, int(answer.json["id"]))
    assert client.post("/change", data={"email": NEW}).json == {"changed": True}
    assert_is_notice(_mail_to(smtp_server, 3, OLD))


def test_a_failed_notice_is_retried_not_dropped(make_app: Any, smtp_server: SMTPSink) -> None:
    app = make_app(config=NO_COOLDOWN)
    uid = _sign_up(app)
    smtp_server.wait_for(1)
    smtp_server.fail_next(2, 451)  # the link and the notice: both refused for now
    _change(app, uid)
    [row] = _rows(app, "change_notice")
    assert (row.status, row.attempts, row.last_failure) == ("pending", 1, "temporary")
    table = app.extensions["confirm_mail"].outbox_table
    with app.app_context(), db.engine.begin() as conn:
        conn.execute(sa.update(table).values(due_at=utcnow()))
    result = app.test_cli_runner().invoke(args=["confirm-mail", "worker", "--once"])
    assert result.exit_code == 0, result.output
    assert_is_notice(_mail_to(smtp_server, 3, OLD))
    assert _rows(app, "change_notice")[0].status == "sent"


def test_a_worker_process_delivers_the_notice(
    make_app: Any, smtp_server: SMTPSink, database_url: str
) -> None:
    app = make_app(config={"CONFIRM_MAIL_DELIVERY": "worker", **NO_COOLDOWN})
    uid = _sign_up(app)
    _change(app, uid)
    assert smtp_server.messages == []
    env = dict(os.environ, TEST_DATABASE_URL=database_url, TEST_SMTP_PORT=str(smtp_server.port))
    command = [sys.executable, "-m", "flask", "--app", "tests.worker_app", "confirm-mail",
               "worker", "--once"]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "3 sent" in done.stderr
    assert_is_notice(_mail_to(smtp_server, 3, OLD))


def test_with_the_remote_mailer_the_notice_goes_out_in_process(
    make_app: Any, smtp_server: SMTPSink
) -> None:
    # The mailer does not answer (nothing listens on port 9): link emails wait for it,
    # while the notice, which its wire cannot carry, goes out through Flask-Mail.
    app = make_app(
        config={
            "CONFIRM_MAIL_MAILER_URL": "http://127.0.0.1:9/",
            "CONFIRM_MAIL_MAILER_SECRET": "mailer-secret-for-tests-0123456789abcdef",
            **NO_COOLDOWN,
        },
        transport=RemoteTransport(),
    )
    uid = _sign_up(app)
    _change(app, uid)
    [mail] = smtp_server.wait_for(1)
    assert_is_notice(mail)
    assert [row.status for row in _rows(app, "change")] == ["pending"]
    assert _rows(app, "change_notice")[0].status == "sent"
