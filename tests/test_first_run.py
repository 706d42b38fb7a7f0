"""A first run that flows: every start-up problem in one error."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from flask_confirm_mail import ConfigurationError, ConfirmMail
from flask_confirm_mail.mailer.settings import MailerSettings
from tests.apps import EXTERNAL_URL, User, db

#: 20 bytes, like a development key written by hand; no 8 of them in a row occur in any message.
SHORT_KEY = "Kq7Zp3dev0Wx5Lm2Vb9T"
assert len(SHORT_KEY.encode()) == 20


def bare_app(**config: Any) -> Flask:
    app = Flask(__name__)
    app.config.update(SQLALCHEMY_DATABASE_URI="sqlite://", CONFIRM_MAIL_DELIVERY="sync", **config)
    return app


def refusal(app: Flask, **options: Any) -> ConfigurationError:
    with pytest.raises(ConfigurationError) as caught:
        ConfirmMail(app, db=db, user_model=User, **options)
    assert "confirm_mail" not in app.extensions
    return caught.value


def leaks_key(text: str) -> bool:
    return any(SHORT_KEY[i : i + 8] in text for i in range(len(SHORT_KEY) - 7))


def test_every_configuration_error_comes_in_one_error() -> None:
    """The issue's first run: a 20-byte SECRET_KEY, no external URL, no sender."""
    error = refusal(bare_app(SECRET_KEY=SHORT_KEY))
    first, *lines = str(error).splitlines()
    assert first == "3 configuration errors:"
    assert lines == [f"- {message}" for message in error.errors]
    for key, message in zip(
        ["CONFIRM_MAIL_EXTERNAL_URL", "CONFIRM_MAIL_SENDER", "SECRET_KEY is too short"],
        error.errors,
        strict=True,
    ):
        assert key in message
    assert not leaks_key(str(error))


def test_user_model_and_mail_server_errors_come_together() -> None:
    app = bare_app(
        SECRET_KEY=SHORT_KEY * 2,
        CONFIRM_MAIL_EXTERNAL_URL=EXTERNAL_URL,
        MAIL_DEFAULT_SENDER="noreply@app.example.com",
        MAIL_PORT="abc",
    )
    error = refusal(app, email_attribute="mail")
    assert str(error) == (
        "2 configuration errors:\n"
        "- user_model has no column attribute 'mail'.\n"
        "- MAIL_PORT must be a port number (1 to 65535), not 'abc'."
    )


def test_one_error_keeps_its_message() -> None:
    app = bare_app(SECRET_KEY=SHORT_KEY * 2, MAIL_DEFAULT_SENDER="noreply@app.example.com")
    error = refusal(app)
    assert error.errors == [str(error)]
    assert str(error) == (
        "Set CONFIRM_MAIL_EXTERNAL_URL (e.g. https://www.example.com) or SERVER_NAME: "
        "links in emails are never built from the request's Host header."
    )


def test_the_mailer_environment_is_checked_whole() -> None:
    env = {"MAILERTOGO_SMTP_HOST": "127.0.0.1", "MAILERTOGO_SMTP_PORT": "http"}
    with pytest.raises(ConfigurationError) as caught:
        MailerSettings.from_env(env)
    first, *lines = str(caught.value).splitlines()
    assert first == f"{len(lines)} configuration errors:"
    assert any("JWT_MAILER_SECRET" in line for line in lines)
    assert any("MAILERTOGO_SMTP_PORT" in line for line in lines)
