"""Case 4: weak secrets are refused at start-up, for the link secret and the mailer secret.

RFC 7518 3.2 and RFC 8725 3.5: an HS256 key needs at least 256 bits. A key derived from
a short ``SECRET_KEY`` is no stronger than it, so that is refused too. The refusals name
the setting, never its value.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from flask_confirm_mail import ConfigurationError, ConfirmMail
from flask_confirm_mail.mailer.settings import MailerSettings
from tests.apps import EXTERNAL_URL, LINK_SECRET, SECRET_KEY, User, db

SHORT = "short-secret-of-31-bytes-012345"
assert len(SHORT.encode()) == 31
#: 16 two-byte characters: 16 characters but 32 bytes.
UNICODE_32 = "é" * 16
#: 15 two-byte characters: 30 bytes.
UNICODE_30 = "é" * 15
MAILER_OK = "mailer-secret-for-tests-0123456789abcdef"


def _app(**config: Any) -> Flask:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=SECRET_KEY,
        SQLALCHEMY_DATABASE_URI="sqlite://",
        MAIL_DEFAULT_SENDER="noreply@app.example.com",
        CONFIRM_MAIL_SECRET=LINK_SECRET,
        CONFIRM_MAIL_EXTERNAL_URL=EXTERNAL_URL,
        CONFIRM_MAIL_DELIVERY="sync",
    )
    app.config.update(config)
    return app


def _refused(app: Flask, *values: Any) -> str:
    with pytest.raises(ConfigurationError) as caught:
        ConfirmMail(app, db=db, user_model=User)
    assert "confirm_mail" not in app.extensions
    message = str(caught.value)
    for value in values:
        text = value.decode() if isinstance(value, bytes) else str(value)
        assert text not in message, "the refusal repeats the secret"
    return message


WEAK_VALUES = {
    "empty": "",
    "one byte": "x",
    "31 bytes": SHORT,
    "31 bytes as bytes": SHORT.encode(),
    "30 bytes of 15 characters": UNICODE_30,
    "a number": 12345678901234567890123456789012345,
    "a list holding a short key": [LINK_SECRET, SHORT],
}


@pytest.mark.parametrize("value", list(WEAK_VALUES.values()), ids=list(WEAK_VALUES))
def test_weak_app_side_secret_is_refused(value: Any) -> None:
    config = {"CONFIRM_MAIL_SECRET": value}
    message = _refused(_app(**config), *(v for v in (value,) if isinstance(v, (str, bytes)) and v))
    assert "CONFIRM_MAIL_SECRET" in message


@pytest.mark.parametrize("secret_key", ["dev", SHORT, SHORT.encode(), UNICODE_30])
def test_short_secret_key_cannot_be_the_source_of_the_link_key(secret_key: Any) -> None:
    message = _refused(_app(SECRET_KEY=secret_key, CONFIRM_MAIL_SECRET=None), secret_key)
    assert "SECRET_KEY" in message and "CONFIRM_MAIL_SECRET" in message


@pytest.mark.parametrize(
    "config",
    [
        pytest.param({"CONFIRM_MAIL_SECRET": "s" * 32}, id="link secret of 32 bytes"),
        pytest.param({"CONFIRM_MAIL_SECRET": UNICODE_32}, id="link secret of 32 UTF-8 bytes"),
        pytest.param({"CONFIRM_MAIL_SECRET": ["s" * 32, "t" * 32]}, id="a list of 32-byte keys"),
        pytest.param(
            {"CONFIRM_MAIL_SECRET": None, "SECRET_KEY": "k" * 32}, id="SECRET_KEY of 32 bytes"
        ),
    ],
)
def test_secrets_of_32_bytes_are_accepted(config: dict[str, Any]) -> None:
    """The controls: the limit is 32 bytes, not more."""
    app = _app(**config)
    ConfirmMail(app, db=db, user_model=User)
    assert "confirm_mail" in app.extensions


# --- the mailer service's secret -----------------------------------------------------------------


def _mailer_env(**changes: str) -> dict[str, str]:
    env = {
        "JWT_MAILER_SECRET": MAILER_OK,
        "MAILERTOGO_SMTP_HOST": "127.0.0.1",
        "MAILERTOGO_SMTP_PORT": "2525",
        "MAILERTOGO_DOMAIN": "mail.example.com",
        "MAILER_SMTP_SECURITY": "none",
        "MAILER_ALLOWED_LINK_PREFIXES": f"{EXTERNAL_URL}/confirm/",
    }
    env.update(changes)
    return env


@pytest.mark.parametrize("value", ["x", SHORT, UNICODE_30, " " * 31])
@pytest.mark.parametrize("variable", ["JWT_MAILER_SECRET", "JWT_MAILER_SECRET_PREVIOUS"])
def test_weak_mailer_secret_is_refused(variable: str, value: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        MailerSettings.from_env(_mailer_env(**{variable: value}))
    assert variable in str(caught.value)
    if value.strip():
        assert value not in str(caught.value)


def test_missing_mailer_secret_is_refused() -> None:
    env = _mailer_env()
    del env["JWT_MAILER_SECRET"]
    with pytest.raises(ConfigurationError, match="JWT_MAILER_SECRET"):
        MailerSettings.from_env(env)


def test_mailer_secret_of_32_bytes_is_accepted() -> None:
    settings = MailerSettings.from_env(_mailer_env(JWT_MAILER_SECRET="m" * 32))
    assert settings.secrets == (b"m" * 32,)
