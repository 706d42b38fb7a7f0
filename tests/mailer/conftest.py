"""Fixtures of the mailer tests: SMTP sinks and mailer processes shared by a session.

Starting a process costs about a second, so each kind is started once per session and
tests tell their emails apart by recipient (see ``tokens.unique_address``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from flask_confirm_mail.mailer import RemoteTransport, create_app
from flask_confirm_mail.mailer.settings import MailerSettings
from tests.support.fixtures import SECURE_SMTP_AUTH
from tests.support.smtp_server import ReceivedMail, SMTPSink

from .process import MailerProcess
from .tokens import ALLOWED_PREFIXES, LINK_PREFIX, MAILER_SECRET


def mailer_env(sink: SMTPSink, **overrides: str) -> dict[str, str]:
    """The environment of a mailer that sends to ``sink`` without TLS."""
    env = {
        "JWT_MAILER_SECRET": MAILER_SECRET,
        "MAILERTOGO_SMTP_HOST": sink.host,
        "MAILERTOGO_SMTP_PORT": str(sink.port),
        "MAILERTOGO_DOMAIN": "mailer.example",
        "SENDER_NAME": "CatLoader",
        "MAILER_SMTP_SECURITY": "none",
        "MAILER_ALLOWED_LINK_PREFIXES": ALLOWED_PREFIXES,
        "MAILER_LEGACY_ENDPOINTS": "1",
        "MAILER_SMTP_TIMEOUT": "5",
    }
    env.update(overrides)
    return env


def messages_to(sink: SMTPSink, recipient: str) -> list[ReceivedMail]:
    """What ``sink`` received for ``recipient``."""
    return [mail for mail in list(sink.messages) if recipient in mail.rcpt_tos]


@pytest.fixture(scope="session")
def mailer_sink() -> Iterator[SMTPSink]:
    """A plain SMTP sink shared by the session's mailer process."""
    with SMTPSink() as sink:
        yield sink


@pytest.fixture(scope="session")
def secure_mailer_sink() -> Iterator[SMTPSink]:
    """An SMTP sink requiring STARTTLS and AUTH, shared by the session."""
    with SMTPSink(tls=True, auth=SECURE_SMTP_AUTH) as sink:
        yield sink


def _run(env: dict[str, str], log_path: Path, server: str = "gunicorn") -> Iterator[MailerProcess]:
    process = MailerProcess(env, log_path, server=server)
    process.start()
    try:
        yield process
    finally:
        process.stop()
    leaked = process.leaked_tokens()
    assert not leaked, f"{len(leaked)} token(s) reached the mailer's log {log_path}"


@pytest.fixture(scope="session")
def mailer(
    mailer_sink: SMTPSink, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MailerProcess]:
    """gunicorn running the mailer (legacy endpoints on), sending to ``mailer_sink``."""
    log_path = tmp_path_factory.mktemp("mailer") / "gunicorn.log"
    yield from _run(mailer_env(mailer_sink), log_path)


@pytest.fixture(scope="session")
def secure_mailer(
    secure_mailer_sink: SMTPSink, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MailerProcess]:
    """gunicorn running the mailer with STARTTLS and AUTH against ``secure_mailer_sink``."""
    sink = secure_mailer_sink
    assert sink.cert_path is not None
    env = mailer_env(
        sink,
        MAILER_SMTP_SECURITY="starttls",
        MAILERTOGO_SMTP_USER=SECURE_SMTP_AUTH[0],
        MAILERTOGO_SMTP_PASSWORD=SECURE_SMTP_AUTH[1],
        MAILER_SMTP_CA_FILE=sink.cert_path,
        MAILER_LEGACY_ENDPOINTS="0",
    )
    log_path = tmp_path_factory.mktemp("secure-mailer") / "gunicorn.log"
    yield from _run(env, log_path)


@pytest.fixture(scope="session")
def flask_run_mailer(
    mailer_sink: SMTPSink, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MailerProcess]:
    """``flask --app flask_confirm_mail.mailer run``, legacy endpoints off."""
    log_path = tmp_path_factory.mktemp("flask-mailer") / "flask.log"
    env = mailer_env(mailer_sink, MAILER_LEGACY_ENDPOINTS="0")
    yield from _run(env, log_path, server="flask")


@pytest.fixture
def make_mailer_app(smtp_server: SMTPSink) -> Callable[..., Flask]:
    """Build an in-process mailer app on ``smtp_server``; keywords override variables."""

    def make(**overrides: str) -> Flask:
        settings = MailerSettings.from_env(mailer_env(smtp_server, **overrides))
        app = create_app(settings)
        app.config["TESTING"] = True
        return app

    return make


@pytest.fixture
def remote_app(
    build_app: Callable[..., Flask], tmp_path: Path, mailer: MailerProcess
) -> Callable[..., Flask]:
    """Build a test app (tests/apps.py) that sends through ``mailer`` on ``wire``;
    keywords add to its config."""

    def make(wire: str, **config: Any) -> Flask:
        return build_app(
            f"sqlite:///{tmp_path / 'remote.db'}",
            config={
                "CONFIRM_MAIL_EXTERNAL_URL": LINK_PREFIX.removesuffix("/confirm/"),
                "CONFIRM_MAIL_MAILER_URL": mailer.base_url,
                "CONFIRM_MAIL_MAILER_SECRET": MAILER_SECRET,
                "CONFIRM_MAIL_MAILER_WIRE": wire,
                "CONFIRM_MAIL_APP_NAME": "CatLoader",
                **config,
            },
            transport=RemoteTransport(),
        )

    return make
