"""The wire form of a confirmation email: one ``multipart/alternative``, text then HTML.

Flask-Mail wraps text and HTML in ``multipart/mixed``, which only attachments need, and
the stdlib's generator spends most of a worker's time per message folding headers. A
confirmation email always has the same small shape, so :class:`AlternativeMessage`
writes its bytes directly: short ASCII headers as they are, anything else through
:class:`email.header.Header`, bodies quoted-printable by :mod:`binascii` (in C). Header
values with a line break are refused (``ValueError``). Used by the in-process transport
and by the mailer service.
"""

from __future__ import annotations

import binascii
import functools
import re
import secrets
import time
from email.header import Header
from email.utils import formatdate

import flask_mail
from flask_mail import sanitize_address

_MAX_PLAIN_HEADER = 78
_HEADER_BREAKS = ("\r", "\n", "\x0b", "\x0c", "\x85", "\u2028", "\u2029")
#: Characters no caller-supplied text that may reach a header should contain.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def has_line_break(value: str) -> bool:
    """Whether ``value`` holds anything a mail header could read as a line break."""
    return any(ch in value for ch in _HEADER_BREAKS)


def header_line(name: str, value: str) -> str:
    """``Name: value``, RFC 2047-encoded and folded (CRLF) when not short plain ASCII."""
    if has_line_break(value):
        raise ValueError(f"The {name} header contains a line break.")
    if value.isascii() and len(name) + 2 + len(value) <= _MAX_PLAIN_HEADER:
        return f"{name}: {value}"
    charset = "us-ascii" if value.isascii() else "utf-8"
    encoded = Header(value, charset, header_name=name).encode(linesep="\r\n")
    return f"{name}: {encoded}"


def text_part(subtype: str, text: str) -> str:
    """A UTF-8 ``text/<subtype>`` MIME part, quoted-printable, CRLF line ends."""
    body = binascii.b2a_qp(text.replace("\r\n", "\n").encode("utf-8"), istext=True)
    return (
        f'Content-Type: text/{subtype}; charset="utf-8"\r\n'
        "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        + body.decode("ascii").replace("\n", "\r\n")
    )


@functools.lru_cache(maxsize=256)
def address_header(address: str) -> str:
    """An address header value: a plain ASCII ``local@domain`` as it is, anything else
    (display names, non-ASCII) through Flask-Mail's ``sanitize_address``; cached, since
    the sender is the same for every message."""
    if address.isascii() and "<" not in address and " " not in address:
        return address
    return str(sanitize_address(address))


class AlternativeMessage(flask_mail.Message):
    """A Flask-Mail message whose bytes are one ``multipart/alternative`` (text, HTML).

    Unlike ``flask_mail.Message`` it takes its Message-ID (kept across retries) instead
    of making one with :func:`email.utils.make_msgid`, which looks up this host's name
    (a DNS query on some machines) for every message.
    """

    def __init__(
        self,
        *,
        subject: str,
        recipients: list[str],
        body: str,
        html: str | None,
        sender: str | tuple[str, str],
        message_id: str,
        date: float | None = None,
    ) -> None:
        # The attributes flask_mail.Message's methods and Flask-Mail's signal users read.
        self.alts: dict[str, str] = {}  # before html: Flask-Mail keeps html in alts
        self.subject = subject
        self.recipients: list[str | tuple[str, str]] = list(recipients)
        self.body = body
        self.html = html
        self.sender = f"{sender[0]} <{sender[1]}>" if isinstance(sender, tuple) else sender
        self.msgId = message_id
        self.date = date
        self.cc: list[str | tuple[str, str]] = []
        self.bcc: list[str | tuple[str, str]] = []
        self.reply_to = None
        self.attachments: list[flask_mail.Attachment] = []
        self.charset = None
        self.extra_headers = None
        self.mail_options: list[str] = []
        self.rcpt_options: list[str] = []

    def as_bytes(self) -> bytes:
        for name, raw in (("From", self.sender), *(("To", r) for r in self.recipients)):
            text = raw if isinstance(raw, str) else " ".join(raw)
            if has_line_break(text):
                raise ValueError(f"The {name} header contains a line break.")
        headers = {
            "Subject": self.subject,
            "From": address_header(str(self.sender)),
            "To": ", ".join(address_header(str(r)) for r in self.recipients),
            "Date": formatdate(self.date if self.date is not None else time.time(), usegmt=True),
            "Message-ID": self.msgId,
        }
        # "=" is always escaped in quoted-printable bodies, so "==" never occurs in them.
        boundary = f"==cm-{secrets.token_hex(8)}"
        parts = [text_part("plain", self.body or "")]
        if self.html is not None:
            parts.append(text_part("html", self.html))
        head = "\r\n".join(header_line(name, value) for name, value in headers.items())
        body = "".join(f"--{boundary}\r\n{part}\r\n" for part in parts)
        return (
            f"{head}\r\nMIME-Version: 1.0\r\n"
            f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'
            f"{body}--{boundary}--\r\n"
        ).encode("ascii")

    def as_string(self) -> str:
        return self.as_bytes().decode("ascii")
