"""How an email leaves: the :class:`Transport` interface, the :class:`ConfirmationEmail` it
takes, and the in-process transport, :class:`SMTPTransport`.

The delivery loop hands each claimed email, its link just minted, to the app's transport
(:meth:`Transport.send`), and calls :meth:`Transport.close` after each batch so no
connection idles between batches. ``send`` raises
:class:`~flask_confirm_mail.errors.DeliveryError` when the email was not handed over.
Both run in an application context of the app that owns the outbox, possibly from
several threads at once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import Message
from typing import Any

import flask_mail
from flask import current_app, render_template

from .addresses import normalize_address
from .errors import AddressError, DeliveryError
from .settings import Settings
from .smtp import SMTPSessionPool, SMTPSettings, build_message, format_lifetime


@dataclass(frozen=True)
class ConfirmationEmail:
    """One confirmation email on its way from the outbox to a transport, its link minted."""

    #: The outbox row this email comes from.
    outbox_id: int
    #: The user's primary key, as a string (the link token's ``sub``).
    user_id: str
    #: The single, validated recipient address.
    recipient: str
    #: ``"signup"`` (confirm the address of a new account) or ``"change"`` (a new address).
    purpose: str
    #: The Message-ID header, kept across retries: ``<...@domain>``.
    message_id: str
    #: The confirm route's URL up to the token, e.g. ``https://site.example/confirm/``.
    link_prefix: str
    #: The freshly minted link token.
    link_token: str = field(repr=False)
    #: When the link stops working (naive UTC).
    expires_at: datetime
    #: How long the link works, counted from this email's sending.
    lifetime: timedelta
    #: Which delivery attempt this is, 1 for the first.
    attempt: int = 1
    #: Extra values the app gave for the templates (JSON-safe).
    context: Mapping[str, Any] = field(default_factory=dict)

    @property
    def link(self) -> str:
        """The confirmation link: the prefix followed by the token."""
        return self.link_prefix + self.link_token


class Transport(ABC):
    """A way to deliver confirmation emails (in-process SMTP, a remote mailer, ...)."""

    @abstractmethod
    def send(self, email: ConfirmationEmail) -> None:
        """Hand ``email`` over, or raise :class:`~flask_confirm_mail.errors.DeliveryError`."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Close what the transport holds open; the next :meth:`send` opens it again."""

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def render_message(email: ConfirmationEmail, settings: Settings) -> Message:
    """Write ``email`` with the app's templates of its purpose.

    Templates live under ``confirm_mail/email/``: ``signup.txt``, ``signup.html``,
    ``change.txt``, ``change.html``; an app overrides one by putting a file of the same
    name in its own ``templates`` folder. HTML templates are autoescaped, so every value,
    app-supplied ones included, is escaped there.

    :raises DeliveryError: (permanent) the recipient is not one plain address, or a header
        value would contain a line break.
    """
    try:
        normalize_address(email.recipient)
    except AddressError:
        raise DeliveryError(
            "The recipient is not a single valid address.", permanent=True
        ) from None
    values = {
        "link": email.link,
        "recipient": email.recipient,
        "purpose": email.purpose,
        "app_name": settings.app_name,
        "lifetime": format_lifetime(email.lifetime),
        "expires_at": email.expires_at,
        "context": dict(email.context),
    }
    template = "change" if email.purpose == "change" else "signup"
    return build_message(
        subject=settings.change_subject if template == "change" else settings.subject,
        sender=settings.sender,
        recipient=email.recipient,
        text=render_template(f"confirm_mail/email/{template}.txt", **values),
        html=render_template(f"confirm_mail/email/{template}.html", **values),
        message_id=email.message_id,
    )


class SMTPTransport(Transport):
    """``CONFIRM_MAIL_TRANSPORT = "flask_mail"``: SMTP from the app process.

    Uses the app's Flask-Mail configuration (``MAIL_SERVER``, ``MAIL_PORT``,
    ``MAIL_USE_TLS``, ``MAIL_USE_SSL``, ``MAIL_USERNAME``, ``MAIL_PASSWORD``,
    ``MAIL_SUPPRESS_SEND``). Every message is announced on ``flask_mail.email_dispatched``
    (as an :class:`email.message.Message`), so ``mail.record_messages()`` collects
    them in an app's tests; with ``MAIL_SUPPRESS_SEND`` nothing goes over the network.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pool: SMTPSessionPool | None = None

    def _sessions(self, mail: Any) -> SMTPSessionPool:
        if self._pool is None:
            security = "ssl" if mail.use_ssl else "starttls" if mail.use_tls else "none"
            try:
                port = int(mail.port)
            except (TypeError, ValueError):
                raise DeliveryError("MAIL_PORT is not a port number.") from None
            self._pool = SMTPSessionPool(
                SMTPSettings(
                    host=mail.server,
                    port=port,
                    security=security,
                    username=mail.username or None,
                    password=mail.password or None,
                    timeout=self.settings.smtp_timeout,
                )
            )
        return self._pool

    def send(self, email: ConfirmationEmail) -> None:
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        mail = app.extensions["mail"]
        message = render_message(email, self.settings)
        if not mail.suppress:
            self._sessions(mail).send_message(message)
        flask_mail.email_dispatched.send(app, message=message)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
