"""From SMTP: a 5xx at RCPT or DATA marks the address; soft failures do not; the mark
stops resends, shows on the pending page and JSON answers, and a delivery clears it."""

from __future__ import annotations

import time
from typing import Any

import pytest
from flask import Flask

from flask_confirm_mail import deliver_due, outbox
from tests.bounces.conftest import RefusingHandler, mark_of, outbox_rows
from tests.support.smtp_server import SMTPSink

ADDRESS = "Ann.Typo@Example.ORG"


def _sign_up(app: Flask, address: str = ADDRESS) -> Any:
    client = app.test_client()
    assert client.post("/signup", data={"email": address}).status_code == 201
    return client


def test_550_at_data_marks_the_address_once_and_fires_the_signal(
    make_app: Any, smtp_server: SMTPSink, bounced_signals: list[dict[str, Any]]
) -> None:
    app = make_app()
    smtp_server.fail_next(1, 550)
    _sign_up(app)
    [row] = outbox_rows(app)
    assert row.status == outbox.DEAD, "a permanent refusal is not retried"
    mark = mark_of(app, "ann.typo@example.org")  # canonical: the local part's case ignored
    assert mark is not None
    assert (mark.kind, mark.source, mark.message_id) == ("bounce", "smtp", row.message_id)
    assert "550" in mark.reason
    assert mark.address == "ann.typo@example.org"
    [signal] = bounced_signals
    assert signal["email"] == "ann.typo@example.org"
    assert (signal["kind"], signal["source"], signal["message_id"]) == (
        "bounce",
        "smtp",
        row.message_id,
    )


def test_550_at_rcpt_marks_the_address(
    build_app: Any, refusing_server: tuple[RefusingHandler, int], tmp_path: Any
) -> None:
    handler, port = refusing_server
    handler.refused.add("ann.typo@example.org")
    app = build_app(f"sqlite:///{tmp_path / 'rcpt.db'}", config={"MAIL_PORT": port})
    _sign_up(app)
    _sign_up(app, "fine@example.org")
    mark = mark_of(app, ADDRESS)
    assert mark is not None and "refused the recipient (550)" in mark.reason
    assert mark_of(app, "fine@example.org") is None
    assert handler.received == [["fine@example.org"]]


def test_a_refused_sender_is_not_a_bounce_of_the_recipient(
    build_app: Any, refusing_server: tuple[RefusingHandler, int], tmp_path: Any
) -> None:
    handler, port = refusing_server
    handler.refuse_sender = True  # 550 to MAIL FROM: our sender is at fault, not the address
    app = build_app(f"sqlite:///{tmp_path / 'mail-from.db'}", config={"MAIL_PORT": port})
    _sign_up(app)
    [row] = outbox_rows(app)
    assert row.status == outbox.DEAD, "a 5xx is still not retried"
    assert mark_of(app, ADDRESS) is None
    handler.refuse_sender = False
    handler.refused.add("fine@example.org")  # control: a 550 at RCPT on the same server marks
    _sign_up(app, "fine@example.org")
    assert mark_of(app, "fine@example.org") is not None


@pytest.mark.parametrize("code", [421, 451, 452])
def test_a_soft_failure_marks_nothing_and_is_retried(
    make_app: Any, smtp_server: SMTPSink, code: int, bounced_signals: list[dict[str, Any]]
) -> None:
    app = make_app()
    smtp_server.fail_next(1, code)
    _sign_up(app)
    [row] = outbox_rows(app)
    assert row.status == outbox.PENDING and row.due_at is not None
    assert mark_of(app, ADDRESS) is None
    assert bounced_signals == []


def test_resends_to_a_marked_address_stop(make_app: Any, smtp_server: SMTPSink) -> None:
    app = make_app(config={"CONFIRM_MAIL_RESEND_COOLDOWN": 0})
    smtp_server.fail_next(1, 550)
    client = _sign_up(app)
    for spelling in (ADDRESS, "ann.typo@example.org"):
        assert client.post("/confirm/resend", data={"email": spelling}).status_code == 202
    assert len(outbox_rows(app)) == 1, "no email queued for a marked address"
    assert smtp_server.messages == []


def test_the_pending_page_and_json_tell_the_owner_and_offer_the_change(
    make_app: Any, smtp_server: SMTPSink
) -> None:
    app = make_app(config={"CONFIRM_MAIL_CHANGE_EMAIL_ENDPOINT": "members"})
    smtp_server.fail_next(1, 550)
    client = _sign_up(app)
    answer = client.get("/members", headers={"Accept": "application/json"})
    assert answer.status_code == 403
    body = answer.get_json()
    assert body["status"] == "unconfirmed"
    assert body["bounced"]["kind"] == "bounce"
    assert body["change_email_url"] == "/members"
    page = client.get("/confirm/resend").get_data(as_text=True)
    assert 'id="confirm-mail-bounced"' in page
    assert "Mail to your address bounced" in page
    assert 'href="/members"' in page


def test_no_notice_for_an_address_that_did_not_bounce(make_app: Any, smtp_server: SMTPSink) -> None:
    app = make_app()
    client = _sign_up(app)
    body = client.get("/members", headers={"Accept": "application/json"}).get_json()
    assert "bounced" not in body
    assert "confirm-mail-bounced" not in client.get("/confirm/resend").get_data(as_text=True)


def test_a_later_delivery_clears_the_mark(make_app: Any, smtp_server: SMTPSink) -> None:
    app = make_app()
    smtp_server.fail_next(1, 550)
    _sign_up(app, "ann@example.org")
    assert mark_of(app, "ann@example.org") is not None
    result = app.test_cli_runner().invoke(args=["confirm-mail", "send", "ann@example.org"])
    assert result.exit_code == 0, result.output
    smtp_server.wait_for(1)
    assert mark_of(app, "ann@example.org") is None


def _wait_for_mark(app: Flask, address: str) -> Any:
    deadline = time.monotonic() + 10
    while (mark := mark_of(app, address)) is None:
        assert time.monotonic() < deadline, "no mark within 10 s"
        time.sleep(0.02)
    return mark


def test_thread_delivery_marks_the_address(make_app: Any, smtp_server: SMTPSink) -> None:
    app = make_app(config={"CONFIRM_MAIL_DELIVERY": "thread"})
    smtp_server.fail_next(1, 554)
    _sign_up(app)
    assert "554" in _wait_for_mark(app, ADDRESS).reason


def test_worker_delivery_marks_the_address(make_app: Any, smtp_server: SMTPSink) -> None:
    app = make_app(config={"CONFIRM_MAIL_DELIVERY": "worker"})
    smtp_server.fail_next(1, 550)
    _sign_up(app)
    assert mark_of(app, ADDRESS) is None, "nothing sent before the worker runs"
    result = app.test_cli_runner().invoke(args=["confirm-mail", "worker", "--once"])
    assert result.exit_code == 0, result.output
    assert mark_of(app, ADDRESS) is not None


def test_the_bounces_command_lists_and_clears(make_app: Any, smtp_server: SMTPSink) -> None:
    app = make_app()
    runner = app.test_cli_runner()
    assert "No address is marked" in runner.invoke(args=["confirm-mail", "bounces"]).output
    smtp_server.fail_next(1, 550)
    _sign_up(app)
    listed = runner.invoke(args=["confirm-mail", "bounces"])
    assert listed.exit_code == 0
    assert "ann.typo@example.org: bounce from smtp" in listed.output
    cleared = runner.invoke(args=["confirm-mail", "bounces", "--clear", ADDRESS.upper()])
    assert cleared.exit_code == 0, cleared.output
    assert mark_of(app, ADDRESS) is None
    again = runner.invoke(args=["confirm-mail", "bounces", "--clear", ADDRESS])
    assert again.exit_code != 0 and "not marked" in again.output
    bad = runner.invoke(args=["confirm-mail", "bounces", "--clear", "not an address"])
    assert bad.exit_code == 2


def test_retry_never_requeues_a_message_to_a_marked_address(
    make_app: Any, smtp_server: SMTPSink
) -> None:
    app = make_app(config={"CONFIRM_MAIL_MAX_ATTEMPTS": 1})
    smtp_server.fail_next(1, 550)  # a bounce: the address is marked
    _sign_up(app)
    smtp_server.fail_next(1, 451)  # a soft failure on the last attempt: dead, no mark
    _sign_up(app, "soft@example.org")
    assert [row.status for row in outbox_rows(app)] == [outbox.DEAD] * 2
    runner = app.test_cli_runner()
    result = runner.invoke(args=["confirm-mail", "retry", "--all"])
    assert result.exit_code == 0
    assert "Requeued 1 message(s); 1 marked address(es) left out." in result.output
    with app.app_context():
        assert deliver_due() == 1
    bounced, soft = outbox_rows(app)
    assert (bounced.status, soft.status) == (outbox.DEAD, outbox.SENT)
    one = runner.invoke(args=["confirm-mail", "retry", str(bounced.id)])
    assert one.exit_code == 1 and "its address is marked" in one.output
    assert [m.rcpt_tos for m in smtp_server.messages] == [["soft@example.org"]]
