"""The change notice's link (issue 34): the old address cancels a pending change, once, with
a POST; it confirms nothing, and no confirm link cancels."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask

from flask_confirm_mail import email_change_cancelled
from tests.apps import db
from tests.conftest import link_from
from tests.support.smtp_server import SMTPSink
from tests.test_change_notice import NO_COOLDOWN, OLD, _change, _mail_to, _sign_up

CANCEL_RE = re.compile(r"https://app\.example\.com/confirm/cancel/[A-Za-z0-9_.-]+")
NEW = "newcomer@example.net"
JSON = {"Accept": "application/json"}


def cancel_link(mail: Any) -> str:
    """The notice's cancel link (the same in both parts); its path on the test client."""
    text = mail.message.get_body(("plain",)).get_content()
    html = mail.message.get_body(("html",)).get_content()
    [link] = set(CANCEL_RE.findall(text))
    assert link in html
    return link.removeprefix("https://app.example.com")


def _pending(app: Flask, uid: int) -> tuple[str, str | None]:
    with app.app_context():
        user = db.session.get(app.extensions["confirm_mail"].columns.model, uid)
        return user.email, user.pending_email


@pytest.fixture
def changed(make_app: Any, smtp_server: SMTPSink) -> tuple[Flask, int, str, str]:
    """A confirmed account that asked for NEW: (app, id, cancel path, the new address's path)."""
    app = make_app(config=NO_COOLDOWN)
    uid = _sign_up(app)
    smtp_server.wait_for(1)
    _change(app, uid)
    notice = _mail_to(smtp_server, 3, OLD)
    [link_mail] = [m for m in smtp_server.messages if m.rcpt_tos == [NEW]]
    confirm = link_from(link_mail).removeprefix("https://app.example.com")
    return app, uid, cancel_link(notice), confirm


@pytest.fixture
def cancelled() -> Any:
    calls: list[dict[str, Any]] = []

    def receive(sender: Any, **kwargs: Any) -> None:
        calls.append({**kwargs, "user_id": kwargs["user"].id})

    email_change_cancelled.connect(receive)
    yield calls
    email_change_cancelled.disconnect(receive)


def test_the_notice_link_cancels_the_change_once(changed: Any, cancelled: list[Any]) -> None:
    app, uid, path, confirm = changed
    client = app.test_client()
    page = client.get(path)  # a mail scanner's fetch: a button, nothing changed
    assert page.status_code == 200 and b"Cancel the change" in page.data
    assert client.get(path, headers=JSON).json["status"] == "cancel"
    assert _pending(app, uid) == (OLD, NEW) and not cancelled
    answer = client.post(path, headers=JSON)
    assert (answer.status_code, answer.json["status"]) == (200, "cancelled")
    assert _pending(app, uid) == (OLD, None)
    assert len(cancelled) == 1 and cancelled[0]["old_email"] == OLD
    assert (cancelled[0]["new_email"], cancelled[0]["user_id"]) == (NEW, uid)
    again = client.post(path, headers=JSON)  # single use
    assert (again.status_code, again.json["status"]) == (200, "nothing_pending")
    assert b"no change of address to cancel" in client.post(path).data
    assert client.post(confirm, headers=JSON).json["status"] == "invalid"  # the new link is void
    assert _pending(app, uid) == (OLD, None) and len(cancelled) == 1


def test_a_confirm_link_cannot_cancel_and_a_cancel_link_cannot_confirm(changed: Any) -> None:
    app, uid, path, confirm = changed
    client = app.test_client()
    confirm_token, cancel_token = confirm.rsplit("/", 1)[1], path.rsplit("/", 1)[1]
    answer = client.post(f"/confirm/cancel/{confirm_token}", headers=JSON)
    assert (answer.status_code, answer.json["status"]) == (400, "invalid")
    assert client.post(f"/confirm/{cancel_token}", headers=JSON).json["status"] == "invalid"
    assert client.get(f"/confirm/{cancel_token}", headers=JSON).json["status"] == "invalid"
    assert _pending(app, uid) == (OLD, NEW)
    assert client.post(confirm, headers=JSON).json["status"] == "confirmed"
    assert client.post(path, headers=JSON).json["status"] == "nothing_pending"  # too late
    assert _pending(app, uid) == (NEW, None)


def test_a_cancel_link_for_another_account_or_address_fails(changed: Any) -> None:
    app, uid, path, _ = changed
    signer = app.extensions["confirm_mail"].signer
    client = app.test_client()
    for user_id, old in ((str(uid + 1), OLD), (str(uid), "other@example.org")):
        token = signer.issue(user_id, old, cancel=True)
        answer = client.post(f"/confirm/cancel/{token}", headers=JSON)
        assert (answer.status_code, answer.json["status"]) == (200, "nothing_pending")
        assert b"no change of address to cancel" in client.post(f"/confirm/cancel/{token}").data
    forged = client.post("/confirm/cancel/" + "x" * 40, headers=JSON)
    assert (forged.status_code, forged.json["status"]) == (400, "invalid")
    assert _pending(app, uid) == (OLD, NEW)


def test_an_expired_cancel_link(changed: Any, clock: Any) -> None:
    app, uid, _, _ = changed
    signer = app.extensions["confirm_mail"].signer
    token = signer.issue(str(uid), OLD, cancel=True)
    clock.shift(signer.lifetime.total_seconds() + 120)
    answer = app.test_client().post(f"/confirm/cancel/{token}", headers=JSON)
    assert (answer.status_code, answer.json["status"]) == (410, "expired")
    assert _pending(app, uid) == (OLD, NEW)


def test_the_notice_link_cancels_a_later_change_that_got_no_notice(
    make_app: Any, smtp_server: SMTPSink, cancelled: list[Any]
) -> None:
    """One notice per cooldown: a second change right after the first gets none, so the
    first notice's link must stop it too (else changing twice would dodge the owner)."""
    app = make_app()  # the default cooldown: 60 s
    uid = _sign_up(app)
    smtp_server.wait_for(1)
    _change(app, uid)
    path = cancel_link(_mail_to(smtp_server, 3, OLD))
    _change(app, uid, "second@example.net")
    assert _pending(app, uid) == (OLD, "second@example.net")
    smtp_server.wait_for(4)  # the second change's link, and no second notice
    assert [m.rcpt_tos for m in smtp_server.messages].count([OLD]) == 2  # sign-up and notice
    answer = app.test_client().post(path, headers=JSON)
    assert (
        answer.json["status"] == "cancelled" and cancelled[0]["new_email"] == "second@example.net"
    )
    assert _pending(app, uid) == (OLD, None)


def test_the_legacy_shape_offers_no_cancel_link(make_app: Any, smtp_server: SMTPSink) -> None:
    app = make_app(shape="legacy", config=NO_COOLDOWN)
    uid = _sign_up(app)
    smtp_server.wait_for(1)
    _change(app, uid)
    text = _mail_to(smtp_server, 3, OLD).message.get_body(("plain",)).get_content()
    assert "/confirm/" not in text and "cancel" not in text.lower()
    # The address was replaced at once: there is no pending change for any link to cancel.
    token = app.extensions["confirm_mail"].signer.issue(str(uid), OLD, cancel=True)
    answer = app.test_client().post(f"/confirm/cancel/{token}", headers=JSON)
    assert (answer.status_code, answer.json["status"]) == (200, "nothing_pending")
