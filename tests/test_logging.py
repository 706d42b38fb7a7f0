"""Logging: a failed delivery shows by default; tokens never reach Flask's or werkzeug's log."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import pytest

from flask_confirm_mail.redaction import RedactingFilter, redact

TOKEN = "eyJhbGciOiJIUzI1NiIsInR5cCI6ImNtLWxpbmsrand0In0.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"

APP = textwrap.dedent(
    """
    import logging, socket
    from flask import Flask, request
    from flask_sqlalchemy import SQLAlchemy
    from flask_confirm_mail import ConfirmableMixin, ConfirmMail, signup_view
    db = SQLAlchemy()
    class User(ConfirmableMixin, db.Model):
        id = db.Column(db.Integer, primary_key=True)
    free = socket.socket(); free.bind(("127.0.0.1", 0)); port = free.getsockname()[1]
    free.close()
    app = Flask("probe")
    app.config.update(
        SECRET_KEY="k" * 40, SQLALCHEMY_DATABASE_URI="sqlite://",
        MAIL_DEFAULT_SENDER="noreply@app.example.com", MAIL_SERVER="127.0.0.1",
        MAIL_PORT=port, CONFIRM_MAIL_EXTERNAL_URL="https://app.example.com",
        CONFIRM_MAIL_DELIVERY="sync",
    )
    db.init_app(app)
    ConfirmMail(app, db=db, user_model=User)
    from flask_confirm_mail import redact_request_logs
    from flask_confirm_mail.redaction import RedactingFilter
    def redacted(name):
        return any(isinstance(f, RedactingFilter) for f in logging.getLogger(name).filters)
    assert redacted("flask_confirm_mail") and redacted("probe")  # its exception log
    others = ("werkzeug", "gunicorn.access", "gunicorn.error")
    assert not any(redacted(name) for name in others)  # other libraries' loggers
    redact_request_logs(app)
    assert all(redacted(name) for name in others)
    @app.post("/signup")
    @signup_view
    def signup():
        db.session.add(User(email="cat@example.org")); db.session.commit(); return "ok"
    with app.app_context():
        db.create_all()
    print(app.test_client().post("/signup").status_code)
    """
)


def test_only_redact_request_logs_filters_other_libraries_loggers() -> None:
    """``init_app`` filters the extension's logger and the app's; ``redact_request_logs``
    werkzeug's and gunicorn's. No logging set up by the app: a failure reaches stderr."""
    result = subprocess.run(
        [sys.executable, "-c", APP], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "200"
    assert "Delivery of outbox message 1 failed (attempt 1)" in result.stderr
    assert "SMTP connection to 127.0.0.1:" in result.stderr


@pytest.mark.parametrize(
    "path",
    [
        f"/confirm/{TOKEN}",
        f"//confirm/{TOKEN}",
        f"/confirm//{TOKEN}",
        f"/%63onfirm/{TOKEN}",
        f"/CONFIRM/{TOKEN}",
        f"/confirm/{TOKEN}/",
        f"/confirm/{TOKEN}?next=/x",
        "/confirm/%65%79%4A" + TOKEN[3:],
        "/confirm/not-shaped-like-a-jwt-but-a-token",
    ],
)
def test_request_lines_are_redacted_however_the_path_is_spelled(path: str) -> None:
    line = f'127.0.0.1 - - [02/Dec/2026 10:00:00] "POST {path} HTTP/1.1" 400 -'
    redacted = redact(line, ["/confirm"])
    assert "[redacted]" in redacted and "HTTP/1.1" in redacted
    for part in (TOKEN, TOKEN[3:], TOKEN.rsplit(".", 1)[1], "not-shaped-like-a-jwt"):
        assert part not in redacted


@pytest.mark.parametrize(
    "line", ['"POST /confirm/resend HTTP/1.1" 202 -', '"GET /members HTTP/1.1" 200 -']
)
def test_other_paths_stay_readable(line: str) -> None:
    assert redact(line, ["/confirm"]) == line


def test_the_filter_redacts_records_and_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("tests.logging.redaction")
    logger.addFilter(RedactingFilter(["/confirm"]))
    with caplog.at_level(logging.INFO, logger=logger.name):
        logger.info('"%s %s HTTP/1.1" %s', "GET", f"/confirm/{TOKEN}", 200)
        try:
            raise ValueError(f"no such row for {TOKEN}")
        except ValueError:
            logger.exception("failed on /confirm/%s", TOKEN)
    assert TOKEN not in caplog.text
    assert '"GET /confirm/[redacted] HTTP/1.1" 200' in caplog.text
