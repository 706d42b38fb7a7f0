"""The test SMTP server itself, driven by smtplib and by the package's SMTPSession."""

from __future__ import annotations

import smtplib
import ssl
import threading
import time
from email.message import EmailMessage

import pytest
import sqlalchemy as sa

from flask_confirm_mail.errors import DeliveryError
from flask_confirm_mail.smtp import SMTPSession, SMTPSettings
from tests.support.fixtures import SECURE_SMTP_AUTH
from tests.support.smtp_server import SMTPSink

SENDER = "noreply@catloader.test"
RECIPIENT = "ada@example.test"


def make_message(subject: str = "Confirm and access CatLoader") -> EmailMessage:
    message = EmailMessage()
    message["From"] = f"CatLoader <{SENDER}>"
    message["To"] = RECIPIENT
    message["Subject"] = subject
    message.set_content("Open https://catloader.test/confirm/abc to confirm.")
    message.add_alternative(
        '<p>Open <a href="https://catloader.test/confirm/abc">this link</a>.</p>',
        subtype="html",
    )
    return message


def plain_settings(sink: SMTPSink) -> SMTPSettings:
    return SMTPSettings(host=sink.host, port=sink.port, timeout=5.0)


def secure_settings(sink: SMTPSink, password: str = SECURE_SMTP_AUTH[1]) -> SMTPSettings:
    return SMTPSettings(
        host=sink.host,
        port=sink.port,
        security="starttls",
        username=SECURE_SMTP_AUTH[0],
        password=password,
        timeout=5.0,
        ssl_context=sink.ssl_context,
    )


def send(settings: SMTPSettings, subject: str = "Confirm and access CatLoader") -> None:
    with SMTPSession(settings) as session:
        session.send(make_message(subject))


def test_plain_delivery_is_received_and_parsed(smtp_server: SMTPSink) -> None:
    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=5) as client:
        client.send_message(make_message())

    [mail] = smtp_server.wait_for(1)
    assert mail.mail_from == SENDER
    assert mail.rcpt_tos == [RECIPIENT]
    assert mail.message["Subject"] == "Confirm and access CatLoader"
    assert mail.message.get_content_type() == "multipart/alternative"
    text = mail.message.get_body(("plain",))
    html = mail.message.get_body(("html",))
    assert text is not None and "https://catloader.test/confirm/abc" in text.get_content()
    assert html is not None and 'href="https://catloader.test/confirm/abc"' in html.get_content()
    assert b"Subject: Confirm and access CatLoader" in mail.raw


def test_one_session_sends_many_messages_in_order(smtp_server: SMTPSink) -> None:
    with SMTPSession(plain_settings(smtp_server)) as session:
        for n in range(5):
            session.send(make_message(f"message {n}"))

    received = smtp_server.wait_for(5)
    assert [mail.message["Subject"] for mail in received] == [f"message {n}" for n in range(5)]
    smtp_server.clear()
    assert smtp_server.messages == []


def test_several_clients_at_once(smtp_server: SMTPSink) -> None:
    clients, per_client = 4, 50
    errors: list[BaseException] = []

    def run(client: int) -> None:
        try:
            with SMTPSession(plain_settings(smtp_server)) as session:
                for n in range(per_client):
                    session.send(make_message(f"{client}/{n}"))
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(c,)) for c in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    subjects = {mail.message["Subject"] for mail in smtp_server.wait_for(clients * per_client)}
    assert subjects == {f"{c}/{n}" for c in range(clients) for n in range(per_client)}


def test_wait_for_times_out_with_a_clear_message(smtp_server: SMTPSink) -> None:
    with pytest.raises(AssertionError, match=r"received 0 message\(s\) .* expected at least 1"):
        smtp_server.wait_for(1, timeout=0.05)


def test_starttls_and_auth_succeed(secure_smtp_server: SMTPSink) -> None:
    send(secure_settings(secure_smtp_server))

    [mail] = secure_smtp_server.wait_for(1)
    assert mail.rcpt_tos == [RECIPIENT]


def test_smtplib_can_use_the_ssl_context_and_credentials(secure_smtp_server: SMTPSink) -> None:
    with smtplib.SMTP("localhost", secure_smtp_server.port, timeout=5) as client:
        client.starttls(context=secure_smtp_server.ssl_context)
        client.login(*SECURE_SMTP_AUTH)
        client.send_message(make_message())

    assert len(secure_smtp_server.wait_for(1)) == 1


def test_wrong_password_is_a_delivery_error(secure_smtp_server: SMTPSink) -> None:
    with pytest.raises(DeliveryError, match="535"):
        send(secure_settings(secure_smtp_server, password="wrong"))
    assert secure_smtp_server.messages == []


def test_the_certificate_is_not_trusted_without_the_sinks_context(
    secure_smtp_server: SMTPSink,
) -> None:
    settings = SMTPSettings(
        host=secure_smtp_server.host,
        port=secure_smtp_server.port,
        security="starttls",
        username=SECURE_SMTP_AUTH[0],
        password=SECURE_SMTP_AUTH[1],
        timeout=5.0,
    )
    with pytest.raises(DeliveryError, match="SSLCertVerificationError"):
        send(settings)


def test_plaintext_mail_is_refused(secure_smtp_server: SMTPSink) -> None:
    with smtplib.SMTP(secure_smtp_server.host, secure_smtp_server.port, timeout=5) as client:
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            client.send_message(make_message())
    assert refused.value.smtp_code == 530


def test_plaintext_login_is_refused(secure_smtp_server: SMTPSink) -> None:
    settings = SMTPSettings(
        host=secure_smtp_server.host,
        port=secure_smtp_server.port,
        username=SECURE_SMTP_AUTH[0],
        password=SECURE_SMTP_AUTH[1],
        timeout=5.0,
    )
    with pytest.raises(DeliveryError):
        send(settings)
    assert secure_smtp_server.messages == []


@pytest.mark.parametrize(("code", "permanent"), [(451, False), (421, False), (554, True)])
def test_fail_next_then_the_next_send_works(
    smtp_server: SMTPSink, code: int, permanent: bool
) -> None:
    smtp_server.fail_next(1, code=code)
    with SMTPSession(plain_settings(smtp_server)) as session:
        with pytest.raises(DeliveryError) as failed:
            session.send(make_message("refused"))
        session.send(make_message("accepted"))

    assert failed.value.permanent is permanent
    assert str(code) in str(failed.value)
    [mail] = smtp_server.wait_for(1)
    assert mail.message["Subject"] == "accepted"


def test_fail_next_counts(smtp_server: SMTPSink) -> None:
    smtp_server.fail_next(2)
    outcomes = []
    for n in range(3):
        try:
            send(plain_settings(smtp_server), f"try {n}")
        except DeliveryError:
            outcomes.append("failed")
        else:
            outcomes.append("sent")
    assert outcomes == ["failed", "failed", "sent"]


def test_fail_next_refuses_codes_that_are_not_failures(smtp_server: SMTPSink) -> None:
    with pytest.raises(ValueError, match="4xx or 5xx"):
        smtp_server.fail_next(1, code=250)


def test_stop_and_start_make_an_outage_on_the_same_port(smtp_server: SMTPSink) -> None:
    port = smtp_server.port
    with SMTPSession(plain_settings(smtp_server)) as session:
        session.send(make_message("before"))
        smtp_server.stop()
        with pytest.raises(DeliveryError) as during:
            session.send(make_message("during"))
        smtp_server.start()
        session.send(make_message("after"))

    assert during.value.permanent is False
    assert smtp_server.port == port
    received = smtp_server.wait_for(2)
    assert [mail.message["Subject"] for mail in received] == ["before", "after"]


def test_a_new_connection_is_refused_while_stopped(smtp_server: SMTPSink) -> None:
    smtp_server.stop()
    smtp_server.stop()  # stopping twice is harmless, like the fixture's teardown
    with pytest.raises(DeliveryError, match="ConnectionRefusedError"):
        send(plain_settings(smtp_server))
    smtp_server.start()
    send(plain_settings(smtp_server))
    assert len(smtp_server.wait_for(1)) == 1


def test_tls_sink_restarts_with_the_same_certificate() -> None:
    with SMTPSink(tls=True, auth=SECURE_SMTP_AUTH) as sink:
        send(secure_settings(sink))
        sink.stop()
        sink.start()
        send(secure_settings(sink))
        assert len(sink.wait_for(2)) == 2
    assert isinstance(sink.ssl_context, ssl.SSLContext)


def test_delay_does_not_block_other_clients(smtp_server: SMTPSink) -> None:
    # Long enough that a loaded CI machine's overhead (0.2 s seen at 0.4 s) cannot pass
    # for serialized delays: in series the two would take 2 s at least.
    delay = 1.0
    smtp_server.delay = delay
    took: dict[str, float] = {}

    def timed_send(subject: str) -> None:
        begin = time.monotonic()
        send(plain_settings(smtp_server), subject)
        took[subject] = time.monotonic() - begin

    begin = time.monotonic()
    senders = [threading.Thread(target=timed_send, args=(name,)) for name in ("a", "b")]
    for sender in senders:
        sender.start()
    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=5) as client:
        client.noop()
        took["noop"] = time.monotonic() - begin
    for sender in senders:
        sender.join()
    took["both"] = time.monotonic() - begin

    assert took["a"] >= delay and took["b"] >= delay
    assert took["both"] < 2 * delay  # the two delays overlapped
    assert took["noop"] < delay  # commands other than DATA are answered at once
    assert len(smtp_server.wait_for(2)) == 2
    smtp_server.delay = 0.0
    begin = time.monotonic()
    send(plain_settings(smtp_server), "c")
    assert time.monotonic() - begin < delay


@pytest.mark.postgres
def test_postgres_url_is_an_empty_usable_database(postgres_url: str) -> None:
    assert postgres_url.startswith("postgresql+psycopg://")
    engine = sa.create_engine(postgres_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE IF EXISTS sink_probe"))
            conn.execute(sa.text("CREATE TABLE sink_probe (id serial PRIMARY KEY, note text)"))
            conn.execute(sa.text("INSERT INTO sink_probe (note) VALUES ('hello')"))
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT note FROM sink_probe")).scalar_one() == "hello"
            database = conn.execute(sa.text("SELECT current_database()")).scalar_one()
        assert database.startswith("cm_test_")
    finally:
        engine.dispose()
