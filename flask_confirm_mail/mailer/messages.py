"""The emails the mailer writes: multipart/alternative, text and HTML, from Jinja templates.

Templates live in ``templates/mailer/<template>.txt`` and ``.html``; Flask's Jinja
environment autoescapes the ``.html`` ones, so every value there is HTML-escaped. The
message is a :class:`flask_mail.Message` (explicit sender, ``Message-ID`` and ``Date``)
whose MIME form is one ``multipart/alternative``, and goes to SMTP as bytes.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate
from typing import Any

from flask import render_template
from flask_mail import Message

from ..email_render import unsafe_header
from ..errors import DeliveryError
from .settings import MailerSettings

__all__ = ["MailerMessage", "OutgoingEmail", "build_email", "describe_duration"]

_UNITS = ((86400, "day"), (3600, "hour"), (60, "minute"), (1, "second"))


def describe_duration(seconds: int) -> str:
    """``seconds`` in words, rounded down to the largest whole unit: ``"24 hours"``.

    Days are used from two days on, so a one-day link reads "24 hours".
    """
    for size, unit in _UNITS:
        if seconds >= size and (size != 86400 or seconds >= 2 * size):
            count = seconds // size
            return f"{count} {unit}{'' if count == 1 else 's'}"
    return "a moment"


class MailerMessage(Message):
    """A Flask-Mail message written as one ``multipart/alternative`` (text, then HTML).

    Flask-Mail nests the alternatives in ``multipart/mixed``, which only attachments
    need. :class:`~email.message.EmailMessage` also picks a transfer encoding that keeps
    long link lines intact and refuses line breaks in header values (``ValueError``).

    :param from_address: the ``From`` header, display name included.
    """

    def __init__(self, *, from_address: Address, **kwargs: Any) -> None:
        super().__init__(sender=from_address.addr_spec, **kwargs)
        self.from_address = from_address

    def _message(self) -> Any:
        message = EmailMessage(policy=SMTP)
        message["Subject"] = self.subject
        message["From"] = self.from_address
        message["To"] = ", ".join(str(r) for r in self.recipients)
        message["Date"] = formatdate(self.date, usegmt=True)
        message["Message-ID"] = self.msgId
        message.set_content(self.body or "")
        if self.html is not None:
            message.add_alternative(self.html, subtype="html")
        return message


@dataclass(frozen=True)
class OutgoingEmail:
    """A rendered email, ready for SMTP."""

    message_id: str
    sender: str
    recipient: str
    data: bytes = field(repr=False)


def build_email(
    settings: MailerSettings,
    *,
    recipient: str,
    template: str,
    link: str,
    lifetime: int | None,
    extra: Mapping[str, str],
) -> OutgoingEmail:
    """Render the ``template`` email for ``recipient``; call inside an app context.

    :param link: the checked confirmation link.
    :param lifetime: how long the link works, in seconds, if known.
    :param extra: the token's extra values (``app_name``, ``user_name``, ``access_key``).
    """
    app_name = extra.get("app_name") or settings.app_name
    context = {
        "app_name": app_name,
        "user_name": extra.get("user_name", ""),
        "access_key": extra.get("access_key", ""),
        "link": link,
        "lifetime": describe_duration(lifetime) if lifetime else "",
        "recipient": recipient,
    }
    message_id = f"<{secrets.token_urlsafe(18)}@{settings.domain}>"
    message = MailerMessage(
        from_address=Address(settings.sender_name, addr_spec=settings.sender_address),
        subject=settings.subject(template, app_name),
        recipients=[recipient],
        body=render_template(f"mailer/{template}.txt", **context),
        html=render_template(f"mailer/{template}.html", **context),
        date=time.time(),
    )
    message.msgId = message_id
    subject = str(message.subject)
    if unsafe_header("Subject", subject) or unsafe_header("From", str(message.from_address)):
        raise DeliveryError("A header value could break its line.", permanent=True)
    return OutgoingEmail(message_id, settings.sender_address, recipient, message.as_bytes())
