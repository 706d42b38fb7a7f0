"""Every ``CONFIRM_MAIL_*`` setting: its default, its meaning, and how it is checked.

:data:`OPTIONS` is the one list of settings. ``init_app`` puts each default into
``app.config`` with ``setdefault``, lets a constructor argument win over config, and
turns the result into a frozen :class:`Settings`, refusing unsafe values with a
:class:`~flask_confirm_mail.errors.ConfigurationError` that says what to change.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from flask import Flask

from .email_render import format_sender, unsafe_header
from .errors import ConfigurationError, DeliveryError
from .token_codec import MAX_LEEWAY, MIN_SECRET_BYTES, secret_bytes

PREFIX = "CONFIRM_MAIL_"
TRANSPORTS = ("flask_mail", "remote")
DELIVERY_MODES = ("sync", "thread", "worker")
MAILER_WIRES = ("v1", "variance")


@dataclass(frozen=True)
class Option:
    """One setting: ``CONFIRM_MAIL_<name>``."""

    name: str
    default: Any
    doc: str

    @property
    def key(self) -> str:
        return PREFIX + self.name


OPTIONS: tuple[Option, ...] = (
    Option(
        "SECRET",
        None,
        "Key that signs link tokens, at least 32 bytes. Unset: derived from "
        "`SECRET_KEY` for this purpose only (HMAC-SHA256), never `SECRET_KEY` itself.",
    ),
    Option(
        "PREVIOUS_SECRETS",
        (),
        "Older link secrets that still verify (rotation); tokens are always signed with `SECRET`.",
    ),
    Option(
        "LIFETIME",
        timedelta(hours=48),
        "How long a link works, counted from sending (a `timedelta` or seconds).",
    ),
    Option("LEEWAY", 30, f"Clock skew allowed on `exp` and `iat`, seconds (at most {MAX_LEEWAY})."),
    Option(
        "EXTERNAL_URL",
        None,
        "Base URL of the site for links in emails, e.g. "
        "`https://catloader.example.com`. Unset: built from `SERVER_NAME`. Never taken "
        "from the request's Host header.",
    ),
    Option("URL_PREFIX", "/confirm", "Where the blueprint's routes live."),
    Option(
        "SENDER",
        None,
        'From address, `"Name <addr>"` or a `(name, addr)` pair. Unset: `MAIL_DEFAULT_SENDER`.',
    ),
    Option("APP_NAME", None, "Name of the site shown in emails and pages. Unset: the app's name."),
    Option("SUBJECT", "Confirm your email address", "Subject of the sign-up email."),
    Option(
        "CHANGE_SUBJECT",
        "Confirm your new email address",
        "Subject of the email sent to a new address after an email change.",
    ),
    Option(
        "CONFIRMED_ENDPOINT",
        None,
        "Endpoint to redirect to after a confirmation. "
        "Unset: a page of the extension says it is done.",
    ),
    Option(
        "UNCONFIRMED_ENDPOINT",
        None,
        "Where `confirmed_required` sends unconfirmed users "
        "(HTML). Unset: the extension's resend page.",
    ),
    Option(
        "FLASH_CONFIRMED",
        "Your email address is confirmed.",
        "Flash message after a confirmation (category `success`).",
    ),
    Option(
        "FLASH_INVALID",
        "This confirmation link is not valid.",
        "Message shown for an invalid or expired link.",
    ),
    Option(
        "FLASH_UNCONFIRMED",
        "Please confirm your email address first.",
        "Flash message when `confirmed_required` turns a user away (category `warning`).",
    ),
    Option(
        "CONFIRM_ON_GET",
        False,
        "Confirm on GET of the link, as the original did. Off: GET "
        "shows a button that POSTs, so mail scanners that fetch links confirm nothing.",
    ),
    Option(
        "AUTO_SUBMIT",
        False,
        "The GET page submits its form by script (scanners that run "
        "scripts would then confirm: leave off unless you accept that).",
    ),
    Option(
        "RESEND_COOLDOWN", 60, "Seconds between two emails to one address from the resend route."
    ),
    Option(
        "TRANSPORT",
        "flask_mail",
        "`flask_mail` (in-process SMTP through Flask-Mail) or `remote` (the mailer service).",
    ),
    Option(
        "DELIVERY",
        "thread",
        "`sync` (after the request's commit), `thread` (a background "
        "sender in the app process) or `worker` (`flask confirm-mail worker` processes).",
    ),
    Option("MAX_ATTEMPTS", 8, "Delivery attempts before a message is `dead`."),
    Option("RETRY_BASE", 30, "First retry delay in seconds; doubles each attempt, with jitter."),
    Option("RETRY_MAX", 3600, "Largest retry delay in seconds."),
    Option("BATCH_SIZE", 20, "Messages claimed and sent over one connection per batch."),
    Option(
        "LEASE",
        120,
        "Seconds a claimed message is reserved for its worker; after that "
        "another worker may take it.",
    ),
    Option("POLL_INTERVAL", 1.0, "Seconds an idle sender or worker waits between polls."),
    Option("SMTP_TIMEOUT", 10.0, "Seconds for each SMTP socket operation."),
    Option("MAILER_URL", None, "The mailer service's base URL (`remote` transport)."),
    Option(
        "MAILER_SECRET",
        None,
        "Key that signs wrapping tokens for the mailer, at least 32 "
        "bytes, different from `SECRET`.",
    ),
    Option(
        "MAILER_WIRE",
        "v1",
        "`v1` (POST /v1/messages, token in the Authorization header) "
        "or `variance` (the original mailer's GET calls).",
    ),
    Option(
        "MAILER_BLUEPRINT", "emailservice-cat", "URL part of the original mailer (`variance` wire)."
    ),
    Option("MAILER_CONNECT_TIMEOUT", 5.0, "Seconds to connect to the mailer."),
    Option("MAILER_READ_TIMEOUT", 15.0, "Seconds to wait for the mailer's answer."),
)

OPTION_NAMES = frozenset(o.name for o in OPTIONS)


@dataclass(frozen=True)
class Settings:
    """The checked settings of one app."""

    secret: bytes = field(repr=False)
    previous_secrets: tuple[bytes, ...] = field(repr=False)
    lifetime: timedelta
    leeway: int
    link_prefix: str
    url_prefix: str
    sender: str | tuple[str, str] | None
    app_name: str
    subject: str
    change_subject: str
    confirmed_endpoint: str | None
    unconfirmed_endpoint: str | None
    flash_confirmed: str
    flash_invalid: str
    flash_unconfirmed: str
    confirm_on_get: bool
    auto_submit: bool
    resend_cooldown: timedelta
    transport: str
    delivery: str
    max_attempts: int
    retry_base: float
    retry_max: float
    batch_size: int
    lease: timedelta
    poll_interval: float
    smtp_timeout: float
    mailer_url: str | None
    mailer_secret: bytes | None = field(repr=False)
    mailer_wire: str
    mailer_blueprint: str
    mailer_connect_timeout: float
    mailer_read_timeout: float

    @property
    def verify_keys(self) -> tuple[bytes, ...]:
        return (self.secret, *self.previous_secrets)


def apply_defaults(app: Flask, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Set every default with ``setdefault``; return the values in force (overrides win)."""
    for option in OPTIONS:
        app.config.setdefault(option.key, option.default)
    return {o.name: overrides.get(o.name, app.config[o.key]) for o in OPTIONS}


def derive_link_secret(secret_key: str | bytes) -> bytes:
    """A link-token key derived from ``SECRET_KEY``, useless for anything else."""
    return hmac.new(
        secret_bytes(secret_key), b"flask-confirm-mail link token v1", hashlib.sha256
    ).digest()


def load_settings(app: Flask, overrides: Mapping[str, Any]) -> Settings:
    """Read, check and freeze the settings of ``app``."""
    raw = apply_defaults(app, overrides)
    secret = _link_secret(app, raw["SECRET"])
    previous = tuple(_checked_secret(s, "PREVIOUS_SECRETS") for s in raw["PREVIOUS_SECRETS"])
    mailer_secret = None
    if raw["MAILER_SECRET"] is not None:
        mailer_secret = _checked_secret(raw["MAILER_SECRET"], "MAILER_SECRET")
        if hmac.compare_digest(mailer_secret, secret):
            raise ConfigurationError(
                "CONFIRM_MAIL_MAILER_SECRET must differ from the link secret (CONFIRM_MAIL_SECRET)."
            )
    transport = _choice(raw, "TRANSPORT", TRANSPORTS)
    if transport == "remote" and (mailer_secret is None or not raw["MAILER_URL"]):
        raise ConfigurationError(
            "CONFIRM_MAIL_TRANSPORT='remote' needs CONFIRM_MAIL_MAILER_URL and "
            "CONFIRM_MAIL_MAILER_SECRET."
        )
    lifetime = _duration(raw["LIFETIME"], "LIFETIME")
    leeway = _number(raw["LEEWAY"], "LEEWAY", minimum=0, integer=True)
    if leeway > MAX_LEEWAY:
        raise ConfigurationError(f"CONFIRM_MAIL_LEEWAY may be at most {MAX_LEEWAY} seconds.")
    url_prefix = "/" + str(raw["URL_PREFIX"]).strip("/")
    sender = raw["SENDER"] or app.config.get("MAIL_DEFAULT_SENDER")
    _check_header_values(raw, sender)
    return Settings(
        secret=secret,
        previous_secrets=previous,
        lifetime=lifetime,
        leeway=int(leeway),
        link_prefix=_external_base(app, raw["EXTERNAL_URL"]) + url_prefix.rstrip("/") + "/",
        url_prefix=url_prefix,
        sender=sender,
        app_name=str(raw["APP_NAME"] or app.name),
        subject=str(raw["SUBJECT"]),
        change_subject=str(raw["CHANGE_SUBJECT"]),
        confirmed_endpoint=raw["CONFIRMED_ENDPOINT"],
        unconfirmed_endpoint=raw["UNCONFIRMED_ENDPOINT"],
        flash_confirmed=str(raw["FLASH_CONFIRMED"]),
        flash_invalid=str(raw["FLASH_INVALID"]),
        flash_unconfirmed=str(raw["FLASH_UNCONFIRMED"]),
        confirm_on_get=bool(raw["CONFIRM_ON_GET"]),
        auto_submit=bool(raw["AUTO_SUBMIT"]),
        resend_cooldown=_duration(raw["RESEND_COOLDOWN"], "RESEND_COOLDOWN", allow_zero=True),
        transport=transport,
        delivery=_choice(raw, "DELIVERY", DELIVERY_MODES),
        max_attempts=int(_number(raw["MAX_ATTEMPTS"], "MAX_ATTEMPTS", minimum=1, integer=True)),
        retry_base=_number(raw["RETRY_BASE"], "RETRY_BASE", minimum=0),
        retry_max=_number(raw["RETRY_MAX"], "RETRY_MAX", minimum=0),
        batch_size=int(_number(raw["BATCH_SIZE"], "BATCH_SIZE", minimum=1, integer=True)),
        lease=_duration(raw["LEASE"], "LEASE"),
        poll_interval=_number(raw["POLL_INTERVAL"], "POLL_INTERVAL", minimum=0.001),
        smtp_timeout=_number(raw["SMTP_TIMEOUT"], "SMTP_TIMEOUT", minimum=0.001),
        mailer_url=raw["MAILER_URL"],
        mailer_secret=mailer_secret,
        mailer_wire=_choice(raw, "MAILER_WIRE", MAILER_WIRES),
        mailer_blueprint=str(raw["MAILER_BLUEPRINT"]).strip("/"),
        mailer_connect_timeout=_number(
            raw["MAILER_CONNECT_TIMEOUT"], "MAILER_CONNECT_TIMEOUT", minimum=0.001
        ),
        mailer_read_timeout=_number(
            raw["MAILER_READ_TIMEOUT"], "MAILER_READ_TIMEOUT", minimum=0.001
        ),
    )


def _check_header_values(raw: Mapping[str, Any], sender: Any) -> None:
    """Refuse subjects and senders that could break out of their header line."""
    for name in ("SUBJECT", "CHANGE_SUBJECT"):
        if unsafe_header("Subject", str(raw[name])):
            raise ConfigurationError(f"CONFIRM_MAIL_{name} must be one line of plain text.")
    if sender is not None:
        try:
            format_sender(sender)
        except DeliveryError:
            raise ConfigurationError(
                "CONFIRM_MAIL_SENDER (or MAIL_DEFAULT_SENDER) must be one address on one line."
            ) from None


def _link_secret(app: Flask, configured: object) -> bytes:
    secret_key = app.config.get("SECRET_KEY")
    if configured is None:
        if not secret_key:
            raise ConfigurationError(
                "Set CONFIRM_MAIL_SECRET (at least 32 bytes) or SECRET_KEY, from which a "
                "link-token key is derived."
            )
        if len(secret_bytes(secret_key)) < MIN_SECRET_BYTES:
            # A derived key is only as hard to guess as the key it comes from.
            raise ConfigurationError(
                f"SECRET_KEY is too short to derive the link-token key from: set "
                f"CONFIRM_MAIL_SECRET (at least {MIN_SECRET_BYTES} random bytes) or a longer "
                "SECRET_KEY."
            )
        return derive_link_secret(secret_key)
    secret = _checked_secret(configured, "SECRET")
    if secret_key and hmac.compare_digest(secret, secret_bytes(secret_key)):
        raise ConfigurationError("CONFIRM_MAIL_SECRET must differ from SECRET_KEY.")
    return secret


def _checked_secret(value: object, name: str) -> bytes:
    if not isinstance(value, (str, bytes)):
        raise ConfigurationError(f"CONFIRM_MAIL_{name} must be a string or bytes.")
    secret = secret_bytes(value)
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigurationError(
            f"CONFIRM_MAIL_{name} is too short: use at least {MIN_SECRET_BYTES} random bytes "
            "(python -c 'import secrets; print(secrets.token_urlsafe(48))')."
        )
    return secret


def _choice(raw: Mapping[str, Any], name: str, allowed: tuple[str, ...]) -> str:
    value = raw[name]
    if value not in allowed:
        raise ConfigurationError(f"CONFIRM_MAIL_{name} must be one of {', '.join(allowed)}.")
    return str(value)


def _number(value: object, name: str, *, minimum: float, integer: bool = False) -> float:
    try:
        number = int(str(value)) if integer else float(str(value))
    except ValueError:
        raise ConfigurationError(f"CONFIRM_MAIL_{name} must be a number.") from None
    if number < minimum:
        raise ConfigurationError(f"CONFIRM_MAIL_{name} must be at least {minimum}.")
    return number


def _duration(value: object, name: str, *, allow_zero: bool = False) -> timedelta:
    if isinstance(value, timedelta):
        duration = value
    else:
        duration = timedelta(seconds=_number(value, name, minimum=float("-inf")))
    if duration < timedelta(0) or (duration == timedelta(0) and not allow_zero):
        raise ConfigurationError(f"CONFIRM_MAIL_{name} must be a positive duration.")
    return duration


def _external_base(app: Flask, configured: object) -> str:
    if configured:
        base = str(configured).rstrip("/")
    elif app.config.get("SERVER_NAME"):
        root = str(app.config.get("APPLICATION_ROOT") or "/").rstrip("/")
        base = f"{app.config['PREFERRED_URL_SCHEME']}://{app.config['SERVER_NAME']}{root}"
    else:
        raise ConfigurationError(
            "Set CONFIRM_MAIL_EXTERNAL_URL (e.g. https://www.example.com) or SERVER_NAME: "
            "links in emails are never built from the request's Host header."
        )
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ConfigurationError("CONFIRM_MAIL_EXTERNAL_URL must be an http(s) URL with a host.")
    return base
