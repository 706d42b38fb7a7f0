"""Email change, confirmed_required, concurrent confirms, the CLI."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from flask import Flask

from flask_confirm_mail import change_email, email_confirmed, is_confirmed, send_confirmation
from tests.apps import db, user_model
from tests.conftest import link_from
from tests.support.smtp_server import SMTPSink


def _signup(app: Flask, email: str) -> int:
    response = app.test_client().post("/signup", data={"email": email})
    assert response.status_code == 201
    return int(response.json["id"])


def _path(link: str) -> str:
    return link.removeprefix("https://app.example.com")


def test_email_change_keeps_old_login_until_confirmed(make_app: Any, smtp_server: SMTPSink) -> None:
    app = make_app(config={"CONFIRM_MAIL_RESEND_COOLDOWN": 0})  # old@ was mailed just now
    uid = _signup(app, "old@example.org")
    first_link = _path(link_from(smtp_server.wait_for(1)[0]))
    assert app.test_client().post(first_link).status_code == 200
    model = user_model("mixin")
    with app.app_context():
        user = db.session.get(model, uid)
        assert change_email(user, "New@Example.ORG") is True
        db.session.commit()
        assert user.email == "old@example.org" and user.pending_email == "new@example.org"
        assert is_confirmed(user)
    # The old address also gets the change notice (tests/test_change_notice.py).
    [mail] = [m for m in smtp_server.wait_for(3) if m.rcpt_tos == ["new@example.org"]]
    assert mail.message["Subject"] == "Confirm your new email address"
    answer = app.test_client().post(_path(link_from(mail)), headers={"Accept": "application/json"})
    assert answer.json["status"] == "confirmed"
    with app.app_context():
        user = db.session.get(model, uid)
        assert (user.email, user.pending_email) == ("new@example.org", None)
        assert is_confirmed(user)
    old = app.test_client().post(first_link, headers={"Accept": "application/json"})
    assert old.json["status"] == "invalid", "a link for the old address confirms nothing now"


def test_legacy_table_change_replaces_and_unconfirms(make_app: Any, smtp_server: SMTPSink) -> None:
    app = make_app(shape="legacy")
    uid = _signup(app, "old@example.org")
    first_link = _path(link_from(smtp_server.wait_for(1)[0]))
    model = user_model("legacy")
    with app.app_context():
        user = db.session.get(model, uid)
        change_email(user, "new@example.org")
        db.session.commit()
        assert (user.aut_email, user.aut_confirmed) == ("new@example.org", False)
    # The link to the new address only: the old one was never confirmed, so it gets no notice.
    mails = smtp_server.wait_for(2)[1:]
    [mail] = [m for m in mails if m.rcpt_tos == ["new@example.org"]]
    new_link = _path(link_from(mail))
    client = app.test_client()
    assert client.post(first_link, headers={"Accept": "application/json"}).json["status"] == (
        "invalid"
    )
    assert client.post(new_link, headers={"Accept": "application/json"}).json["status"] == (
        "confirmed"
    )
    with app.app_context():
        assert db.session.get(model, uid).aut_confirmed is True


def test_confirmed_required(make_app: Any, shape: str, smtp_server: SMTPSink) -> None:
    app = make_app(shape=shape)
    client = app.test_client()
    assert client.get("/members").status_code == 401
    client.post("/signup", data={"email": "member@example.org"})
    page = client.get("/members")
    assert page.status_code == 302 and page.headers["Location"] == "/confirm/resend"
    with client.session_transaction() as session:
        assert ("warning", "Please confirm your email address first.") in session["_flashes"]
    answer = client.get("/members", headers={"Accept": "application/json"})
    assert answer.status_code == 403
    assert answer.json["status"] == "unconfirmed" and answer.json["error"] == "email_unconfirmed"
    client.post(_path(link_from(smtp_server.wait_for(1)[0])))
    assert client.get("/members").data == b"members only"


def test_unconfirmed_access_for_lets_a_new_user_in_for_a_while(
    make_app: Any, shape: str, smtp_server: SMTPSink, clock: Any
) -> None:
    app = make_app(shape=shape, config={"CONFIRM_MAIL_UNCONFIRMED_ACCESS_FOR": 3600})
    client = app.test_client()
    client.post("/signup", data={"email": "early@example.org"})
    clock.shift(3599)
    assert client.get("/members").data == b"members only"
    assert client.get("/members", headers={"Accept": "application/json"}).status_code == 200
    clock.shift(2)  # the hour since sign-up is over: confirmation is asked for
    page = client.get("/members")
    assert page.status_code == 302 and page.headers["Location"] == "/confirm/resend"
    assert client.get("/members", headers={"Accept": "application/json"}).status_code == 403
    client.post(_path(link_from(smtp_server.wait_for(1)[0])))
    assert client.get("/members").data == b"members only"


def test_grace_period_counts_from_sign_up_not_from_a_resend(
    make_app: Any, smtp_server: SMTPSink, clock: Any
) -> None:
    app = make_app(config={"CONFIRM_MAIL_UNCONFIRMED_ACCESS_FOR": 600})
    client = app.test_client()
    client.post("/signup", data={"email": "late@example.org"})
    clock.shift(590)
    client.post("/confirm/resend", data={"email": "late@example.org"}, buffered=True)
    assert len(smtp_server.wait_for(2)) == 2
    clock.shift(20)
    assert client.get("/members").status_code == 302


@pytest.mark.parametrize("workers", [2, 8])
def test_concurrent_confirms_confirm_once(
    make_app: Any, smtp_server: SMTPSink, workers: int
) -> None:
    app = make_app()
    _signup(app, "race@example.org")
    path = _path(link_from(smtp_server.wait_for(1)[0]))
    fired: list[str] = []
    statuses: list[str] = []
    barrier = threading.Barrier(workers)

    def on_confirmed(sender: Flask, **kwargs: Any) -> None:
        fired.append(kwargs["email"])

    def confirm() -> None:
        client = app.test_client()
        barrier.wait()
        response = client.post(path, headers={"Accept": "application/json"})
        statuses.append(response.json["status"])

    with email_confirmed.connected_to(on_confirmed, app):
        threads = [threading.Thread(target=confirm) for _ in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert sorted(statuses) == ["already_confirmed"] * (workers - 1) + ["confirmed"]
    assert fired == ["race@example.org"]


def test_send_confirmation_goes_out_after_commit(make_app: Any, smtp_server: SMTPSink) -> None:
    app = make_app()
    model = user_model("mixin")
    with app.app_context():
        user = model(email="plain@example.org")
        db.session.add(user)
        db.session.commit()
        send_confirmation(user, context={"note": "<b>hi</b>"})
        assert smtp_server.messages == [], "nothing is sent before the commit"
        db.session.commit()
    [mail] = smtp_server.wait_for(1)
    assert mail.rcpt_tos == ["plain@example.org"]


def test_cli_send_confirm_status_outbox_retry(make_app: Any, smtp_server: SMTPSink) -> None:
    app = make_app()
    runner = app.test_cli_runner()
    _signup(app, "cli@example.org")
    smtp_server.wait_for(1)

    result = runner.invoke(args=["confirm-mail", "send", "cli@example.org"])
    assert result.exit_code == 0, result.output
    assert "sent" in result.output
    assert len(smtp_server.wait_for(2)) == 2

    result = runner.invoke(args=["confirm-mail", "status", "cli@example.org"])
    assert "unconfirmed" in result.output and "2 attempt" not in result.output

    result = runner.invoke(args=["confirm-mail", "confirm", "cli@example.org"])
    assert result.output.strip() == "Confirmed."
    result = runner.invoke(args=["confirm-mail", "status", "cli@example.org"])
    assert ": confirmed." in result.output
    result = runner.invoke(args=["confirm-mail", "send", "cli@example.org"])
    assert result.exit_code != 0 and "already confirmed" in result.output

    result = runner.invoke(args=["confirm-mail", "status", "nobody@example.org"])
    assert result.exit_code != 0 and "No user" in result.output
    result = runner.invoke(args=["confirm-mail", "status", "bad address"])
    assert result.exit_code == 2

    result = runner.invoke(args=["confirm-mail", "outbox"])
    assert "sent     2" in result.output
    result = runner.invoke(args=["confirm-mail", "retry"])
    assert result.exit_code == 2
    result = runner.invoke(args=["confirm-mail", "retry", "--all"])
    assert "Requeued 0" in result.output
    result = runner.invoke(args=["confirm-mail", "retry", "999"])
    assert result.exit_code == 1 and "No dead message has the id 999" in result.output
