"""Writing a confirmation email from the app's templates.

Templates live under ``confirm_mail/email/``: ``signup.txt``, ``signup.html``,
``change.txt``, ``change.html``. An app overrides one by putting a file of the same
name in its own ``templates`` folder. HTML templates are autoescaped, so every value,
app-supplied ones included, is escaped there.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import timedelta
from email.policy import SMTP as SMTP_POLICY
from email.utils import formataddr, parseaddr
from typing import TYPE_CHECKING

from flask import render_template

from .addresses import normalize_address
from .errors import AddressError, DeliveryError
from .mime import has_line_break
from .transport import ConfirmationEmail

if TYPE_CHECKING:
    from .settings import Settings


@dataclass(frozen=True)
class RenderedEmail:
    """A confirmation email written out, ready for any SMTP library."""

    subject: str
    sender: str
    recipient: str
    text: str
    html: str
    message_id: str

    @property
    def sender_address(self) -> str:
        """The bare address of ``sender`` (for the SMTP envelope)."""
        return parseaddr(self.sender)[1]


def format_lifetime(lifetime: timedelta) -> str:
    """``timedelta(hours=48)`` -> ``"48 hours"``; days only when whole and over two."""
    seconds = int(lifetime.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0 and seconds >= size and (unit != "day" or seconds > 2 * size):
            count = seconds // size
            return f"{count} {unit}{'' if count == 1 else 's'}"
    return f"{seconds} seconds"


@functools.lru_cache(maxsize=256)
def unsafe_header(name: str, value: str) -> bool:
    """Whether ``value`` could break out of header ``name``: a line break, raw or hidden.

    A line break may hide in an RFC 2047 encoded word (``=?utf-8?q?=0D=0ABcc:...?=``):
    the email package decodes such words when it parses a header value, and Python
    versions before the fix of gh-121650 write the decoded line break out as is.
    """
    if has_line_break(value):
        return True
    try:
        parsed = str(SMTP_POLICY.header_factory(name, value))
    except (ValueError, TypeError, LookupError):
        return True
    return has_line_break(parsed)


def format_sender(sender: str | tuple[str, str] | None) -> str:
    """``("Name", "addr")`` or ``"Name <addr>"`` as one header value, checked for newlines."""
    if sender is None:
        raise DeliveryError("No sender configured (CONFIRM_MAIL_SENDER).", permanent=True)
    text = formataddr(sender) if isinstance(sender, tuple) else str(sender)
    if unsafe_header("From", text):
        raise DeliveryError("The sender is not a single-line address.", permanent=True)
    return text


def render_confirmation(
    email: ConfirmationEmail, settings: Settings, sender: str | tuple[str, str] | None
) -> RenderedEmail:
    """Render ``email`` with the templates of its purpose.

    :raises DeliveryError: (permanent) when the recipient is not one plain address or a
        header value would contain a line break.
    """
    subject = settings.change_subject if email.purpose == "change" else settings.subject
    if unsafe_header("Subject", subject):
        raise DeliveryError("The subject is not a single-line header value.", permanent=True)
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
    return RenderedEmail(
        subject=subject,
        sender=format_sender(sender),
        recipient=email.recipient,
        text=render_template(f"confirm_mail/email/{template}.txt", **values),
        html=render_template(f"confirm_mail/email/{template}.html", **values),
        message_id=email.message_id,
    )
