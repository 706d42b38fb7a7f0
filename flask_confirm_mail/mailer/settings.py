"""The mailer's configuration: read once from the environment, checked, then frozen.

The names of the original Variance mailer are kept (``JWT_MAILER_SECRET``,
``MAILERTOGO_*``, ``SENDER_NAME``) so an existing deployment's settings work unchanged;
the new knobs start with ``MAILER_``. Every problem is a
:class:`~flask_confirm_mail.errors.ConfigurationError` whose message names the
variable, never its value.

Variables, with their defaults:

``JWT_MAILER_SECRET`` (required)
    HS256 key of the wrapping tokens, at least 32 bytes.
``JWT_MAILER_SECRET_PREVIOUS`` (none)
    An older key still accepted while apps switch to the new one.
``MAILERTOGO_SMTP_HOST`` (required), ``MAILERTOGO_SMTP_PORT`` (``587``)
    The SMTP server.
``MAILERTOGO_SMTP_USER``, ``MAILERTOGO_SMTP_PASSWORD`` (none)
    SMTP login; without a user there is no AUTH.
``MAILERTOGO_DOMAIN`` (required)
    Mail comes from ``noreply@<domain>``.
``SENDER_NAME`` (none)
    The ``From`` display name.
``MAILER_SMTP_SECURITY`` (``starttls``)
    ``starttls``, ``ssl``, or ``none`` (only for a loopback SMTP host).
``MAILER_SMTP_CA_FILE`` (the system's CAs)
    A PEM file of CAs to trust for the SMTP server's certificate.
``MAILER_SMTP_TIMEOUT`` (``10``)
    Seconds allowed for each SMTP operation.
``MAILER_ALLOWED_LINK_PREFIXES`` (required)
    Space- or comma-separated URL prefixes that links must start with: https, or http
    for a loopback host (development).
``MAILER_LEGACY_ENDPOINTS`` (``0``)
    ``1`` serves the original's ``GET /emailservice...`` routes.
``MAILER_RATE_LIMIT`` (``5``), ``MAILER_RATE_WINDOW`` (``3600``)
    At most that many emails per recipient per window (seconds); ``0`` turns it off.
``MAILER_LEEWAY`` (``30``)
    Seconds of clock skew allowed on ``iat`` and ``exp``, at most 300.
``MAILER_APP_NAME`` (``SENDER_NAME``, else the domain)
    The app's name in the emails and the sign-up subject.
``MAILER_SUBJECT_SIGNUP`` (``Confirm and access {app_name}``)
    The sign-up subject.
``MAILER_SUBJECT_CHANGE`` (``Confirm changed email/login``)
    The address-change subject.
``MAILER_LOG_LEVEL`` (``INFO``)
    The level of the mailer's own log; each request is one INFO line.
"""

from __future__ import annotations

import math
import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..addresses import normalize_address
from ..errors import AddressError, ConfigurationError
from ..mime import CONTROL_CHARACTERS
from ..smtp import SECURITY_MODES, SMTPSettings, is_loopback_host
from ..token_codec import MAX_LEEWAY, MIN_SECRET_BYTES, secret_bytes
from .link_policy import LinkPolicy

__all__ = ["ENV_DEFAULTS", "MailerSettings"]

#: Every variable the mailer reads, with its default (``None``: no default).
ENV_DEFAULTS: Mapping[str, str | None] = {
    "JWT_MAILER_SECRET": None,
    "JWT_MAILER_SECRET_PREVIOUS": None,
    "MAILERTOGO_SMTP_HOST": None,
    "MAILERTOGO_SMTP_PORT": "587",
    "MAILERTOGO_SMTP_USER": None,
    "MAILERTOGO_SMTP_PASSWORD": None,
    "MAILERTOGO_DOMAIN": None,
    "SENDER_NAME": None,
    "MAILER_SMTP_SECURITY": "starttls",
    "MAILER_SMTP_CA_FILE": None,
    "MAILER_SMTP_TIMEOUT": "10",
    "MAILER_ALLOWED_LINK_PREFIXES": None,
    "MAILER_LEGACY_ENDPOINTS": "0",
    "MAILER_RATE_LIMIT": "5",
    "MAILER_RATE_WINDOW": "3600",
    "MAILER_LEEWAY": "30",
    "MAILER_APP_NAME": None,
    "MAILER_SUBJECT_SIGNUP": "Confirm and access {app_name}",
    "MAILER_SUBJECT_CHANGE": "Confirm changed email/login",
    "MAILER_LOG_LEVEL": "INFO",
}

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


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

    @property
    def sender_address(self) -> str:
        """The envelope and ``From`` address."""
        return f"noreply@{self.domain}"

    def subject(self, template: str, app_name: str | None = None) -> str:
        """The subject of a ``template`` email; ``{app_name}`` is replaced."""
        pattern = self.subject_signup if template == "signup" else self.subject_change
        return pattern.replace("{app_name}", app_name or self.app_name)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> MailerSettings:
        """Read and check the settings from ``environ`` (default: ``os.environ``).

        :raises ConfigurationError: a variable is missing, malformed or unsafe.
        """
        env = _Environment(os.environ if environ is None else environ)
        secret = _secret(env.required("JWT_MAILER_SECRET", raw=True), "JWT_MAILER_SECRET")
        previous = env.raw("JWT_MAILER_SECRET_PREVIOUS")
        secrets: tuple[bytes, ...] = (secret,)
        if previous:
            secrets = (secret, _secret(previous, "JWT_MAILER_SECRET_PREVIOUS"))
        prefixes = env.required(
            "MAILER_ALLOWED_LINK_PREFIXES",
            hint="a space- or comma-separated list of the URL prefixes links may start with, "
            "e.g. https://app.example/confirm/",
        )
        link_policy = LinkPolicy.from_prefixes(re.split(r"[\s,]+", prefixes.strip()))
        domain = _domain(env.required("MAILERTOGO_DOMAIN"))
        sender_name = env.text("SENDER_NAME")
        return cls(
            secrets=secrets,
            smtp=_smtp_settings(env),
            domain=domain,
            sender_name=sender_name,
            link_policy=link_policy,
            legacy_endpoints=env.flag("MAILER_LEGACY_ENDPOINTS"),
            rate_limit=env.integer("MAILER_RATE_LIMIT", minimum=0),
            rate_window=env.integer("MAILER_RATE_WINDOW", minimum=1),
            leeway=env.integer("MAILER_LEEWAY", minimum=0, maximum=MAX_LEEWAY),
            app_name=env.text("MAILER_APP_NAME") or sender_name or domain,
            subject_signup=env.text("MAILER_SUBJECT_SIGNUP"),
            subject_change=env.text("MAILER_SUBJECT_CHANGE"),
            log_level=env.choice("MAILER_LOG_LEVEL", _LOG_LEVELS, upper=True),
        )


class _Environment:
    """Typed reads of environment variables, with :data:`ENV_DEFAULTS`."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def get(self, name: str) -> str | None:
        value = self._environ.get(name)
        if value is None or not value.strip():
            return ENV_DEFAULTS.get(name)
        return value.strip()

    def raw(self, name: str) -> str | None:
        """The value as given, white space included (secrets and passwords)."""
        return self._environ.get(name) or None

    def required(self, name: str, *, hint: str = "", raw: bool = False) -> str:
        value = self.raw(name) if raw else self.get(name)
        if value is None:
            extra = f": {hint}" if hint else ""
            raise ConfigurationError(f"The mailer needs {name}{extra}.")
        return value

    def text(self, name: str) -> str:
        value = self.get(name) or ""
        if CONTROL_CHARACTERS.search(value) or len(value) > 200 or "=?" in value:
            raise ConfigurationError(
                f"{name} must be one line of at most 200 characters, with no encoded words."
            )
        return value

    def flag(self, name: str) -> bool:
        value = (self.get(name) or "").lower()
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        raise ConfigurationError(f"{name} must be 1 or 0 (or true/false, yes/no, on/off).")

    def integer(self, name: str, *, minimum: int, maximum: int | None = None) -> int:
        raw = self.get(name) or ""
        try:
            value = int(raw)
        except ValueError:
            raise ConfigurationError(f"{name} must be a whole number.") from None
        if value < minimum or (maximum is not None and value > maximum):
            upper = f" and at most {maximum}" if maximum is not None else ""
            raise ConfigurationError(f"{name} must be at least {minimum}{upper}.")
        return value

    def seconds(self, name: str) -> float:
        raw = self.get(name) or ""
        try:
            value = float(raw)
        except ValueError:
            raise ConfigurationError(f"{name} must be a number of seconds.") from None
        if not math.isfinite(value) or not 0 < value <= 300:
            raise ConfigurationError(f"{name} must be more than 0 and at most 300 seconds.")
        return value

    def choice(self, name: str, choices: tuple[str, ...], *, upper: bool = False) -> str:
        value = self.get(name) or ""
        value = value.upper() if upper else value.lower()
        if value not in choices:
            raise ConfigurationError(f"{name} must be one of: {', '.join(choices).lower()}.")
        return value


def _secret(value: str, name: str) -> bytes:
    secret = secret_bytes(value)
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigurationError(
            f"{name} must be at least {MIN_SECRET_BYTES} bytes long; "
            'make one with: python -c "import secrets; print(secrets.token_urlsafe(48))"'
        )
    return secret


def _domain(value: str) -> str:
    try:
        return normalize_address(f"noreply@{value}").partition("@")[2]
    except AddressError:
        raise ConfigurationError("MAILERTOGO_DOMAIN must be a plain domain name.") from None


def _smtp_settings(env: _Environment) -> SMTPSettings:
    host = env.required("MAILERTOGO_SMTP_HOST")
    if CONTROL_CHARACTERS.search(host) or " " in host:
        raise ConfigurationError("MAILERTOGO_SMTP_HOST must be a host name or address.")
    port = env.integer("MAILERTOGO_SMTP_PORT", minimum=1, maximum=65535)
    security = env.choice("MAILER_SMTP_SECURITY", SECURITY_MODES)
    if security == "none" and not is_loopback_host(host):
        raise ConfigurationError(
            "MAILER_SMTP_SECURITY=none is allowed only for a loopback MAILERTOGO_SMTP_HOST; "
            "use starttls or ssl."
        )
    user = env.get("MAILERTOGO_SMTP_USER")
    context: ssl.SSLContext | None = None
    ca_file = env.get("MAILER_SMTP_CA_FILE")
    if ca_file is not None:
        try:
            context = ssl.create_default_context(cafile=ca_file)
        except (OSError, ssl.SSLError):
            raise ConfigurationError(
                "MAILER_SMTP_CA_FILE must name a readable PEM file of CA certificates."
            ) from None
    return SMTPSettings(
        host=host,
        port=port,
        security=security,
        username=user,
        password=env.raw("MAILERTOGO_SMTP_PASSWORD") if user else None,
        timeout=env.seconds("MAILER_SMTP_TIMEOUT"),
        ssl_context=context,
    )
