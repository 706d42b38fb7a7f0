"""PIPELINING (RFC 2920): MAIL, RCPT and DATA in one write to a server that offers it.

The server is aiosmtpd offering PIPELINING; :attr:`SMTPSink.reads` shows what arrived in
each read, so a test sees whether the three commands came together.
"""

from __future__ import annotations

import socketserver
import threading
from collections.abc import Iterator

import pytest

from flask_confirm_mail.errors import DeliveryError
from flask_confirm_mail.smtp import SMTPSession, SMTPSettings
from tests.support.smtp_server import SMTPSink
from tests.test_smtp_sink import RECIPIENT, SENDER, make_message, plain_settings

GROUPED = (b"mail from:<", b"rcpt to:<", b"data\r\n")


@pytest.fixture
def pipelining_server() -> Iterator[SMTPSink]:
    with SMTPSink(pipelining=True) as sink:
        yield sink


def _grouped_reads(sink: SMTPSink) -> list[bytes]:
    return [read for read in sink.reads if all(part in read.lower() for part in GROUPED)]


def test_envelope_and_data_go_in_one_write_and_the_mail_arrives(
    pipelining_server: SMTPSink,
) -> None:
    with SMTPSession(plain_settings(pipelining_server)) as session:
        for subject in ("first", "second"):
            session.send(SENDER, RECIPIENT, make_message(subject).as_bytes())
    mails = pipelining_server.wait_for(2)
    assert [mail.message["Subject"] for mail in mails] == ["first", "second"]
    assert [mail.rcpt_tos for mail in mails] == [[RECIPIENT]] * 2
    assert len(_grouped_reads(pipelining_server)) == 2  # one write per message


def test_a_server_without_pipelining_gets_one_command_at_a_time(smtp_server: SMTPSink) -> None:
    with SMTPSession(plain_settings(smtp_server)) as session:
        session.send(SENDER, RECIPIENT, make_message().as_bytes())
    assert len(smtp_server.wait_for(1)) == 1
    assert _grouped_reads(smtp_server) == []
    assert any(read.lower().startswith(b"mail from:<") for read in smtp_server.reads)


def test_a_refused_recipient_is_a_bounce_and_the_connection_goes_on(
    pipelining_server: SMTPSink,
) -> None:
    pipelining_server.refuse_recipient_next(1, 550)
    with SMTPSession(plain_settings(pipelining_server)) as session:
        with pytest.raises(DeliveryError) as refused:
            session.send(SENDER, RECIPIENT, make_message("refused").as_bytes())
        session.send(SENDER, RECIPIENT, make_message("after").as_bytes())
    assert refused.value.bounced and "refused the recipient (550)" in str(refused.value)
    assert [mail.message["Subject"] for mail in pipelining_server.wait_for(1)] == ["after"]
    assert len(_grouped_reads(pipelining_server)) == 2


def test_a_4xx_to_the_recipient_is_retried_later_and_backs_the_connection_off(
    pipelining_server: SMTPSink,
) -> None:
    now = [100.0]
    pipelining_server.refuse_recipient_next(1, 451)
    with SMTPSession(plain_settings(pipelining_server), clock=lambda: now[0]) as session:
        with pytest.raises(DeliveryError) as deferred:
            session.send(SENDER, RECIPIENT, make_message().as_bytes())
        assert session.resume_at > now[0]
        now[0] = session.resume_at
        session.send(SENDER, RECIPIENT, make_message("retried").as_bytes())
    assert not deferred.value.permanent and not deferred.value.bounced
    assert [mail.message["Subject"] for mail in pipelining_server.wait_for(1)] == ["retried"]


def test_a_connection_lost_after_the_pipelined_message_is_outcome_unknown(
    pipelining_server: SMTPSink,
) -> None:
    pipelining_server.drop_after_data_next(1)
    with SMTPSession(plain_settings(pipelining_server)) as session:
        with pytest.raises(DeliveryError) as lost:
            session.send(SENDER, RECIPIENT, make_message("maybe").as_bytes())
        session.send(SENDER, RECIPIENT, make_message("reopened").as_bytes())
    assert lost.value.outcome_unknown
    subjects = [mail.message["Subject"] for mail in pipelining_server.wait_for(2)]
    assert subjects == ["maybe", "reopened"]


class _TakesDataAfterARefusal(socketserver.StreamRequestHandler):
    """A server out of line with RFC 2920: it refuses the recipient, then answers 354 to
    DATA anyway (a unit-test fake for that one case; aiosmtpd answers 503)."""

    def handle(self) -> None:
        self.wfile.write(b"220 fake ESMTP\r\n")
        for line in self.rfile:
            verb = line[:4].upper()
            if verb == b"EHLO":
                self.wfile.write(b"250-fake\r\n250 PIPELINING\r\n")
            elif verb == b"RCPT":
                self.wfile.write(b"550 5.1.1 No such user\r\n")
            elif verb == b"DATA":
                self.wfile.write(b"354 Go ahead\r\n")
                body = [next(self.rfile)]
                while body[-1] != b".\r\n":
                    body.append(next(self.rfile))
                self.server.bodies.append(b"".join(body))  # type: ignore[attr-defined]
                self.wfile.write(b"554 5.5.1 No valid recipients\r\n")
            elif verb == b"QUIT":
                self.wfile.write(b"221 Bye\r\n")
                return
            else:
                self.wfile.write(b"250 OK\r\n")


def test_data_taken_after_a_refused_recipient_is_ended_with_an_empty_message() -> None:
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), _TakesDataAfterARefusal) as server:
        server.bodies = []  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        settings = SMTPSettings(host="127.0.0.1", port=server.server_address[1], timeout=5.0)
        try:
            with SMTPSession(settings) as session:
                for _ in range(2):  # the same connection, still in step after the first
                    with pytest.raises(DeliveryError) as refused:
                        session.send(SENDER, RECIPIENT, make_message().as_bytes())
                    assert refused.value.bounced and "(550)" in str(refused.value)
        finally:
            server.shutdown()
    assert server.bodies == [b".\r\n", b".\r\n"]  # type: ignore[attr-defined]
