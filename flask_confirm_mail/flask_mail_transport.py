"""In-process delivery through Flask-Mail's settings and message building.

Uses the app's Flask-Mail configuration (``MAIL_SERVER``, ``MAIL_PORT``, ``MAIL_USE_TLS``,
``MAIL_USE_SSL``, ``MAIL_USERNAME``, ``MAIL_PASSWORD``, ``MAIL_SUPPRESS_SEND``) and
``flask_mail.Message`` for the MIME structure, and sends a whole batch over one SMTP
connection with timeouts (:mod:`flask_confirm_mail.smtp`). Every message is announced
on ``flask_mail.email_dispatched``, so ``mail.record_messages()`` works in an app's
tests; with ``MAIL_SUPPRESS_SEND`` nothing goes over the network.
"""

from __future__ import annotations

import binascii
import secrets
import time
from email.message import Message
from email.policy import compat32
from email.utils import formatdate
from typing import Any

import flask_mail
from flask import current_app
from flask_mail import sanitize_address

from .email_render import render_confirmation
from .errors import DeliveryError
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


#: How the wire form is written: CRLF line ends, no ``>From`` mangling.
WIRE_POLICY = compat32.clone(linesep="\r\n", mangle_from_=False)


def _text_part(text: str, subtype: str) -> Message:
    """A UTF-8 ``text/<subtype>`` part, quoted-printable (encoded by :mod:`binascii`, in C)."""
    part = Message(policy=WIRE_POLICY)
    part["Content-Type"] = f'text/{subtype}; charset="utf-8"'
    part["Content-Transfer-Encoding"] = "quoted-printable"
    part.set_payload(binascii.b2a_qp(text.encode("utf-8"), istext=True).decode("ascii"))
    return part


class ConfirmationMessage(flask_mail.Message):
    """A Flask-Mail message whose MIME form is a plain ``multipart/alternative``.

    Flask-Mail wraps text and HTML in ``multipart/mixed``; a confirmation email has no
    attachments. The MIME form is written with the stdlib's ``compat32`` classes and the
    bodies are encoded in C: building it with :class:`email.message.EmailMessage` cost
    about ten times as much, which a worker paid on every message. Header values with a
    line break are refused (``ValueError``), as :class:`~email.message.EmailMessage` did.
    """

    def _message(self) -> Any:
        headers = {
            "Subject": self.subject,
            "From": sanitize_address(self.sender),
            "To": ", ".join(sanitize_address(r) for r in self.recipients),
            "Date": formatdate(self.date, localtime=False),
            "Message-ID": self.msgId,
        }
        message = Message(policy=WIRE_POLICY)
        for name, value in headers.items():
            if "\r" in value or "\n" in value:
                raise ValueError(f"The {name} header contains a line break.")
            message[name] = value
        message["MIME-Version"] = "1.0"
        # "=" is always escaped in quoted-printable bodies, so "==" never occurs in them.
        boundary = f"==confirm-mail-{secrets.token_hex(12)}"
        message["Content-Type"] = f'multipart/alternative; boundary="{boundary}"'
        message.attach(_text_part(self.body or "", "plain"))
        if self.html is not None:
            message.attach(_text_part(self.html, "html"))
        return message


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

    def send(self, email: ConfirmationEmail) -> None:
        sender = self._settings.sender or self._mail.default_sender
        rendered = render_confirmation(email, self._settings, sender)
        message = ConfirmationMessage(
            subject=rendered.subject,
            recipients=[rendered.recipient],
            body=rendered.text,
            html=rendered.html,
            sender=rendered.sender,
            date=time.time(),
        )
        message.msgId = rendered.message_id
        try:
            data = message.as_bytes()
        except ValueError:
            raise DeliveryError("A header value is not valid.", permanent=True) from None
        if self._smtp is not None:
            self._smtp.send(rendered.sender_address, rendered.recipient, data)
        flask_mail.email_dispatched.send(current_app._get_current_object(), message=message)  # type: ignore[attr-defined]

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
