"""The mailer's configuration: read once from the environment, checked, then frozen.

The names of the original Variance mailer are kept (``JWT_MAILER_SECRET``,
``MAILERTOGO_*``, ``SENDER_NAME``) so an existing deployment's settings work unchanged;
the new knobs start with ``MAILER_``. Each variable is one
:class:`~flask_confirm_mail.settings.Option` of :class:`MailerSettings`, with its default,
its parser and what it does; :data:`ENV_DEFAULTS` and :meth:`MailerSettings.from_env` are
built from them. Every problem is a :class:`~flask_confirm_mail.errors.ConfigurationError`
whose message names the variable, never its value.
"""

from __future__ import annotations

import json
import math
import os
import re
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TypeVar

from flask import Flask

from ..errors import ConfigurationError
from ..settings import Option, OptionSet, Parser, number, optional_secret, text
from ..smtp import CONTROL_CHARACTERS, SECURITY_MODES, SMTPSettings
from .link_policy import LinkPolicy
from .wire import MAX_LEEWAY, is_loopback_host

__all__ = ["ENV_DEFAULTS", "Caller", "MailerSettings"]

T = TypeVar("T")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"(?:{_LABEL}\.)+{_LABEL}")
#: Options whose values may hold white space (secrets, passwords), so are not stripped.
_AS_GIVEN = frozenset({"secret", "secret_previous", "smtp_password", "callers", "redis_url"})


# --- parsers of environment values: ``None`` means unset ---------------------------------


def _line(value: str | None, key: str, app: Flask | None) -> str:
    value = value or ""
    if CONTROL_CHARACTERS.search(value) or len(value) > 200 or "=?" in value:
        raise ConfigurationError(
            f"{key} must be one line of at most 200 characters, with no encoded words."
        )
    return value


def _flag(value: str | None, key: str, app: Flask | None) -> bool:
    word = (value or "").lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ConfigurationError(f"{key} must be 1 or 0 (or true/false, yes/no, on/off).")


def _seconds(value: str | None, key: str, app: Flask | None) -> float:
    try:
        number = float(value or "")
    except ValueError:
        raise ConfigurationError(f"{key} must be a number of seconds.") from None
    if not math.isfinite(number) or not 0 < number <= 300:
        raise ConfigurationError(f"{key} must be more than 0 and at most 300 seconds.")
    return number


def _word(choices: tuple[str, ...], *, upper: bool = False) -> Parser[str]:
    """One of ``choices``, in any case."""

    def parse(value: str | None, key: str, app: Flask | None) -> str:
        word = (value or "").upper() if upper else (value or "").lower()
        if word not in choices:
            raise ConfigurationError(f"{key} must be one of: {', '.join(choices).lower()}.")
        return word

    return parse


def _required(parse: Parser[T], hint: str = "") -> Parser[T]:
    def required(value: str | None, key: str, app: Flask | None) -> T:
        if value is None:
            raise ConfigurationError(f"The mailer needs {key}{f': {hint}' if hint else ''}.")
        return parse(value, key, app)

    return required


_secret = _required(optional_secret)


def _link_policy(value: str | None, key: str, app: Flask | None) -> LinkPolicy:
    return LinkPolicy.from_prefixes(re.split(r"[\s,]+", (value or "").strip()))


@dataclass(frozen=True)
class Caller:
    """The apps whose tokens one key (or key pair) verifies.

    ``app_name``: the name every one of their emails shows, whatever their ``extra``
    says; ``None`` lets a caller choose it.
    """

    secrets: tuple[bytes, ...] = field(repr=False)
    app_name: str | None = None


def _callers(value: str | None, key: str, app: Flask | None) -> tuple[Caller, ...]:
    if value is None:
        return ()
    try:
        table = json.loads(value)
    except ValueError:
        table = None
    if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
        raise ConfigurationError(
            f'{key} must be a JSON object of app names to secrets: {{"CatLoader": "..."}}.'
        )
    callers = []
    for app_name, secret in table.items():
        if not app_name or len(app_name) > 60:
            raise ConfigurationError(f"{key}: an app name must have 1 to 60 characters.")
        _line(app_name, key, app)
        secret_key = _secret(secret, key, app)
        assert secret_key is not None  # a string is never unset
        callers.append(Caller((secret_key,), app_name))
    return tuple(callers)


def _redis_url(value: str | None, key: str, app: Flask | None) -> str | None:
    if value is None:
        return None
    if CONTROL_CHARACTERS.search(value) or not value.startswith(
        ("redis://", "rediss://", "unix://")
    ):
        raise ConfigurationError(f"{key} must be a redis://, rediss:// or unix:// URL.")
    return value


def _domain(value: str | None, key: str, app: Flask | None) -> str:
    value = value or ""
    # ``noreply@<domain>`` must fit the 254 characters of an address.
    if len(value) > 246 or _DOMAIN.fullmatch(value) is None:
        raise ConfigurationError(f"{key} must be a plain domain name.")
    return value.lower()


def _host(value: str | None, key: str, app: Flask | None) -> str:
    value = value or ""
    if CONTROL_CHARACTERS.search(value) or " " in value:
        raise ConfigurationError(f"{key} must be a host name or address.")
    return value


def _ca_file(value: str | None, key: str, app: Flask | None) -> ssl.SSLContext | None:
    if value is None:
        return None
    try:
        return ssl.create_default_context(cafile=value)
    except (OSError, ssl.SSLError):
        raise ConfigurationError(
            f"{key} must name a readable PEM file of CA certificates."
        ) from None


_PREFIX_HINT = (
    "a space- or comma-separated list of the URL prefixes links may start with, "
    "e.g. https://app.example/confirm/"
)


# --- the settings ----------------------------------------------------------------------


class MailerSettings(OptionSet):
    """Everything the mailer service needs, checked: build it with :meth:`from_env`.

    Each attribute below is one environment variable, read in this order; defaults are
    written as the text the variable would hold.
    """

    # fmt: off
    secret = Option(
        None, _secret, "HS256 key of the wrapping tokens, at least 32 bytes.",
        key="JWT_MAILER_SECRET",
    )
    secret_previous = Option(
        None, optional_secret, "An older key still accepted while apps switch to the new one.",
        key="JWT_MAILER_SECRET_PREVIOUS",
    )
    link_policy = Option(
        None, _required(_link_policy, _PREFIX_HINT),
        "URL prefixes links must start with: https, or http for a loopback host.",
        key="MAILER_ALLOWED_LINK_PREFIXES",
    )
    domain = Option(
        None, _required(_domain), "Mail comes from noreply@<domain>; Message-IDs end with it.",
        key="MAILERTOGO_DOMAIN",
    )
    sender_name = Option(None, _line, "The From display name.", key="SENDER_NAME")
    smtp_host = Option(None, _required(_host), "The SMTP server.", key="MAILERTOGO_SMTP_HOST")
    smtp_port: Option[int] = Option(
        "587", number(1, integer=True, maximum=65535), "The SMTP server's port.",
        key="MAILERTOGO_SMTP_PORT",
    )
    smtp_security = Option(
        "starttls", _word(SECURITY_MODES),
        "starttls, ssl, or none (only for a loopback SMTP host).", key="MAILER_SMTP_SECURITY",
    )
    smtp_user = Option(
        None, text, "The SMTP login; without a user there is no AUTH.",
        key="MAILERTOGO_SMTP_USER",
    )
    smtp_ssl_context = Option(
        None, _ca_file,
        "A PEM file of CAs to trust for the SMTP server's certificate (default: the system's).",
        key="MAILER_SMTP_CA_FILE",
    )
    smtp_password = Option(
        None, text, "The SMTP password, used only with MAILERTOGO_SMTP_USER.",
        key="MAILERTOGO_SMTP_PASSWORD",
    )
    smtp_timeout = Option(
        "10", _seconds, "Seconds allowed for each SMTP operation.", key="MAILER_SMTP_TIMEOUT"
    )
    legacy_endpoints = Option(
        "0", _flag, "1 serves the original's GET /emailservice... routes.",
        key="MAILER_LEGACY_ENDPOINTS",
    )
    rate_limit: Option[int] = Option(
        "5", number(0, integer=True),
        "Emails per recipient per MAILER_RATE_WINDOW; 0 turns the limit off.",
        key="MAILER_RATE_LIMIT",
    )
    rate_window: Option[int] = Option(
        "3600", number(1, integer=True), "The rate limit's window, in seconds.",
        key="MAILER_RATE_WINDOW",
    )
    leeway: Option[int] = Option(
        "30", number(0, integer=True, maximum=MAX_LEEWAY),
        "Seconds of clock skew allowed on iat and exp, at most 300.", key="MAILER_LEEWAY",
    )
    app_name = Option(
        None, _line,
        "The app's name in the emails and the sign-up subject (default: SENDER_NAME, else "
        "the domain).", key="MAILER_APP_NAME",
    )
    app_name_fixed = Option(
        "0", _flag,
        "1: emails of JWT_MAILER_SECRET's callers always show MAILER_APP_NAME, whatever "
        "their extra.app_name says.", key="MAILER_APP_NAME_FIXED",
    )
    callers = Option(
        None, _callers,
        'More callers, each with its own secret and a fixed app name: JSON '
        '{"<app name>": "<secret>"}.', key="MAILER_CALLERS",
    )
    subject_signup = Option(
        "Confirm and access {app_name}", _line,
        "The sign-up subject; left at its default, it is translated for other languages.",
        key="MAILER_SUBJECT_SIGNUP",
    )
    subject_change = Option(
        "Confirm changed email/login", _line,
        "The address-change subject; left at its default, it is translated for other "
        "languages.",
        key="MAILER_SUBJECT_CHANGE",
    )
    redis_url = Option(
        None, _redis_url,
        "Redis for the replay store and the rate limit, shared by every process; "
        "without it both are per process.", key="MAILER_REDIS_URL",
    )
    log_level = Option(
        "INFO", _word(_LOG_LEVELS, upper=True),
        "The level of the mailer's own log; each request is one INFO line.",
        key="MAILER_LOG_LEVEL",
    )
    # fmt: on

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> MailerSettings:
        """Read and check the settings from ``environ`` (default: ``os.environ``).

        :raises ConfigurationError: a variable is missing, malformed or unsafe.
        """
        env = os.environ if environ is None else environ
        values = {
            option.key: value if option.attribute in _AS_GIVEN else value.strip()
            for option in cls.options()
            if (value := env.get(option.key)) is not None
        }
        settings = cls.load_from(values)
        if settings.smtp_security == "none" and not is_loopback_host(settings.smtp_host):
            raise ConfigurationError(
                "MAILER_SMTP_SECURITY=none is allowed only for a loopback MAILERTOGO_SMTP_HOST; "
                "use starttls or ssl."
            )
        settings.__dict__["app_name"] = settings.app_name or settings.sender_name or settings.domain
        return settings

    @cached_property
    def secrets(self) -> tuple[bytes, ...]:
        """Keys that verify wrapping tokens, the current one first."""
        return tuple(key for key in (self.secret, self.secret_previous) if key)

    @cached_property
    def smtp(self) -> SMTPSettings:
        return SMTPSettings(
            host=self.smtp_host,
            port=self.smtp_port,
            security=self.smtp_security,
            username=self.smtp_user,
            password=self.smtp_password if self.smtp_user else None,
            timeout=self.smtp_timeout,
            ssl_context=self.smtp_ssl_context,
        )

    @property
    def sender_address(self) -> str:
        """The envelope and ``From`` address."""
        return f"noreply@{self.domain}"

    @property
    def all_callers(self) -> tuple[Caller, ...]:
        """Every caller: the one of :attr:`secrets` first, then :attr:`callers`."""
        main = Caller(self.secrets, self.app_name if self.app_name_fixed else None)
        return (main, *self.callers)

    def subject(
        self,
        template: str,
        app_name: str | None = None,
        translate: Callable[[str], str] | None = None,
    ) -> str:
        """The subject of a ``template`` email; ``{app_name}`` is replaced.

        With ``translate`` (a catalog's ``gettext``, for a reader of another language than
        English), a subject left at its default is the package's own subject in that
        language; a configured one is sent as written.
        """
        option = (
            MailerSettings.subject_signup if template == "signup" else MailerSettings.subject_change
        )
        pattern: str = getattr(self, option.attribute)
        if translate is not None and pattern == option.default:
            return translate(_CATALOG_SUBJECTS[template])
        return pattern.replace("{app_name}", app_name or self.app_name)


#: The subject of each template in the package's catalogs (the core's email subjects).
_CATALOG_SUBJECTS = {
    "signup": "Confirm your email address",
    "change": "Confirm your new email address",
}

#: Every variable the mailer reads, with its default (``None``: no default).
ENV_DEFAULTS: Mapping[str, str | None] = {o.key: o.default for o in MailerSettings.options()}
