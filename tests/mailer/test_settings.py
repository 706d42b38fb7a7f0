"""The mailer's environment: the original's names, defaults, and refusals to start."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from flask_confirm_mail.errors import ConfigurationError
from flask_confirm_mail.mailer import create_app
from flask_confirm_mail.mailer.settings import MailerSettings

from .tokens import MAILER_SECRET

BASE = {
    "JWT_MAILER_SECRET": MAILER_SECRET,
    "MAILERTOGO_SMTP_HOST": "smtp.mailertogo.example",
    "MAILERTOGO_DOMAIN": "Mail.Example",
    "MAILER_ALLOWED_LINK_PREFIXES": "https://app.example/confirm/",
}


def settings(**changes: str | None) -> MailerSettings:
    env = {**BASE, **changes}
    return MailerSettings.from_env({k: v for k, v in env.items() if v is not None})


def test_defaults() -> None:
    s = settings()
    assert s.smtp.port == 587
    assert s.smtp.security == "starttls"
    assert s.smtp.username is None and s.smtp.password is None
    assert s.sender_address == "noreply@mail.example"
    assert s.legacy_endpoints is False
    assert (s.rate_limit, s.rate_window) == (5, 3600)
    assert s.subject("signup") == "Confirm and access mail.example"
    assert s.subject("change") == "Confirm changed email/login"
    assert MAILER_SECRET not in repr(s)


def test_original_variables() -> None:
    s = settings(
        MAILERTOGO_SMTP_PORT="2525",
        MAILERTOGO_SMTP_USER="user",
        MAILERTOGO_SMTP_PASSWORD=" pass word ",
        SENDER_NAME="CatLoader",
    )
    assert s.smtp.port == 2525
    assert (s.smtp.username, s.smtp.password) == ("user", " pass word ")
    assert s.sender_name == "CatLoader"
    assert s.subject("signup") == "Confirm and access CatLoader"
    assert " pass word " not in repr(s)


def test_password_without_user_does_not_log_in() -> None:
    assert settings(MAILERTOGO_SMTP_PASSWORD="pw").smtp.password is None


def test_new_variables() -> None:
    s = settings(
        MAILER_SMTP_SECURITY="SSL",
        MAILER_LEGACY_ENDPOINTS="yes",
        MAILER_RATE_LIMIT="0",
        MAILER_RATE_WINDOW="60",
        MAILER_APP_NAME="Cats",
        MAILER_SUBJECT_SIGNUP="Welcome to {app_name}",
        JWT_MAILER_SECRET_PREVIOUS="p" * 32,
    )
    assert s.smtp.security == "ssl"
    assert s.legacy_endpoints is True
    assert (s.rate_limit, s.rate_window) == (0, 60)
    assert s.subject("signup") == "Welcome to Cats"
    assert s.secrets == (MAILER_SECRET.encode(), b"p" * 32)


def test_blank_variables_are_unset_and_only_secrets_keep_white_space() -> None:
    s = settings(MAILERTOGO_SMTP_PORT=" ", SENDER_NAME="", MAILER_LOG_LEVEL=" debug ")
    assert (s.smtp.port, s.sender_name, s.log_level) == (587, "", "DEBUG")
    assert settings(JWT_MAILER_SECRET_PREVIOUS="").secrets == (MAILER_SECRET.encode(),)
    assert settings(JWT_MAILER_SECRET=" " + "k" * 31).secrets == (b" " + b"k" * 31,)


@pytest.mark.parametrize(
    ("changes", "names"),
    [
        ({"JWT_MAILER_SECRET": None}, "JWT_MAILER_SECRET"),
        ({"JWT_MAILER_SECRET": "short"}, "JWT_MAILER_SECRET"),
        ({"JWT_MAILER_SECRET": "x" * 31}, "32 random bytes"),
        ({"JWT_MAILER_SECRET_PREVIOUS": "short"}, "JWT_MAILER_SECRET_PREVIOUS"),
        ({"MAILER_ALLOWED_LINK_PREFIXES": None}, "MAILER_ALLOWED_LINK_PREFIXES"),
        ({"MAILER_ALLOWED_LINK_PREFIXES": " , "}, "MAILER_ALLOWED_LINK_PREFIXES"),
        ({"MAILER_ALLOWED_LINK_PREFIXES": "http://app.example/"}, "https"),
        ({"MAILERTOGO_SMTP_HOST": None}, "MAILERTOGO_SMTP_HOST"),
        ({"MAILERTOGO_DOMAIN": None}, "MAILERTOGO_DOMAIN"),
        ({"MAILERTOGO_DOMAIN": "a b"}, "MAILERTOGO_DOMAIN"),
        ({"MAILERTOGO_SMTP_PORT": "x"}, "MAILERTOGO_SMTP_PORT"),
        ({"MAILERTOGO_SMTP_PORT": "70000"}, "MAILERTOGO_SMTP_PORT"),
        ({"MAILER_SMTP_SECURITY": "none"}, "loopback"),
        ({"MAILER_SMTP_SECURITY": "tls"}, "MAILER_SMTP_SECURITY"),
        ({"MAILER_SMTP_CA_FILE": "/nonexistent.pem"}, "MAILER_SMTP_CA_FILE"),
        ({"MAILER_LEGACY_ENDPOINTS": "maybe"}, "MAILER_LEGACY_ENDPOINTS"),
        ({"MAILER_RATE_LIMIT": "-1"}, "MAILER_RATE_LIMIT"),
        ({"MAILER_LEEWAY": "301"}, "MAILER_LEEWAY"),
        ({"MAILER_SMTP_TIMEOUT": "0"}, "MAILER_SMTP_TIMEOUT"),
        ({"SENDER_NAME": "Cat\r\nBcc: x@evil.tld"}, "SENDER_NAME"),
        ({"MAILER_REDIS_URL": "http://127.0.0.1:6379/0"}, "MAILER_REDIS_URL"),
    ],
)
def test_refusals(changes: dict[str, str | None], names: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        settings(**changes)
    assert names in str(info.value)
    assert MAILER_SECRET not in str(info.value)


def test_redis_url_is_read_and_never_shown() -> None:
    url = "rediss://:hunter2-redis@redis.example:6380/1"
    assert settings(MAILER_REDIS_URL=url).redis_url == url
    assert settings().redis_url is None
    assert "hunter2" not in repr(settings(MAILER_REDIS_URL=url))


def test_none_security_on_loopback_is_allowed() -> None:
    assert settings(MAILER_SMTP_SECURITY="none", MAILERTOGO_SMTP_HOST="127.0.0.1").smtp


def test_create_app_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in BASE.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MAILER_LEGACY_ENDPOINTS", "1")
    app = create_app()
    rules = {rule.rule for rule in app.url_map.iter_rules()}
    assert "/v1/messages" in rules
    assert "/emailservice/<token>" in rules


def test_the_server_refuses_to_start_with_a_clear_message() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JWT_", "MAILER"))}
    env.update({"JWT_MAILER_SECRET": "too-short", "MAILERTOGO_SMTP_HOST": "127.0.0.1"})
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "flask_confirm_mail.mailer", "routes"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "JWT_MAILER_SECRET is too short: use at least 32 random bytes" in result.stderr
    assert "too-short" not in result.stderr
