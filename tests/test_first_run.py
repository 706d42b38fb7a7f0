"""A first run that flows: every start-up problem in one error, and a short development key
accepted while debug or TESTING is on, with a warning, and refused in production."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from flask import Flask

from flask_confirm_mail import ConfigurationError, ConfirmMail
from flask_confirm_mail.mailer.settings import MailerSettings
from flask_confirm_mail.settings import Settings
from tests.apps import EXTERNAL_URL, User, db
from tests.conftest import link_from
from tests.support.smtp_server import SMTPSink

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


@pytest.mark.parametrize(
    "mode", [{"DEBUG": True, "TESTING": False}, {"TESTING": True}], ids=["debug", "testing"]
)
@pytest.mark.parametrize("setting", ["SECRET_KEY", "CONFIRM_MAIL_SECRET"])
def test_a_short_key_signs_links_while_developing_and_is_refused_in_production(
    make_app: Any,
    smtp_server: SMTPSink,
    caplog: pytest.LogCaptureFixture,
    setting: str,
    mode: dict[str, bool],
) -> None:
    keys = {"SECRET_KEY": SHORT_KEY * 2, "CONFIRM_MAIL_SECRET": None, setting: SHORT_KEY}
    caplog.set_level(logging.DEBUG)
    production = {"DEBUG": False, "TESTING": False}
    with pytest.raises(ConfigurationError, match=f"^{setting} is too short"):
        make_app(config={**keys, **production})
    assert not [r for r in caplog.records if r.name == "flask_confirm_mail"]

    app = make_app(config={**keys, **mode})
    with app.app_context():
        Settings.load(app)  # read again, as a transport may: still one warning
    signup = app.test_client().post("/signup", data={"email": "kitty@example.org"})
    assert signup.status_code == 201
    path = link_from(smtp_server.wait_for(1)[-1]).removeprefix(EXTERNAL_URL)
    answer = app.test_client().post(path, headers={"Accept": "application/json"})
    assert answer.json["status"] == "confirmed"

    [warning] = [r for r in caplog.records if r.name == "flask_confirm_mail"]
    message = warning.getMessage()
    assert warning.levelno == logging.WARNING and message.startswith(f"{setting} is shorter")
    assert "refused in production" in message and "secrets.token_urlsafe" in message
    assert not any(leaks_key(f"{r.getMessage()} {r.args!r}") for r in caplog.records)
