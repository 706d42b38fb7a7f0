"""How an email leaves: the :class:`Transport` interface, the :class:`ConfirmationEmail` it
takes, and the in-process transport, :class:`SMTPTransport`.

``init_app`` (:meth:`Transport.init_app`) checks the transport's settings when the
extension starts. The delivery loop hands each claimed email, its link just minted, to
:meth:`Transport.send` of the app's transport from up to ``CONFIRM_MAIL_CONCURRENCY``
threads at once; it calls :meth:`Transport.close` when it goes idle so no connection
idles between bursts. ``send`` raises
:class:`~flask_confirm_mail.errors.DeliveryError` when the email was not handed over.
``flask confirm-mail check`` calls :meth:`Transport.check`.
All run in an application context of the app that owns the outbox.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any
from weakref import WeakKeyDictionary

import flask_mail
from flask import Flask, current_app, render_template
from jinja2 import TemplateSyntaxError

from .addresses import normalize_address
from .errors import AddressError, ConfigurationError, DeliveryError
from .i18n import format_duration, locale_of, template_context
from .outbox import Purpose
from .settings import Settings
from .smtp import (
    SMTPSender,
    SMTPSession,
    SMTPSettings,
    build_message,
    format_lifetime,
    lifetime_in_units,
)


@dataclass(frozen=True)
class ConfirmationEmail:
    """One confirmation email on its way from the outbox to a transport, its link minted."""

    #: The outbox row this email comes from.
    outbox_id: int
    #: The user's primary key, as a string (the link token's ``sub``).
    user_id: str
    #: The single, validated recipient address.
    recipient: str
    #: ``"signup"`` (confirm the address of a new account), ``"change"`` (a new address),
    #: ``"change_notice"`` (to the old address, no link) or ``"reminder"``.
    purpose: str
    #: The Message-ID header, kept across retries: ``<...@domain>``.
    message_id: str
    #: The confirm route's URL up to the token, e.g. ``https://site.example/confirm/``.
    link_prefix: str
    #: The freshly minted link token; empty for a purpose without a link (the change notice).
    link_token: str = field(repr=False)
    #: When the link stops working (naive UTC); ``None`` without a link.
    expires_at: datetime | None
    #: How long the link works, counted from this email's sending.
    lifetime: timedelta
    #: Which delivery attempt this is, 1 for the first.
    attempt: int = 1
    #: Extra values the app gave for the templates (JSON-safe).
    context: Mapping[str, Any] = field(default_factory=dict)
    #: The confirmation code minted with the link ("" when there is none); it confirms
    #: like the link, so it stays out of ``repr``.
    code: str = field(default="", repr=False)
    #: The locale to write it in (the sign-up request's); ``None``: the app's default.
    locale: str | None = None

    @property
    def link(self) -> str:
        """The confirmation link: the prefix followed by the token; empty without a token."""
        return self.link_prefix + self.link_token if self.link_token else ""


class Transport(ABC):
    """A way to deliver confirmation emails (in-process SMTP, a remote mailer, ...)."""

    @abstractmethod
    def send(self, email: ConfirmationEmail) -> None:
        """Hand ``email`` over, or raise :class:`~flask_confirm_mail.errors.DeliveryError`."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Close what the transport holds open; the next :meth:`send` opens it again."""

    def init_app(self, app: Flask) -> None:  # noqa: B027 - optional hook
        """Check the settings ``app`` gives this transport, when the extension starts.

        :raises ~flask_confirm_mail.errors.ConfigurationError: naming the setting to fix.
        """

    def check(self) -> str | None:
        """Try reaching the destination now (``flask confirm-mail check``), in an app context.

        :return: what was reached, or ``None`` when this transport has nothing to try.
        :raises ~flask_confirm_mail.errors.DeliveryError: it cannot be reached.
        """
        return None

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


#: What each purpose's email is written from, under ``confirm_mail/email/``: ``<purpose>``
#: followed by one of these (``signup_subject.txt``, ``signup.txt``, ``signup.html``).
TEMPLATE_KINDS = ("_subject.txt", ".txt", ".html")


def load_email_templates(app: Flask) -> None:
    """Compile every purpose's templates now, the app's overrides included, so that a
    broken override stops the worker at start-up, named, rather than failing each email.

    :raises ConfigurationError: a template does not compile, named.
    """
    for purpose in Purpose:
        for kind in TEMPLATE_KINDS:
            name = f"confirm_mail/email/{purpose.value}{kind}"
            try:
                app.jinja_env.get_template(name)
            except TemplateSyntaxError as exc:
                raise ConfigurationError(
                    f"The email template {name} does not compile: {exc.message} "
                    f"(line {exc.lineno})."
                ) from None


def render_message(email: ConfirmationEmail, settings: Settings) -> EmailMessage:
    """Write ``email`` with the app's templates of its purpose.

    Templates live under ``confirm_mail/email/``, three per purpose (``signup``,
    ``change``, ``change_notice``, ``reminder``): ``<purpose>_subject.txt``, rendered
    and joined into one line, and the bodies ``<purpose>.txt`` and ``<purpose>.html``;
    an app overrides one by putting a file of the same name in its own ``templates``
    folder. HTML templates are autoescaped, so every value, app-supplied ones included,
    is escaped there. Written in the email's locale (the sign-up request's, from its
    outbox row) with the extension's catalog.

    :raises DeliveryError: (permanent) the recipient is not one plain address, or a header
        value would contain a line break.
    """
    try:
        normalize_address(email.recipient)
    except AddressError:
        raise DeliveryError(
            "The recipient is not a single valid address.", permanent=True
        ) from None
    with locale_of(email.locale):
        values = {
            **template_context(),
            "link": email.link,
            "recipient": email.recipient,
            "purpose": email.purpose,
            "app_name": settings.app_name,
            "lifetime": format_duration(*lifetime_in_units(email.lifetime))
            or format_lifetime(email.lifetime),
            "expires_at": email.expires_at,
            "context": dict(email.context),
            "code": email.code,
        }
        name = f"confirm_mail/email/{Purpose(email.purpose).value}"
        subject = render_template(f"{name}_subject.txt", **values)
        return build_message(
            subject=" ".join(subject.splitlines()).strip(),
            sender=settings.sender,
            recipient=email.recipient,
            text=render_template(f"{name}.txt", **values),
            html=render_template(f"{name}.html", **values),
            message_id=email.message_id,
        )


def smtp_settings_of(app: Flask, timeout: float) -> SMTPSettings:
    """The SMTP server ``app``'s Flask-Mail settings name, checked.

    :raises ConfigurationError: a ``MAIL_*`` setting of the wrong type, named.
    """
    mail = app.extensions["mail"]
    port = mail.port
    if isinstance(port, str) and port.strip().isdigit():
        port = int(port)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ConfigurationError(f"MAIL_PORT must be a port number (1 to 65535), not {port!r}.")
    server = mail.server
    if not isinstance(server, str) or not server.strip() or any(c.isspace() for c in server):
        raise ConfigurationError(f"MAIL_SERVER must be a host name or address, not {server!r}.")
    flags = {"MAIL_USE_TLS": mail.use_tls, "MAIL_USE_SSL": mail.use_ssl}
    for key, value in flags.items():
        if value not in (True, False):  # 0 and 1 pass too
            raise ConfigurationError(f"{key} must be True or False, not {value!r}.")
    if mail.use_tls and mail.use_ssl:
        raise ConfigurationError(
            "Set one of MAIL_USE_TLS (STARTTLS, port 587) and MAIL_USE_SSL (TLS, port 465)."
        )
    for key, value in (("MAIL_USERNAME", mail.username), ("MAIL_PASSWORD", mail.password)):
        if value is not None and not isinstance(value, str):
            raise ConfigurationError(f"{key} must be a string.")
    return SMTPSettings(
        host=server,
        port=port,
        security="ssl" if mail.use_ssl else "starttls" if mail.use_tls else "none",
        username=mail.username or None,
        password=mail.password or None,
        timeout=timeout,
    )


class SMTPTransport(Transport):
    """The default transport: SMTP from the app process.

    Uses the app's Flask-Mail configuration (``MAIL_SERVER``, ``MAIL_PORT``,
    ``MAIL_USE_TLS``, ``MAIL_USE_SSL``, ``MAIL_USERNAME``, ``MAIL_PASSWORD``,
    ``MAIL_SUPPRESS_SEND``), checked at ``init_app``. Every message is announced on
    ``flask_mail.email_dispatched`` as an :class:`email.message.EmailMessage`, so
    ``mail.record_messages()`` collects them in an app's tests; with
    ``MAIL_SUPPRESS_SEND`` nothing goes over the network. Each sending thread keeps one
    connection open between its messages, until :meth:`close`.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._senders: WeakKeyDictionary[Flask, SMTPSender] = WeakKeyDictionary()

    def init_app(self, app: Flask) -> None:
        self._senders[app] = SMTPSender(smtp_settings_of(app, self.settings.smtp_timeout))

    def _sender(self, app: Flask) -> SMTPSender:
        sender = self._senders.get(app)
        if sender is None:
            self.init_app(app)
            sender = self._senders[app]
        return sender

    def send(self, email: ConfirmationEmail) -> None:
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        message = render_message(email, self.settings)
        if not app.extensions["mail"].suppress:
            self._sender(app).send(message)
        flask_mail.email_dispatched.send(app, message=message)

    def check(self) -> str:
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        smtp = self._sender(app).settings
        if app.extensions["mail"].suppress:
            return "MAIL_SUPPRESS_SEND is on: nothing is sent, nothing to check"
        SMTPSession(smtp).check()
        login = f", logged in as {smtp.username}" if smtp.username else ""
        return f"SMTP server {smtp.host}:{smtp.port} answered ({smtp.security}{login})"

    def close(self) -> None:
        for sender in list(self._senders.values()):
            sender.close()
