"""The benchmarks' SMTP server (``benchmarks/smtp_sink.py``) speaks enough SMTP for every
sender measured, counts each message once, and answers DATA after its delay."""

from __future__ import annotations

import smtplib
import socket
import time
from collections.abc import Iterator
from email.message import EmailMessage

import pytest

from benchmarks.smtp_sink import SinkProcess
from flask_confirm_mail.smtp import SMTPSession, SMTPSettings, build_message


@pytest.fixture
def sink() -> Iterator[SinkProcess]:
    process = SinkProcess(delay=0.0).start()
    try:
        yield process
    finally:
        process.stop()


def _message(recipient: str) -> EmailMessage:
    body = ".leading dot\n..two dots\n.\nlast line"
    return build_message(
        subject="Confirm", sender=("Bench", "noreply@example.org"), recipient=recipient,
        text=body, html=f"<p>{body}</p>", message_id="<1@example.org>",
    )  # fmt: skip


def test_smtplib_sends_several_messages_on_one_connection(sink: SinkProcess) -> None:
    sink.arrivals()
    with smtplib.SMTP(sink.host, sink.port, timeout=5) as client:
        assert client.ehlo()[0] == 250 and client.has_extn("size")
        for index in range(3):
            message = _message(f"c{index}@example.org").as_bytes()
            refused = client.sendmail("a@example.org", [f"c{index}@example.org"], message)
            assert refused == {}
        assert client.noop()[0] == 250 and client.rset()[0] == 250
        assert client.docmd("VRFY", "someone")[0] == 502
    assert sink.count() == 3
    assert set(sink.arrivals()) == {"c0@example.org", "c1@example.org", "c2@example.org"}


def test_our_session_sends_lines_that_start_with_a_dot(sink: SinkProcess) -> None:
    with SMTPSession(SMTPSettings(host=sink.host, port=sink.port, security="none")) as session:
        session.send(_message("dots@example.org"))
        session.send(_message("dots2@example.org"))
    assert sink.count() == 2


def test_data_is_answered_after_the_delay(sink: SinkProcess) -> None:
    sink.set_delay(0.3)
    with smtplib.SMTP(sink.host, sink.port, timeout=5) as client:
        started = time.monotonic()
        message = _message("slow@example.org").as_bytes()
        client.sendmail("a@example.org", ["slow@example.org"], message)
        assert time.monotonic() - started >= 0.29
    assert sink.count() == 1


def test_it_offers_pipelining_and_answers_grouped_commands_in_one_write(
    sink: SinkProcess,
) -> None:
    """Like the large providers: PIPELINING offered, a group's answers sent together."""
    with socket.create_connection((sink.host, sink.port), timeout=5) as raw:
        reader = raw.makefile("rb")
        assert reader.readline().startswith(b"220")
        raw.sendall(b"EHLO bench\r\n")
        offered = [reader.readline() for _ in range(5)]
        assert b"250-PIPELINING\r\n" in offered
        raw.sendall(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<p@example.org>\r\nDATA\r\n")
        time.sleep(0.2)  # let all three answers arrive before one read takes them
        answers = raw.recv(4096)
        assert answers.count(b"\r\n") == 3 and answers.startswith(b"250") and b"354" in answers
        raw.sendall(b"Subject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n")
        assert reader.readline().startswith(b"250")
    assert sink.count() == 1
