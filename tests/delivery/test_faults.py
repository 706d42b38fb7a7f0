"""Delivery faults with real processes: each test counts emails requested, delivered,
duplicated and lost (issue 17)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from typing import Any

import pytest
from flask import Flask
from sqlalchemy.engine import make_url

from flask_confirm_mail.errors import ConfigurationError
from flask_confirm_mail.outbox import PENDING, SENDING, SENT
from tests.apps import create_app
from tests.support.smtp_server import SMTPSink
from tests.support.tcp_proxy import TCPProxy
from tests.test_outbox import ROOT, _drain, _enqueue_many, _rows, _worker


def tally(sink: SMTPSink, requested: list[str]) -> dict[str, int]:
    """Requested, delivered (distinct), duplicated (extra copies) and lost emails."""
    counts = Counter(r for m in sink.messages for r in m.rcpt_tos)
    return {
        "requested": len(requested),
        "delivered": sum(1 for a in requested if counts[a]),
        "duplicated": sum(n - 1 for n in counts.values() if n > 1),
        "lost": sum(1 for a in requested if not counts[a]),
    }


def wait_until(condition: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def _stop(process: subprocess.Popen[bytes]) -> str:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    return process.communicate(timeout=60)[0].decode()


@pytest.mark.slow
def test_a_batch_that_outlasts_its_lease_is_sent_once(
    make_app: Any, smtp_server: SMTPSink, database_url: str
) -> None:
    """SMTP at 1.5 s a message, batches of 3: 1.5 s a batch, lease 1 s."""
    app = make_app(config={"CONFIRM_MAIL_DELIVERY": "worker"})
    requested = _enqueue_many(app, 12)
    smtp_server.delay = 1.5
    config = {"CONFIRM_MAIL_CONCURRENCY": "3", "TEST_LEASE": "1"}
    workers = [_worker(database_url, smtp_server, "--poll-interval", "0.1", **config)]
    workers.append(_worker(database_url, smtp_server, "--poll-interval", "0.1", **config))
    try:
        wait_until(lambda: {row.status for row in _rows(app)} == {SENT})
        time.sleep(1.5)  # over a lease more: a second copy would be claimed and sent now
    finally:
        outputs = [_stop(w) for w in workers]
    assert tally(smtp_server, requested) == {
        "requested": 12,
        "delivered": 12,
        "duplicated": 0,
        "lost": 0,
    }, outputs
    assert {row.attempts for row in _rows(app)} == {1}


@pytest.mark.slow
def test_sigterm_finishes_the_emails_on_the_wire_and_gives_back_the_rest(
    make_app: Any, smtp_server: SMTPSink, database_url: str
) -> None:
    app = make_app(config={"CONFIRM_MAIL_DELIVERY": "worker"})
    requested = _enqueue_many(app, 20)
    smtp_server.delay = 0.5
    # A batch of 4 whose emails wait for a send slot, one a second: a stop finds some
    # of them on the wire and the others not yet sent.
    config = {"CONFIRM_MAIL_CONCURRENCY": "4", "CONFIRM_MAIL_MAX_RATE": "1"}
    worker = _worker(database_url, smtp_server, **config)
    wait_until(lambda: len(smtp_server.messages) >= 2)
    worker.send_signal(signal.SIGTERM)
    output = worker.communicate(timeout=60)[0].decode()
    assert worker.returncode == 0, output
    rows = _rows(app)
    sent = [row for row in rows if row.status == SENT]
    rest = [row for row in rows if row.status != SENT]
    assert len(sent) == len(smtp_server.messages) < 4, "stopped mid-batch, nothing unrecorded"
    assert rest and {(r.status, r.attempts, r.claimed_by) for r in rest} == {(PENDING, 0, None)}
    given_back = int(output.rsplit(" given back", 1)[0].rsplit(" ", 1)[1])
    assert 0 < given_back == 4 - len(sent), output
    smtp_server.delay = 0
    assert _drain(app).sent == len(rest)
    assert tally(smtp_server, requested) == {
        "requested": 20,
        "delivered": 20,
        "duplicated": 0,
        "lost": 0,
    }


THREAD_MODE_EXIT = textwrap.dedent(
    """
    import sys, time
    from tests.apps import create_app
    from tests.test_outbox import _enqueue_many
    from tests.support.smtp_server import SMTPSink
    url, port = sys.argv[1], int(sys.argv[2])
    app = create_app(url, config={"MAIL_SERVER": "127.0.0.1", "MAIL_PORT": port,
        "CONFIRM_MAIL_DELIVERY": "thread", "CONFIRM_MAIL_CONCURRENCY": 2})
    with app.test_request_context():  # a sign-up request of a web worker
        _enqueue_many(app, 20)
    time.sleep(float(sys.argv[3]))
    sys.exit(0)  # what gunicorn's worker does at --max-requests, HUP or SIGTERM
    """
)


@pytest.mark.slow
def test_thread_mode_gives_back_its_batch_at_process_exit(
    build_app: Any, smtp_server: SMTPSink, tmp_path: Any
) -> None:
    url = f"sqlite:///{tmp_path / 'exit.db'}"
    smtp_server.delay = 0.5
    result = subprocess.run(
        [sys.executable, "-c", THREAD_MODE_EXIT, url, str(smtp_server.port), "0.8"],
        cwd=ROOT,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    app = create_app(url, config={"MAIL_SERVER": "127.0.0.1", "MAIL_PORT": smtp_server.port})
    rows = _rows(app)
    assert SENDING not in {row.status for row in rows}, "nothing left claimed"
    sent = sum(row.status == SENT for row in rows)
    assert 0 < sent == len(smtp_server.messages) < 20
    smtp_server.delay = 0
    _drain(app)
    requested = [f"bulk{i}@example.org" for i in range(20)]
    assert tally(smtp_server, requested) == {
        "requested": 20,
        "delivered": 20,
        "duplicated": 0,
        "lost": 0,
    }


def test_connection_lost_after_data_is_outcome_unknown_not_refused(
    make_app: Any, smtp_server: SMTPSink, clock: Any
) -> None:
    app = make_app(config={"CONFIRM_MAIL_DELIVERY": "worker", "CONFIRM_MAIL_MAX_ATTEMPTS": 2})
    client = app.test_client()
    smtp_server.drop_after_data_next(2)
    client.post("/signup", data={"email": "maybe@example.org"})
    _drain(app)
    [row] = _rows(app)
    assert (row.status, row.last_failure, row.unknown_outcomes) == (PENDING, "unknown", 1)
    assert "outcome unknown" in row.last_error
    clock.shift(60)
    _drain(app)
    smtp_server.fail_next(1, code=550)
    client.post("/signup", data={"email": "refused@example.org"})
    _drain(app)
    mails = smtp_server.messages
    assert [m.rcpt_tos for m in mails] == [["maybe@example.org"]] * 2
    assert len({m.message["Message-ID"] for m in mails}) == 1, "retried with the same Message-ID"
    listing = app.test_cli_runner().invoke(args=["confirm-mail", "outbox"]).output
    maybe, refused = (row.id for row in _rows(app))
    assert (
        f"dead {maybe}: to maybe@example.org (signup), outcome unknown, 2 attempt(s), " in listing
    )
    assert "2 with outcome unknown" in listing
    assert f"dead {refused}: to refused@example.org (signup), refused, 1 attempt(s)" in listing
    assert "last error: SMTP server rejected the message (550)" in listing


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({"MAIL_PORT": "abc"}, "MAIL_PORT"),
        ({"MAIL_PORT": 70000}, "MAIL_PORT"),
        ({"MAIL_SERVER": ""}, "MAIL_SERVER"),
        ({"MAIL_USE_TLS": "no"}, "MAIL_USE_TLS"),
        ({"MAIL_USE_TLS": True, "MAIL_USE_SSL": True}, "MAIL_USE_SSL"),
    ],
)
def test_smtp_settings_are_checked_at_init_app(
    tmp_path: Any, config: dict[str, Any], named: str
) -> None:
    with pytest.raises(ConfigurationError, match=named):
        create_app(f"sqlite:///{tmp_path / 'c.db'}", config=config)


def test_check_tries_the_connection(make_app: Any, smtp_server: SMTPSink) -> None:
    app: Flask = make_app()
    runner = app.test_cli_runner()
    ok = runner.invoke(args=["confirm-mail", "check"])
    assert ok.exit_code == 0 and f"127.0.0.1:{smtp_server.port} answered" in ok.output
    smtp_server.stop()
    down = runner.invoke(args=["confirm-mail", "check"])
    assert down.exit_code == 1
    assert f"SMTP connection to 127.0.0.1:{smtp_server.port} failed" in down.output
    assert "ConnectionRefusedError" in down.output
    app.config["MAIL_SERVER"] = "no-such-host.invalid"
    app.extensions["mail"].server = "no-such-host.invalid"
    app.extensions["confirm_mail"].transport.init_app(app)  # reads the settings again
    unresolved = runner.invoke(args=["confirm-mail", "check"])
    assert unresolved.exit_code == 1 and "no-such-host.invalid" in unresolved.output


def test_a_worker_logs_each_failed_batch_and_outbox_shows_the_last_error(
    make_app: Any, smtp_server: SMTPSink, database_url: str
) -> None:
    app = make_app(config={"CONFIRM_MAIL_DELIVERY": "worker"})
    _enqueue_many(app, 3)
    smtp_server.stop()
    worker = _worker(database_url, smtp_server, "--once")
    output = worker.communicate(timeout=60)[0].decode()
    assert "A delivery batch of 3: 0 sent, 3 to retry, 0 dead; last error: SMTP connection" in (
        output
    )
    listing = app.test_cli_runner().invoke(args=["confirm-mail", "outbox"]).output
    assert "last error: SMTP connection to 127.0.0.1:" in listing and "now pending" in listing


@pytest.mark.slow
def test_a_database_restart_after_sending_does_not_send_the_batch_again(
    build_app: Any, smtp_server: SMTPSink, postgres_url: str
) -> None:
    """The worker reaches PostgreSQL through a proxy that is cut while the batch is on
    the wire and restored after the batch has ended: recording must wait it out."""
    app = build_app(postgres_url, config={"CONFIRM_MAIL_DELIVERY": "worker"})
    requested = _enqueue_many(app, 10)
    url = make_url(postgres_url)
    smtp_server.delay = 1.0
    with TCPProxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        worker = _worker(
            proxied,
            smtp_server,
            "--poll-interval",
            "0.1",
            CONFIRM_MAIL_CONCURRENCY="10",
            TEST_LEASE="2",
        )
        try:
            wait_until(lambda: {row.status for row in _rows(app)} == {SENDING})
            proxy.cut()
            wait_until(lambda: len(smtp_server.messages) == 10)
            time.sleep(3)  # past the lease: without the retry the rows would be taken again
            proxy.restore()
            wait_until(lambda: {row.status for row in _rows(app)} == {SENT})
            time.sleep(2.5)  # another lease: a second copy would go out now
        finally:
            output = _stop(worker)
    assert "Could not record the results of" in output
    assert tally(smtp_server, requested) == {
        "requested": 10,
        "delivered": 10,
        "duplicated": 0,
        "lost": 0,
    }, output


def test_check_to_sends_an_email_built_as_users_are(make_app: Any, smtp_server: SMTPSink) -> None:
    app: Flask = make_app(config={"CONFIRM_MAIL_SENDER": ("Bücher", "noreply@bücher.example")})
    result = app.test_cli_runner().invoke(args=["confirm-mail", "check", "--to", "Me@Example.org"])
    assert result.exit_code == 0 and "Sent a test email to me@example.org" in result.output
    [mail] = smtp_server.wait_for(1)
    assert mail.rcpt_tos == ["me@example.org"] and mail.message["Message-ID"]
    assert mail.mail_from == "noreply@xn--bcher-kva.example"
    refused = app.test_cli_runner().invoke(args=["confirm-mail", "check", "--to", "not an address"])
    assert refused.exit_code == 1 and "Delivery check failed" in refused.output


def test_check_warns_when_worker_mode_has_emails_no_worker_took(
    make_app: Any, smtp_server: SMTPSink, clock: Any
) -> None:
    app: Flask = make_app(config={"CONFIRM_MAIL_DELIVERY": "worker"})
    _enqueue_many(app, 2)
    runner = app.test_cli_runner()
    assert runner.invoke(args=["confirm-mail", "check"]).exit_code == 0  # just queued
    clock.shift(61)
    late = runner.invoke(args=["confirm-mail", "check"])
    assert late.exit_code == 1
    assert "2 email(s) have waited over a minute and no worker took them" in late.output
    _drain(app)
    assert runner.invoke(args=["confirm-mail", "check"]).exit_code == 0
