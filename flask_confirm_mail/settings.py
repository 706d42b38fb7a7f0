"""Every ``CONFIRM_MAIL_*`` setting, defined once as an :class:`Option` of :class:`Settings`,
from which :data:`OPTIONS` (the docs' table) and :meth:`Settings.load` are derived."""

from __future__ import annotations

import hmac
import logging
import re
import weakref
from collections.abc import Callable, Mapping
from datetime import timedelta
from email.utils import parseaddr
from functools import cached_property
from typing import Any, Generic, TypeVar, overload
from urllib.parse import urlsplit

from flask import Flask

from .addresses import ascii_domain
from .errors import AddressError, ConfigurationError, DeliveryError
from .smtp import format_sender, unsafe_header
from .tokens import MIN_SECRET_BYTES, secret_bytes

PREFIX = "CONFIRM_MAIL_"
#: Keys that the README and docs print: an app deployed from a snippet unchanged would let
#: anyone mint links, so they are refused unless ``TESTING`` or debug is on.
EXAMPLE_SECRETS = frozenset({"dev only: set FLASK_SECRET_KEY in production"})
_MAKE_ONE = "python -c 'import secrets; print(secrets.token_urlsafe(48))'"
#: The apps already told that their key is short: once per app is enough.
_WARNED: weakref.WeakSet[Flask] = weakref.WeakSet()
_NO_SENDER = (
    "Set CONFIRM_MAIL_SENDER or MAIL_DEFAULT_SENDER: the confirmation email needs a From address."
)
T = TypeVar("T")
#: ``parse(value, key, app)`` returns the setting or raises a ConfigurationError naming
#: ``key``; ``app`` is ``None`` in :meth:`OptionSet.load_from`.
Parser = Callable[[Any, str, Any], T]


class Option(Generic[T]):
    """One setting, ``CONFIRM_MAIL_<NAME>`` unless ``key`` names it (and is its name), read as an
    attribute of its :class:`OptionSet`; ``advanced`` ones get a docs table of their own."""

    def __init__(
        self, default: Any, parse: Parser[T], doc: str, *, advanced: bool = False, key: str = ""
    ) -> None:
        self.default, self.parse, self.doc, self.advanced = default, parse, doc, advanced
        self.attribute = ""
        self.name = self.key = key

    def __set_name__(self, owner: type, attribute: str) -> None:
        self.attribute = attribute
        if not self.key:
            self.name, self.key = attribute.upper(), PREFIX + attribute.upper()

    @overload
    def __get__(self, obj: None, owner: type) -> Option[T]: ...
    @overload
    def __get__(self, obj: object, owner: type) -> T: ...
    def __get__(self, obj: object | None, owner: type) -> Option[T] | T:
        if obj is None:
            return self
        value: T = obj.__dict__[self.attribute]
        return value


def optional(parse: Parser[T]) -> Parser[T | None]:
    """``parse``, except that an unset value (``None``) stays ``None``."""
    return lambda value, key, app: None if value is None else parse(value, key, app)


def number(minimum: float, *, integer: bool = False, maximum: float | None = None) -> Parser[Any]:
    def parse(value: Any, key: str, app: Flask) -> float:
        try:
            number = int(str(value)) if integer else float(str(value))
        except ValueError:
            raise ConfigurationError(f"{key} must be a number.") from None
        if number < minimum:
            raise ConfigurationError(f"{key} must be at least {minimum}.")
        if maximum is not None and number > maximum:
            raise ConfigurationError(f"{key} may be at most {maximum:g}.")
        return number

    return parse


def duration(*, allow_zero: bool = False) -> Parser[timedelta]:
    def parse(value: Any, key: str, app: Flask) -> timedelta:
        if not isinstance(length := value, timedelta):
            length = timedelta(seconds=number(float("-inf"))(value, key, app))
        if length < timedelta(0) or (not length and not allow_zero):
            raise ConfigurationError(f"{key} must be a positive duration.")
        return length

    return parse


text = optional(lambda value, key, app: str(value))


def _delivery(value: Any, key: str, app: Flask) -> str:
    if value not in (modes := ("sync", "thread", "worker", "queue")):
        raise ConfigurationError(f"{key} must be one of {', '.join(modes)}.")
    return str(value)


_AGE = re.compile(r"([1-9][0-9]{0,4})([dhms])")


def parse_age(text: str) -> timedelta:
    """A number and a unit, ``14d``, ``12h``, ``30m`` or ``90s``, else :class:`ValueError`."""
    if (match := _AGE.fullmatch(text.strip())) is None:
        raise ValueError("give a number and d, h, m or s, e.g. 14d")
    unit = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}[match[2]]
    return timedelta(**{unit: int(match[1])})


def _reminders(value: Any, key: str, app: Flask) -> tuple[timedelta, ...]:
    items = [i for i in value.split(",") if i.strip()] if isinstance(value, str) else value or ()
    try:
        delays = [parse_age(i) if isinstance(i, str) else duration()(i, key, app) for i in items]
    except (ValueError, ConfigurationError):
        raise ConfigurationError(
            f'{key} must list delays after sign-up: "1d, 3d", or seconds or timedeltas.'
        ) from None
    if delays != sorted(set(delays)):
        raise ConfigurationError(f"{key} must list positive delays, each longer than the last.")
    return tuple(delays)


def _allow_short(name: str, app: Flask | None) -> bool:
    """Whether a short key may sign, only while developing; the warning never shows the key."""
    if app is None or not (app.debug or app.testing):
        return False
    if app not in _WARNED:
        _WARNED.add(app)
        logging.getLogger("flask_confirm_mail").warning(
            f"{name} is shorter than {MIN_SECRET_BYTES} bytes: accepted while debug or TESTING "
            f"is on, refused in production. Make a key with {_MAKE_ONE}"
        )
    return True


def _secret(value: Any, key: str, app: Flask | None, *, short_ok: bool = False) -> bytes:
    if not isinstance(value, (str, bytes)):
        raise ConfigurationError(f"{key} must be a string or bytes.")
    if len(secret := secret_bytes(value)) >= MIN_SECRET_BYTES:
        return secret
    if short_ok and secret and _allow_short(key, app):
        return derive_link_secret(secret)  # HS256 keys have 32 bytes (PyJWT warns below)
    raise ConfigurationError(
        f"{key} is too short: use at least {MIN_SECRET_BYTES} random bytes ({_MAKE_ONE})."
    )


#: A secret of at least :data:`~flask_confirm_mail.tokens.MIN_SECRET_BYTES`, or unset.
optional_secret = optional(_secret)


def derive_link_secret(secret_key: str | bytes) -> bytes:
    """A link-token key derived from ``SECRET_KEY``, useless for anything else."""
    return hmac.digest(secret_bytes(secret_key), b"flask-confirm-mail link token v1", "sha256")


def _refuse_example(name: str, secret: object, app: Flask) -> None:
    if isinstance(secret, bytes):
        secret = secret.decode("utf-8", "replace")
    if isinstance(secret, str) and secret in EXAMPLE_SECRETS and not (app.testing or app.debug):
        raise ConfigurationError(
            f"{name} is the documentation's example key, which anyone can read: make one "
            f"with {_MAKE_ONE} and set it (FLASK_{name} in the environment), or turn on "
            "debug or TESTING while developing."
        )


def _link_secret(value: Any, key: str, app: Flask) -> tuple[bytes, ...]:
    """The link-token keys, the signing one first, then the older ones that still verify."""
    secret_key = app.config.get("SECRET_KEY")
    _refuse_example("SECRET_KEY", secret_key, app)
    if value is None:
        if not secret_key:
            raise ConfigurationError(
                f"Set {key} (at least 32 bytes) or SECRET_KEY, from which a link-token key "
                "is derived."
            )
        if len(secret_bytes(secret_key)) < MIN_SECRET_BYTES and not _allow_short("SECRET_KEY", app):
            # A derived key is only as hard to guess as the key it comes from.
            raise ConfigurationError(
                f"SECRET_KEY is too short to derive the link-token key from: set {key} "
                f"(at least {MIN_SECRET_BYTES} random bytes) or a longer SECRET_KEY."
            )
        fallbacks = reversed(app.config.get("SECRET_KEY_FALLBACKS") or ())
        # A fallback too short to derive from never signed a link outside development.
        keys = [k for k in fallbacks if len(secret_bytes(k)) >= MIN_SECRET_BYTES]
        return tuple(derive_link_secret(k) for k in [secret_key, *keys])
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if not values:
        raise ConfigurationError(f"{key} must name at least one key.")
    for item in values:
        _refuse_example(key, item, app)
    secrets = tuple(_secret(item, key, app, short_ok=True) for item in reversed(values))
    if secret_key and any(hmac.compare_digest(s, secret_bytes(secret_key)) for s in secrets):
        raise ConfigurationError(f"{key} must differ from SECRET_KEY.")
    return secrets


def _external_url(value: Any, key: str, app: Flask) -> str:
    if value:
        base = str(value).rstrip("/")
    elif app.config.get("SERVER_NAME"):
        root = str(app.config.get("APPLICATION_ROOT") or "/").rstrip("/")
        base = f"{app.config['PREFERRED_URL_SCHEME']}://{app.config['SERVER_NAME']}{root}"
    else:
        raise ConfigurationError(
            f"Set {key} (e.g. https://www.example.com) or SERVER_NAME: "
            "links in emails are never built from the request's Host header."
        )
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ConfigurationError(f"{key} must be an http(s) URL with a host.")
    try:
        ascii_domain(parts.hostname)  # Message-IDs carry the host as A-labels
    except AddressError:
        raise ConfigurationError(f"{key}'s host is not a valid domain name.") from None
    return base


def _sender(value: Any, key: str, app: Flask) -> str | tuple[str, str] | None:
    if (sender := value or app.config.get("MAIL_DEFAULT_SENDER")) is None:
        return None
    pair = isinstance(sender, (list, tuple)) and len(sender) == 2
    name, address = (str(part) for part in sender) if pair else parseaddr(str(sender))
    local, _, domain = address.rpartition("@")
    try:
        if not domain.isascii():  # headers and SMTP take A-labels
            sender = (name, f"{local}@{ascii_domain(domain)}")
        format_sender(sender)
        mailable = local.isascii()
    except (DeliveryError, AddressError, UnicodeError):
        mailable = False
    if not mailable:
        raise ConfigurationError(
            f"{key} (or MAIL_DEFAULT_SENDER) must be one address on one line, ASCII before the @."
        )
    return tuple(sender) if isinstance(sender, list) else sender


def _host_name(value: Any, key: str, app: Flask) -> str:
    try:
        name = ascii_domain(str(value).strip())
    except AddressError:
        name = ""
    if not re.fullmatch(r"[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f.:]+\]", name):
        raise ConfigurationError(f"{key} must be a host name, e.g. mail.example.com.")
    return name


def _app_name(value: Any, key: str, app: Flask) -> str | None:
    if value and unsafe_header("Subject", str(value)):
        raise ConfigurationError(f"{key} must be one line of plain text.")
    return str(value) if value else None


def _rate_limits(value: Any, key: str, app: Flask) -> str | None:
    if value is None or value == "":
        return None
    try:
        import flask_limiter  # noqa: F401  # the limit is applied through it
        from limits import parse_many

        parse_many(str(value))
    except ImportError:
        raise ConfigurationError(
            f"{key} needs Flask-Limiter: pip install 'flask-confirm-mail[limiter]'."
        ) from None
    except ValueError:
        raise ConfigurationError(
            f"{key} must be a rate limit such as '5/minute;50/hour'."
        ) from None
    return str(value)


S = TypeVar("S", bound="OptionSet")


class OptionSet:
    """A frozen set of checked settings, one attribute per :class:`Option` of the class;
    optional parts and the mailer service (:meth:`load_from`) define their own."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self.__dict__.update(values)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Settings are read-only.")

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"  # secrets stay out of reprs and logs

    @classmethod
    def options(cls) -> tuple[Option[Any], ...]:
        """The class's options, in the order of its docs table."""
        return tuple(value for value in vars(cls).values() if isinstance(value, Option))

    @classmethod
    def load(cls: type[S], app: Flask, overrides: Mapping[str, Any] | None = None) -> S:
        """Read, check and freeze the settings of ``app``; ``overrides`` (by name) win over
        ``app.config``, where each default is set. Bad values raise one ConfigurationError."""
        return cls._parse(app, overrides or {})

    @classmethod
    def load_from(cls: type[S], mapping: Mapping[str, Any]) -> S:
        """As :meth:`load`, from ``mapping`` (``os.environ``, say) by key, without an app
        (parsers get ``app=None``). An empty value counts as unset."""
        return cls._parse(None, mapping)

    @classmethod
    def _parse(
        cls: type[S], app: Flask | None, given: Mapping[str, Any], needed: Mapping[str, str] = {}
    ) -> S:
        """The options read from ``given`` (by name over ``app.config``, or by key without an
        app), or one ConfigurationError naming each bad one and each of ``needed`` unset."""
        values, errors = {}, []
        for option in cls.options():
            if app is not None:
                raw = given.get(option.name, app.config.setdefault(option.key, option.default))
            elif (raw := given.get(option.key)) is None or raw == "":
                raw = option.default
            try:
                value = values[option.attribute] = option.parse(raw, option.key, app)
                if value is None and option.attribute in needed:
                    raise ConfigurationError(needed[option.attribute])
            except ConfigurationError as exc:
                errors += exc.errors
        if errors:
            raise ConfigurationError(*errors)
        return cls(values)


class Settings(OptionSet):
    """The checked settings of one app."""

    # fmt: off
    external_url = Option(
        None, _external_url,
        "Base URL of the site for links in emails, e.g. `https://catloader.example.com`. "
        "Unset: built from `SERVER_NAME`, never from the request's Host header.",
    )
    sender = Option(
        None, _sender, "The From address or `(name, address)` pair. Unset: `MAIL_DEFAULT_SENDER`."
    )
    secret = Option(
        None, _link_secret,
        "Key that signs link tokens and codes, or a list of keys, newest last (the older ones "
        "still verify). Unset: derived from `SECRET_KEY` and each of `SECRET_KEY_FALLBACKS`.",
    )
    lifetime = Option(timedelta(hours=48), duration(), "How long a link works after sending.")
    url_prefix = Option(
        "/confirm", lambda value, key, app: "/" + str(value).strip("/"), "URL prefix of the routes."
    )
    delivery = Option(
        "thread", _delivery,
        "`sync` (after the request's commit), `thread` (a sender thread in the app process), "
        "`worker` (`flask confirm-mail worker`) or `queue` (`ConfirmMail.handoff`).",
    )
    confirmed_endpoint = Option(
        None, text, "Endpoint to redirect to after a confirmation. Unset: a page says so."
    )
    unconfirmed_endpoint = Option(
        None, text,
        "Where `confirmed_required` sends unconfirmed users (HTML). Unset: the resend page.",
    )
    unconfirmed_access_for = Option(
        0, duration(allow_zero=True),
        "How long after sign-up `confirmed_required` still lets an unconfirmed user in. 0: never.",
    )
    resend_cooldown = Option(
        60, duration(allow_zero=True), "Shortest time between two resend emails to one address."
    )
    resend_limit = Option(
        None, _rate_limits,
        "Per-client limit on resend and code POSTs, e.g. `5/minute;50/hour` (Flask-Limiter).",
    )
    confirm_on_get = Option(
        False, lambda value, key, app: bool(value),
        "Confirm on GET of the link. Off: GET shows a button that POSTs, so mail scanners that "
        "fetch links confirm nothing.",
    )
    change_notice = Option(
        True, lambda value, key, app: bool(value),
        "After an email change, send the old address a notice without a link, the new address "
        "masked (`j***@e***.com`).",
    )
    reminders = Option(
        (), _reminders,
        "Delays after sign-up at which a never-confirmed account is reminded, once each; sent "
        "by `flask confirm-mail worker` and `flask confirm-mail remind --yes`. Empty: none.",
    )
    max_attempts = Option(8, number(1, integer=True), "Delivery attempts before a message is dead.")

    app_name = Option(
        None, _app_name,
        "Name of the site in emails and pages. Unset: the host of the external URL.", advanced=True,
    )
    change_email_endpoint = Option(
        None, text,
        "Endpoint of the app's change-email page, linked from the pages that say mail to the "
        "user's address bounced. Unset: the pages only say so.", advanced=True,
    )
    concurrency = Option(
        8, number(1, integer=True, maximum=256),
        "Emails in flight at once per delivery process, each over its own reused SMTP connection. "
        "Providers cap connections per account: stay below that in all processes.", advanced=True,
    )
    max_rate = Option(
        None, optional(number(0.001)),
        "Messages per second per delivery process, for providers that cap it. Unset: no limit.",
        advanced=True,
    )
    smtp_timeout = Option(10.0, number(0.001), "Seconds per SMTP socket operation.", advanced=True)
    ehlo_name = Option(
        None, optional(_host_name),
        "Name the SMTP client announces in EHLO. Unset: the machine's fully qualified name.",
        advanced=True,
    )
    # fmt: on

    @classmethod
    def load(
        cls, app: Flask, overrides: Mapping[str, Any] | None = None, *, need_sender: bool = False
    ) -> Settings:
        """As :meth:`OptionSet.load`; with ``need_sender``, an unset sender is an error too."""
        if app.testing:  # an app's tests see each email as its request ends
            app.config.setdefault("CONFIRM_MAIL_DELIVERY", "sync")
        needed = {"sender": _NO_SENDER} if need_sender else {}
        settings = cls._parse(app, overrides or {}, needed)
        if settings.app_name is None:  # the Flask app's import name means nothing to a reader
            settings.__dict__["app_name"] = urlsplit(settings.external_url).hostname
        return settings

    @cached_property
    def link_prefix(self) -> str:
        """The confirm route's URL up to the token, e.g. ``https://site.example/confirm/``."""
        return self.external_url + self.url_prefix.rstrip("/") + "/"

    @cached_property
    def host(self) -> str:
        """The site's host name in A-labels, the domain of Message-IDs."""
        return ascii_domain(urlsplit(self.external_url).hostname or "localhost")


#: Every setting, in the order of the docs' configuration table.
OPTIONS = Settings.options()
OPTION_NAMES = frozenset(option.name for option in OPTIONS)
