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
from datetime import timedelta
from email.headerregistry import Address

from flask import render_template

from ..email_render import format_lifetime, unsafe_header
from ..errors import DeliveryError
from ..mime import AlternativeMessage
from .settings import MailerSettings

__all__ = ["OutgoingEmail", "build_email"]

_UNITS = ((86400, "day"), (3600, "hour"), (60, "minute"), (1, "second"))


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
        "lifetime": format_lifetime(timedelta(seconds=lifetime)) if lifetime else "",
        "recipient": recipient,
    }
    message_id = f"<{secrets.token_urlsafe(18)}@{settings.domain}>"
    sender = str(Address(settings.sender_name, addr_spec=settings.sender_address))
    message = AlternativeMessage(
        sender=sender,
        subject=settings.subject(template, app_name),
        recipients=[recipient],
        body=render_template(f"mailer/{template}.txt", **context),
        html=render_template(f"mailer/{template}.html", **context),
        message_id=message_id,
        date=time.time(),
    )
    subject = str(message.subject)
    if unsafe_header("Subject", subject) or unsafe_header("From", sender):
        raise DeliveryError("A header value could break its line.", permanent=True)
    return OutgoingEmail(message_id, settings.sender_address, recipient, message.as_bytes())
