"""In-process delivery through Flask-Mail's settings and message building.

Uses the app's Flask-Mail configuration (``MAIL_SERVER``, ``MAIL_PORT``, ``MAIL_USE_TLS``,
``MAIL_USE_SSL``, ``MAIL_USERNAME``, ``MAIL_PASSWORD``, ``MAIL_SUPPRESS_SEND``) and
``flask_mail.Message`` for the MIME structure, and sends a whole batch over one SMTP
connection with timeouts (:mod:`flask_confirm_mail.smtp`). Every message is announced
on ``flask_mail.email_dispatched``, so ``mail.record_messages()`` works in an app's
tests; with ``MAIL_SUPPRESS_SEND`` nothing goes over the network.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import flask_mail
from flask import current_app

from .email_render import render_confirmation
from .errors import DeliveryError
from .mime import AlternativeMessage
from .settings import Settings
from .smtp import SMTPSession, SMTPSettings
from .transport import ConfirmationEmail, Transport, TransportConnection


def mail_state() -> Any:
    """The Flask-Mail state of the current app (registered by ``init_app`` if missing)."""
    return current_app.extensions["mail"]


def smtp_settings_from_mail(state: Any, timeout: float) -> SMTPSettings:
    """SMTP settings read from the Flask-Mail configuration."""
    security = "ssl" if state.use_ssl else "starttls" if state.use_tls else "none"
    return SMTPSettings(
        host=state.server,
        port=int(state.port),
        security=security,
        username=state.username or None,
        password=state.password or None,
        timeout=timeout,
    )


@dataclass(frozen=True)
class PreparedMail:
    """A message written out, waiting for the SMTP connection."""

    envelope_from: str
    recipient: str
    data: bytes = field(repr=False)
    message: AlternativeMessage = field(repr=False)


class FlaskMailConnection(TransportConnection):
    """One SMTP connection (opened on the first message) for a batch."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._mail = mail_state()
        self._smtp = (
            None
            if self._mail.suppress
            else SMTPSession(smtp_settings_from_mail(self._mail, settings.smtp_timeout))
        )

    def prepare(self, email: ConfirmationEmail) -> PreparedMail:
        sender = self._settings.sender or self._mail.default_sender
        rendered = render_confirmation(email, self._settings, sender)
        message = AlternativeMessage(
            subject=rendered.subject,
            recipients=[rendered.recipient],
            body=rendered.text,
            html=rendered.html,
            sender=rendered.sender,
            message_id=rendered.message_id,
            date=time.time(),
        )
        try:
            data = message.as_bytes()
        except ValueError:
            raise DeliveryError("A header value is not valid.", permanent=True) from None
        return PreparedMail(rendered.sender_address, rendered.recipient, data, message)

    def send_prepared(self, prepared: PreparedMail) -> None:
        if self._smtp is not None:
            self._smtp.send(prepared.envelope_from, prepared.recipient, prepared.data)
        flask_mail.email_dispatched.send(
            current_app._get_current_object(),  # type: ignore[attr-defined]
            message=prepared.message,
        )

    def send(self, email: ConfirmationEmail) -> None:
        self.send_prepared(self.prepare(email))

    def close(self) -> None:
        if self._smtp is not None:
            self._smtp.close()


class FlaskMailTransport(Transport):
    """``CONFIRM_MAIL_TRANSPORT = "flask_mail"``: SMTP from the app process."""

    name = "flask_mail"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def connect(self) -> TransportConnection:
        return FlaskMailConnection(self.settings)
