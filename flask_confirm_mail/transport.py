"""How an email leaves: the :class:`Transport` interface, the :class:`ConfirmationEmail` it
sends, and the default transport, :class:`SMTPTransport`. All run in an app context."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from importlib.metadata import version
from typing import Any
from weakref import WeakKeyDictionary

import flask_mail
from flask import Flask, current_app, render_template
from jinja2 import TemplateSyntaxError

from . import smtp
from .addresses import is_valid_address
from .errors import ConfigurationError, DeliveryError
from .i18n import format_duration, locale_of, template_context
from .outbox import Purpose
from .settings import Settings


@dataclass(frozen=True)
class ConfirmationEmail:
    """One confirmation email on its way from the outbox to a transport, its link minted."""

    outbox_id: int
    #: The user's primary key as a string (the link token's ``sub``).
    user_id: str
    recipient: str
    #: A :class:`~flask_confirm_mail.outbox.Purpose` value (``"signup"``, ``"change"``, ...).
    purpose: str
    #: The Message-ID header, kept across retries.
    message_id: str
    #: The confirm route's URL up to the token, e.g. ``https://site.example/confirm/``.
    link_prefix: str
    #: Empty for a purpose without a link.
    link_token: str = field(repr=False)
    #: When the link stops working (naive UTC); ``None`` without a link.
    expires_at: datetime | None
    lifetime: timedelta
    #: 1 for the first delivery attempt.
    attempt: int = 1
    #: Extra values the app gave for the templates (JSON-safe).
    context: Mapping[str, Any] = field(default_factory=dict)
    #: The confirmation code, or ""; it confirms like the link, so it stays out of ``repr``.
    code: str = field(default="", repr=False)
    #: The sign-up request's locale; ``None``: the app's default.
    locale: str | None = None
    #: Once sent: the provider's id for it (:meth:`Transport.send`), kept on the outbox row.
    provider_message_id: str | None = None

    @property
    def link(self) -> str:
        """The confirmation link; empty without a token."""
        return self.link_prefix + self.link_token if self.link_token else ""


class Transport(ABC):
    """A way to deliver confirmation emails (in-process SMTP, a remote mailer, ...)."""

    @abstractmethod
    def send(self, email: ConfirmationEmail) -> str | None:
        """Hand ``email`` over, or raise :class:`~flask_confirm_mail.errors.DeliveryError`;
        return the provider's id for it if known (bounce webhooks match on it)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Close what the transport holds open; the next :meth:`send` opens it again."""

    def init_app(self, app: Flask) -> None:  # noqa: B027 - optional hook
        """Check this transport's settings in ``app``; a bad one raises ``ConfigurationError``."""

    def check(self) -> str | None:
        """Try reaching the destination (``flask confirm-mail check``): what was reached,
        ``None`` when there is nothing to try; raises ``DeliveryError`` when unreachable."""
        return None

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def load_email_templates(app: Flask) -> None:
    """Compile every purpose's templates, overrides included: a broken one stops start-up, named."""
    for purpose in Purpose:
        for kind in ("_subject.txt", ".txt", ".html"):
            name = f"confirm_mail/email/{purpose.value}{kind}"
            try:
                app.jinja_env.get_template(name)
            except TemplateSyntaxError as exc:
                raise ConfigurationError(
                    f"The email template {name} does not compile: {exc.message} "
                    f"(line {exc.lineno})."
                ) from None


def render_message(email: ConfirmationEmail, settings: Settings) -> EmailMessage:
    """Write ``email`` in its locale from ``confirm_mail/email/<purpose>_subject.txt``,
    ``<purpose>.txt`` and ``<purpose>.html``; raises a permanent :class:`DeliveryError`."""
    if not is_valid_address(email.recipient):
        raise DeliveryError("The recipient is not a single valid address.", permanent=True)
    with locale_of(email.locale):
        units = smtp.lifetime_in_units(email.lifetime)
        values = {
            **template_context(), "link": email.link, "recipient": email.recipient,
            "purpose": email.purpose, "app_name": settings.app_name, "expires_at": email.expires_at,
            "lifetime": format_duration(*units) or smtp.format_lifetime(email.lifetime),
            "context": dict(email.context), "code": email.code,
        }  # fmt: skip
        name = f"confirm_mail/email/{Purpose(email.purpose).value}"
        subject = " ".join(render_template(f"{name}_subject.txt", **values).splitlines()).strip()
        text, html = (render_template(f"{name}.{kind}", **values) for kind in ("txt", "html"))
        return smtp.build_message(
            subject=subject, sender=settings.sender, recipient=email.recipient, text=text,
            html=html, message_id=email.message_id,
        )  # fmt: skip


#: Flask-Mail before 0.10 sends ``email_dispatched`` with the message as the sender.
_DISPATCH_FROM_MESSAGE = version("flask-mail").startswith("0.9")


class SMTPTransport(Transport):
    """The default transport: SMTP with Flask-Mail's ``MAIL_*`` settings (``MAIL_SUPPRESS_SEND``
    too), a pool of kept connections, each message announced on ``email_dispatched``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._senders: WeakKeyDictionary[Flask, smtp.SMTPSender] = WeakKeyDictionary()

    def init_app(self, app: Flask) -> None:
        mail = app.extensions["mail"]
        port, server = mail.port, mail.server
        if isinstance(port, str) and port.strip().isdigit():
            port = int(port)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ConfigurationError(f"MAIL_PORT must be a port number (1 to 65535), not {port!r}.")
        if not isinstance(server, str) or server.split() != [server]:  # empty, or with spaces
            raise ConfigurationError(f"MAIL_SERVER must be a host name or address, not {server!r}.")
        for key, value in (("MAIL_USE_TLS", mail.use_tls), ("MAIL_USE_SSL", mail.use_ssl)):
            if value not in (True, False):  # 0 and 1 pass too
                raise ConfigurationError(f"{key} must be True or False, not {value!r}.")
        if mail.use_tls and mail.use_ssl:
            msg = "Set one of MAIL_USE_TLS (STARTTLS, port 587) and MAIL_USE_SSL (TLS, port 465)."
            raise ConfigurationError(msg)
        for key, value in (("MAIL_USERNAME", mail.username), ("MAIL_PASSWORD", mail.password)):
            if value is not None and not isinstance(value, str):
                raise ConfigurationError(f"{key} must be a string.")
        security = "ssl" if mail.use_ssl else "starttls" if mail.use_tls else "none"
        login = (mail.username or None, mail.password or None)
        settings = smtp.SMTPSettings(
            server, port, security, *login, self.settings.smtp_timeout, self.settings.ehlo_name
        )
        self._senders[app] = smtp.SMTPSender(settings)

    def send(self, email: ConfirmationEmail) -> str | None:
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        message = render_message(email, self.settings)
        reply = "" if app.extensions["mail"].suppress else self._senders[app].send(message)
        if _DISPATCH_FROM_MESSAGE:
            flask_mail.email_dispatched.send(message, app=app)
        else:
            flask_mail.email_dispatched.send(app, message=message)
        return smtp.provider_message_id(reply)

    def check(self) -> str:
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        server = self._senders[app].settings
        if app.extensions["mail"].suppress:
            return "MAIL_SUPPRESS_SEND is on: nothing is sent, nothing to check"
        smtp.SMTPSession(server).check()
        login = f", logged in as {server.username}" if server.username else ""
        return f"SMTP server {server.host}:{server.port} answered ({server.security}{login})"

    def close(self) -> None:
        for sender in list(self._senders.values()):
            sender.close()
