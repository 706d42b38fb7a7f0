"""The thin SMTP session: refusals and lost connections as delivery errors, a kept
connection reused and replaced once when the server dropped it, one connection per
sending thread, and a socket timeout."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

import pytest

from flask_confirm_mail import smtp
from flask_confirm_mail.errors import DeliveryError
from flask_confirm_mail.smtp import SMTPSender, SMTPSession, SMTPSettings
from tests.support.smtp_server import SMTPSink
from tests.test_smtp_sink import RECIPIENT, SENDER, make_message, plain_settings


def _subjects(sink: SMTPSink, count: int) -> list[str]:
    return [str(mail.message["Subject"]) for mail in sink.wait_for(count)]


def _opened(sink: SMTPSink, action: Callable[[], object]) -> int:
    """How many connections ``action`` opened to ``sink``."""
    before = sink.connections
    action()
    return sink.connections - before


def test_messages_go_on_one_kept_connection(smtp_server: SMTPSink) -> None:
    def send_three() -> None:
        with SMTPSession(plain_settings(smtp_server)) as session:
            for subject in ("first", "second", "third"):
                session.send(make_message(subject))

    assert _opened(smtp_server, send_three) == 1
    assert _subjects(smtp_server, 3) == ["first", "second", "third"]
    envelopes = [(m.mail_from, m.rcpt_tos) for m in smtp_server.messages]
    assert envelopes == [(SENDER, [RECIPIENT])] * 3


@pytest.mark.parametrize(("code", "bounced"), [(550, True), (451, False)])
def test_a_refused_recipient_and_the_connection_goes_on(
    smtp_server: SMTPSink, code: int, bounced: bool
) -> None:
    smtp_server.refuse_recipient_next(1, code)
    refusals: list[DeliveryError] = []

    def send_two() -> None:
        with SMTPSession(plain_settings(smtp_server)) as session:
            with pytest.raises(DeliveryError) as refused:
                session.send(make_message("refused"))
            refusals.append(refused.value)
            session.send(make_message("after"))

    assert _opened(smtp_server, send_two) == 1
    [refusal] = refusals
    assert f"refused the recipient ({code})" in str(refusal)
    assert refusal.bounced is bounced and refusal.permanent is bounced
    assert _subjects(smtp_server, 1) == ["after"]


def test_a_connection_lost_after_the_message_is_outcome_unknown(smtp_server: SMTPSink) -> None:
    smtp_server.drop_after_data_next(1)
    with SMTPSession(plain_settings(smtp_server)) as session:
        with pytest.raises(DeliveryError) as lost:
            session.send(make_message("maybe"))
        session.send(make_message("reopened"))
    assert lost.value.outcome_unknown and not lost.value.permanent
    assert "outcome unknown" in str(lost.value)
    assert _subjects(smtp_server, 2) == ["maybe", "reopened"]


def test_a_kept_connection_the_server_dropped_is_replaced_once(smtp_server: SMTPSink) -> None:
    with SMTPSession(plain_settings(smtp_server)) as session:
        session.send(make_message("before"))
        smtp_server.stop()  # drops the kept connection
        smtp_server.start()
        # No error: sent on a new connection.
        assert _opened(smtp_server, lambda: session.send(make_message("after"))) == 1
    assert _subjects(smtp_server, 2) == ["before", "after"]


def _open_connections(sink: SMTPSink, expected: int) -> int:
    """The connections open on the sink's side, once they settle at ``expected`` (or 5 s)."""
    controller = sink._controller
    assert controller is not None
    deadline = time.monotonic() + 5
    while len(controller._open_connections) != expected and time.monotonic() < deadline:
        time.sleep(0.01)
    return len(controller._open_connections)


def test_the_pool_opens_a_connection_per_send_in_flight_and_close_closes_them_all(
    smtp_server: SMTPSink,
) -> None:
    sender = SMTPSender(plain_settings(smtp_server))
    errors: list[BaseException] = []
    smtp_server.delay = 0.3  # both threads' sends are in flight at once

    def run(name: str) -> None:
        try:
            for n in range(3):
                sender.send(make_message(f"{name}/{n}"))
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    def send_from_two_threads() -> None:
        threads = [threading.Thread(target=run, args=(name,)) for name in ("a", "b")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    assert _opened(smtp_server, send_from_two_threads) == 2
    assert errors == [] and len(smtp_server.wait_for(6)) == 6
    assert _open_connections(smtp_server, 2) == 2  # kept after the threads ended
    smtp_server.delay = 0
    # Another thread's send takes a kept connection.
    assert _opened(smtp_server, lambda: sender.send(make_message("main"))) == 0
    sender.close()
    assert _open_connections(smtp_server, 0) == 0
    # The next send connects anew.
    assert _opened(smtp_server, lambda: sender.send(make_message("again"))) == 1
    sender.close()


def test_a_refused_connection_waits_for_a_kept_one_and_none_refuses_the_send(
    smtp_server: SMTPSink,
) -> None:
    sender = SMTPSender(plain_settings(smtp_server))
    smtp_server.max_connections = 1
    smtp_server.delay = 0.3
    errors: list[BaseException] = []

    def run(name: str) -> None:
        try:
            sender.send(make_message(name))
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(name,)) for name in ("a", "b", "c")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and smtp_server.refused_connections >= 1
    assert sorted(_subjects(smtp_server, 3)) == ["a", "b", "c"]
    sender.close()
    smtp_server.stop()  # nothing listens: with no connection open the send fails
    with pytest.raises(DeliveryError) as refused:
        sender.send(make_message("down"))
    assert refused.value.connection_refused and not refused.value.permanent
    sender.close()


def test_a_silent_server_times_out() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never answers
        port = silent.getsockname()[1]
        settings = SMTPSettings(host="127.0.0.1", port=port, timeout=0.3)
        started = time.monotonic()
        with pytest.raises(DeliveryError) as failed, SMTPSession(settings) as session:
            session.send(make_message())
        assert time.monotonic() - started < 5
    assert not failed.value.permanent and f"127.0.0.1:{port} failed" in str(failed.value)


def test_send_returns_the_final_reply_and_its_last_word_is_the_providers_id(
    smtp_server: SMTPSink,
) -> None:
    smtp_server.reply_with_id = True
    with SMTPSession(plain_settings(smtp_server)) as session:
        reply = session.send(make_message("with an id"))
    [mail] = smtp_server.wait_for(1)
    assert reply == f"Ok {mail.reply_id}"
    assert smtp.provider_message_id(reply) == mail.reply_id


SES_ID = "0100018c2f3a9f0e-6d1c7a52-2d3f-4b8e-9c1a-5e6f7a8b9c0d-000000"


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (f"Ok {SES_ID}", SES_ID),  # Amazon SES
        ("Ok: queued as 7sBCdJ6vRFq0DyQQ6AD5ZQ", "7sBCdJ6vRFq0DyQQ6AD5ZQ"),  # SendGrid
        ("2.0.0 Ok: queued as 4Vq1Xk2Bz8z9", "4Vq1Xk2Bz8z9"),  # Postfix's queue id
        ("2.0.0 Ok <0100018c-a1@mail.example>", "0100018c-a1@mail.example"),
        ("2.0.0 OK: queued", None),  # the test server's default
        ("2.0.0", None),  # a status, not an id
        ("Great success", None),
        ("", None),
        ("Ok " + "7" * 256, None),  # longer than the column
    ],
)
def test_the_providers_id_is_read_from_the_final_reply(reply: str, expected: str | None) -> None:
    assert smtp.provider_message_id(reply) == expected
