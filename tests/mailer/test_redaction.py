"""The log filter that keeps tokens out of every request log line."""

from __future__ import annotations

import logging

import pytest

from flask_confirm_mail.mailer.views import LEGACY_PATH_PREFIXES
from flask_confirm_mail.redaction import RedactingFilter, install_log_redaction, redact

from .tokens import original_token, v1_token

TOKEN = v1_token("ann@example.com")
LEGACY = original_token("ann@example.com")


@pytest.mark.parametrize(
    ("line", "kept"),
    [
        (f'127.0.0.1 "GET /emailservice-cat/signup/{LEGACY} HTTP/1.1" 200', "/signup/"),
        (f'"GET /emailservice/{LEGACY} HTTP/1.1"', "/emailservice/"),
        ("GET /emailservice-usr/change/not-even-a-jwt HTTP/1.1", "HTTP/1.1"),
        (f'auth="Bearer {TOKEN}"', "Bearer"),
        ("Authorization: bearer garbage-value", "bearer"),
        (f"POST /v1/messages?token={TOKEN}&x=1", "&x=1"),
        (f"something with {TOKEN} inside", "inside"),
    ],
)
def test_redact(line: str, kept: str) -> None:
    redacted = redact(line, LEGACY_PATH_PREFIXES)
    assert "[redacted]" in redacted
    assert kept in redacted
    assert TOKEN not in redacted and LEGACY not in redacted
    assert "not-even-a-jwt" not in redacted and "garbage-value" not in redacted


def test_plain_lines_are_left_alone() -> None:
    line = "Booting worker with pid: 42 (flask_confirm_mail.mailer.app)"
    assert redact(line, LEGACY_PATH_PREFIXES) == line


def test_filter_rewrites_args_and_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("tests.mailer.redaction")
    logger.addFilter(RedactingFilter(LEGACY_PATH_PREFIXES))
    with caplog.at_level(logging.INFO, logger=logger.name):
        logger.info("%(r)s %(s)s", {"r": f"GET /emailservice/{LEGACY} HTTP/1.1", "s": "200"})
        try:
            raise ValueError(f"bad token {TOKEN}")
        except ValueError:
            logger.exception("failed on /emailservice/%s", LEGACY)
    assert LEGACY not in caplog.text and TOKEN not in caplog.text
    assert "GET /emailservice/[redacted] HTTP/1.1 200" in caplog.text
    assert "ValueError: bad token [redacted]" in caplog.text


def test_install_is_idempotent() -> None:
    install_log_redaction(["tests.mailer.twice"], LEGACY_PATH_PREFIXES)
    install_log_redaction(["tests.mailer.twice"], LEGACY_PATH_PREFIXES)
    filters = logging.getLogger("tests.mailer.twice").filters
    assert sum(isinstance(f, RedactingFilter) for f in filters) == 1
    install_log_redaction(path_prefixes=LEGACY_PATH_PREFIXES)  # the server loggers
    assert any(isinstance(f, RedactingFilter) for f in logging.getLogger("gunicorn.access").filters)
