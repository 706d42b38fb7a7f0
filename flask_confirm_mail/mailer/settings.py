"""The mailer's configuration: read once from the environment, checked, then frozen.

The names of the original Variance mailer are kept (``JWT_MAILER_SECRET``,
``MAILERTOGO_*``, ``SENDER_NAME``) so an existing deployment's settings work unchanged;
the new knobs start with ``MAILER_``. :data:`OPTIONS` lists every variable once, with its
default, its parser and what it does; :data:`ENV_DEFAULTS` and
:meth:`MailerSettings.from_env` are built from it. Every problem is a
:class:`~flask_confirm_mail.errors.ConfigurationError` whose message names the
variable, never its value.
"""

from __future__ import annotations

import json
import math
import os
import re
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigurationError
from ..smtp import CONTROL_CHARACTERS, SECURITY_MODES, SMTPSettings
from .link_policy import LinkPolicy
from .wire import MAX_LEEWAY, MIN_SECRET_BYTES, is_loopback_host

__all__ = ["ENV_DEFAULTS", "OPTIONS", "Caller", "MailerSettings", "Option"]

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"(?:{_LABEL}\.)+{_LABEL}")

#: A parser: ``(variable name, value or default)`` -> the setting; ``None`` means unset.
Parser = Callable[[str, str | None], Any]


# --- parsers -------------------------------------------------------------------------


def _text(name: str, value: str | None) -> str:
    value = value or ""
    if CONTROL_CHARACTERS.search(value) or len(value) > 200 or "=?" in value:
        raise ConfigurationError(
            f"{name} must be one line of at most 200 characters, with no encoded words."
        )
    return value


def _optional(name: str, value: str | None) -> str | None:
    return value


def _flag(name: str, value: str | None) -> bool:
    word = (value or "").lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ConfigurationError(f"{name} must be 1 or 0 (or true/false, yes/no, on/off).")


def _integer(minimum: int, maximum: int | None = None) -> Parser:
    def parse(name: str, value: str | None) -> int:
        try:
            number = int(value or "")
        except ValueError:
            raise ConfigurationError(f"{name} must be a whole number.") from None
        if number < minimum or (maximum is not None and number > maximum):
            upper = f" and at most {maximum}" if maximum is not None else ""
            raise ConfigurationError(f"{name} must be at least {minimum}{upper}.")
        return number

    return parse


def _seconds(name: str, value: str | None) -> float:
    try:
        number = float(value or "")
    except ValueError:
        raise ConfigurationError(f"{name} must be a number of seconds.") from None
    if not math.isfinite(number) or not 0 < number <= 300:
        raise ConfigurationError(f"{name} must be more than 0 and at most 300 seconds.")
    return number


def _choice(choices: tuple[str, ...], *, upper: bool = False) -> Parser:
    def parse(name: str, value: str | None) -> str:
        word = (value or "").upper() if upper else (value or "").lower()
        if word not in choices:
            raise ConfigurationError(f"{name} must be one of: {', '.join(choices).lower()}.")
        return word

    return parse


def _required(parse: Parser, hint: str = "") -> Parser:
    def required(name: str, value: str | None) -> Any:
        if value is None:
            raise ConfigurationError(f"The mailer needs {name}{f': {hint}' if hint else ''}.")
        return parse(name, value)

    return required


def _secret(name: str, value: str | None) -> bytes | None:
    if value is None:
        return None
    secret = value.encode("utf-8")
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigurationError(
            f"{name} must be at least {MIN_SECRET_BYTES} bytes long; "
            'make one with: python -c "import secrets; print(secrets.token_urlsafe(48))"'
        )
    return secret


def _link_policy(name: str, value: str | None) -> LinkPolicy:
    return LinkPolicy.from_prefixes(re.split(r"[\s,]+", (value or "").strip()))


@dataclass(frozen=True)
class Caller:
    """The apps whose tokens one key (or key pair) verifies.

    ``app_name``: the name every one of their emails shows, whatever their ``extra``
    says; ``None`` lets a caller choose it.
    """

    secrets: tuple[bytes, ...] = field(repr=False)
    app_name: str | None = None


def _callers(name: str, value: str | None) -> tuple[Caller, ...]:
    if value is None:
        return ()
    try:
        table = json.loads(value)
    except ValueError:
        table = None
    if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
        raise ConfigurationError(
            f'{name} must be a JSON object of app names to secrets: {{"CatLoader": "..."}}.'
        )
    callers = []
    for app_name, secret in table.items():
        if not app_name or len(app_name) > 60:
            raise ConfigurationError(f"{name}: an app name must have 1 to 60 characters.")
        _text(name, app_name)
        key = _secret(name, secret)
        assert key is not None
        callers.append(Caller((key,), app_name))
    return tuple(callers)


def _redis_url(name: str, value: str | None) -> str | None:
    if value is None:
        return None
    if CONTROL_CHARACTERS.search(value) or not value.startswith(
        ("redis://", "rediss://", "unix://")
    ):
        raise ConfigurationError(f"{name} must be a redis://, rediss:// or unix:// URL.")
    return value


def _domain(name: str, value: str | None) -> str:
    value = value or ""
    # ``noreply@<domain>`` must fit the 254 characters of an address.
    if len(value) > 246 or _DOMAIN.fullmatch(value) is None:
        raise ConfigurationError(f"{name} must be a plain domain name.")
    return value.lower()


def _host(name: str, value: str | None) -> str:
    value = value or ""
    if CONTROL_CHARACTERS.search(value) or " " in value:
        raise ConfigurationError(f"{name} must be a host name or address.")
    return value


def _ca_file(name: str, value: str | None) -> ssl.SSLContext | None:
    if value is None:
        return None
    try:
        return ssl.create_default_context(cafile=value)
    except (OSError, ssl.SSLError):
        raise ConfigurationError(
            f"{name} must name a readable PEM file of CA certificates."
        ) from None


# --- the table -----------------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """One environment variable of the mailer."""

    #: The variable's name.
    name: str
    #: Its default, as the text the variable would hold; ``None``: unset.
    default: str | None
    #: Turns the value (or the default) into the setting; see :data:`Parser`.
    parse: Parser = field(repr=False)
    #: What it does, in one line.
    doc: str
    #: Taken as given, white space included (secrets and passwords); otherwise stripped.
    raw: bool = False

    def read(self, environ: Mapping[str, str]) -> Any:
        """The parsed setting from ``environ``; a blank variable counts as unset."""
        value = environ.get(self.name)
        if self.raw:
            value = value or None
        elif value is not None:
            value = value.strip() or None
        return self.parse(self.name, self.default if value is None else value)


_PREFIX_HINT = (
    "a space- or comma-separated list of the URL prefixes links may start with, "
    "e.g. https://app.example/confirm/"
)

#: Every variable the mailer reads, in the order they are checked.
OPTIONS: tuple[Option, ...] = (
    Option(
        "JWT_MAILER_SECRET", None, _required(_secret),
        "HS256 key of the wrapping tokens, at least 32 bytes.", raw=True,
    ),
    Option(
        "JWT_MAILER_SECRET_PREVIOUS", None, _secret,
        "An older key still accepted while apps switch to the new one.", raw=True,
    ),
    Option(
        "MAILER_ALLOWED_LINK_PREFIXES", None, _required(_link_policy, _PREFIX_HINT),
        "URL prefixes links must start with: https, or http for a loopback host.",
    ),
    Option(
        "MAILERTOGO_DOMAIN", None, _required(_domain),
        "Mail comes from noreply@<domain>; Message-IDs end with it.",
    ),
    Option("SENDER_NAME", None, _text, "The From display name."),
    Option("MAILERTOGO_SMTP_HOST", None, _required(_host), "The SMTP server."),
    Option("MAILERTOGO_SMTP_PORT", "587", _integer(1, 65535), "The SMTP server's port."),
    Option(
        "MAILER_SMTP_SECURITY", "starttls", _choice(SECURITY_MODES),
        "starttls, ssl, or none (only for a loopback SMTP host).",
    ),
    Option(
        "MAILERTOGO_SMTP_USER", None, _optional,
        "The SMTP login; without a user there is no AUTH.",
    ),
    Option(
        "MAILER_SMTP_CA_FILE", None, _ca_file,
        "A PEM file of CAs to trust for the SMTP server's certificate (default: the system's).",
    ),
    Option(
        "MAILERTOGO_SMTP_PASSWORD", None, _optional,
        "The SMTP password, used only with MAILERTOGO_SMTP_USER.", raw=True,
    ),
    Option("MAILER_SMTP_TIMEOUT", "10", _seconds, "Seconds allowed for each SMTP operation."),
    Option(
        "MAILER_LEGACY_ENDPOINTS", "0", _flag,
        "1 serves the original's GET /emailservice... routes.",
    ),
    Option(
        "MAILER_RATE_LIMIT", "5", _integer(0),
        "Emails per recipient per MAILER_RATE_WINDOW; 0 turns the limit off.",
    ),
    Option("MAILER_RATE_WINDOW", "3600", _integer(1), "The rate limit's window, in seconds."),
    Option(
        "MAILER_LEEWAY", "30", _integer(0, MAX_LEEWAY),
        "Seconds of clock skew allowed on iat and exp, at most 300.",
    ),
    Option(
        "MAILER_APP_NAME", None, _text,
        "The app's name in the emails and the sign-up subject (default: SENDER_NAME, else "
        "the domain).",
    ),
    Option(
        "MAILER_APP_NAME_FIXED", "0", _flag,
        "1: emails of JWT_MAILER_SECRET's callers always show MAILER_APP_NAME, whatever "
        "their extra.app_name says.",
    ),
    Option(
        "MAILER_CALLERS", None, _callers,
        'More callers, each with its own secret and a fixed app name: JSON '
        '{"<app name>": "<secret>"}.', raw=True,
    ),
    Option(
        "MAILER_SUBJECT_SIGNUP", "Confirm and access {app_name}", _text,
        "The sign-up subject.",
    ),
    Option(
        "MAILER_SUBJECT_CHANGE", "Confirm changed email/login", _text,
        "The address-change subject.",
    ),
    Option(
        "MAILER_REDIS_URL", None, _redis_url,
        "Redis for the replay store and the rate limit, shared by every process; "
        "without it both are per process.", raw=True,
    ),
    Option(
        "MAILER_LOG_LEVEL", "INFO", _choice(_LOG_LEVELS, upper=True),
        "The level of the mailer's own log; each request is one INFO line.",
    ),
)  # fmt: skip

#: Every variable the mailer reads, with its default (``None``: no default).
ENV_DEFAULTS: Mapping[str, str | None] = {option.name: option.default for option in OPTIONS}


@dataclass(frozen=True)
class MailerSettings:
    """Everything the mailer service needs, checked.

    Build it with :meth:`from_env`; tests may build one directly.
    """

    #: Keys that verify wrapping tokens, the current one first.
    secrets: tuple[bytes, ...] = field(repr=False)
    smtp: SMTPSettings
    #: The sender's domain: mail comes from ``noreply@<domain>``.
    domain: str
    #: The sender's display name (may be empty).
    sender_name: str
    link_policy: LinkPolicy
    legacy_endpoints: bool = False
    #: Emails per recipient per :attr:`rate_window` seconds; ``0`` turns the limit off.
    rate_limit: int = 5
    rate_window: int = 3600
    #: Clock skew allowed on ``iat``/``exp``, in seconds.
    leeway: int = 30
    #: The name emails and the sign-up subject use for the app.
    app_name: str = ""
    subject_signup: str = "Confirm and access {app_name}"
    subject_change: str = "Confirm changed email/login"
    log_level: str = "INFO"
    #: Callers with keys of their own (``MAILER_CALLERS``); each has a fixed app name.
    callers: tuple[Caller, ...] = field(default=(), repr=False)
    #: Whether the callers of :attr:`secrets` get :attr:`app_name`, whatever they ask.
    app_name_fixed: bool = False
    #: Where the replay store and the rate limit live; ``None``: in each process.
    redis_url: str | None = field(default=None, repr=False)

    @property
    def sender_address(self) -> str:
        """The envelope and ``From`` address."""
        return f"noreply@{self.domain}"

    @property
    def all_callers(self) -> tuple[Caller, ...]:
        """Every caller: the one of :attr:`secrets` first, then :attr:`callers`."""
        main = Caller(self.secrets, self.app_name if self.app_name_fixed else None)
        return (main, *self.callers)

    def subject(self, template: str, app_name: str | None = None) -> str:
        """The subject of a ``template`` email; ``{app_name}`` is replaced."""
        pattern = self.subject_signup if template == "signup" else self.subject_change
        return pattern.replace("{app_name}", app_name or self.app_name)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> MailerSettings:
        """Read and check the settings from ``environ`` (default: ``os.environ``).

        :raises ConfigurationError: a variable is missing, malformed or unsafe.
        """
        env = os.environ if environ is None else environ
        v = {option.name: option.read(env) for option in OPTIONS}
        host: str = v["MAILERTOGO_SMTP_HOST"]
        if v["MAILER_SMTP_SECURITY"] == "none" and not is_loopback_host(host):
            raise ConfigurationError(
                "MAILER_SMTP_SECURITY=none is allowed only for a loopback MAILERTOGO_SMTP_HOST; "
                "use starttls or ssl."
            )
        user: str | None = v["MAILERTOGO_SMTP_USER"]
        smtp = SMTPSettings(
            host=host,
            port=v["MAILERTOGO_SMTP_PORT"],
            security=v["MAILER_SMTP_SECURITY"],
            username=user,
            password=v["MAILERTOGO_SMTP_PASSWORD"] if user else None,
            timeout=v["MAILER_SMTP_TIMEOUT"],
            ssl_context=v["MAILER_SMTP_CA_FILE"],
        )
        previous: bytes | None = v["JWT_MAILER_SECRET_PREVIOUS"]
        return cls(
            secrets=(v["JWT_MAILER_SECRET"], *([previous] if previous else [])),
            smtp=smtp,
            domain=v["MAILERTOGO_DOMAIN"],
            sender_name=v["SENDER_NAME"],
            link_policy=v["MAILER_ALLOWED_LINK_PREFIXES"],
            legacy_endpoints=v["MAILER_LEGACY_ENDPOINTS"],
            rate_limit=v["MAILER_RATE_LIMIT"],
            rate_window=v["MAILER_RATE_WINDOW"],
            leeway=v["MAILER_LEEWAY"],
            app_name=v["MAILER_APP_NAME"] or v["SENDER_NAME"] or v["MAILERTOGO_DOMAIN"],
            subject_signup=v["MAILER_SUBJECT_SIGNUP"],
            subject_change=v["MAILER_SUBJECT_CHANGE"],
            log_level=v["MAILER_LOG_LEVEL"],
            redis_url=v["MAILER_REDIS_URL"],
            callers=v["MAILER_CALLERS"],
            app_name_fixed=v["MAILER_APP_NAME_FIXED"],
        )
