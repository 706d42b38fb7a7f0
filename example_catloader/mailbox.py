"""The local mailbox: where mail goes when no SMTP server is configured.

With ``MAIL_SUPPRESS_SEND`` Flask-Mail (through the extension's transport) builds every
message and announces it on ``flask_mail.email_dispatched`` without sending it. The
mailbox listens to that signal and keeps each message as a JSON file in the instance
folder, so messages survive restarts and a delivery worker in another process fills
the same mailbox that the web app shows at ``/dev/mailbox``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from email.header import decode_header, make_header
from email.message import Message
from pathlib import Path
from typing import Any

import flask_mail
from flask import Flask

from flask_confirm_mail.smtp import message_texts

EXTENSION_KEY = "catloader_mailbox"
#: Older messages are deleted beyond this many.
KEEP_MESSAGES = 200
MESSAGE_ID = re.compile(r"[0-9]{8}T[0-9]{12}-[0-9a-f]{8}")


@dataclass(frozen=True)
class StoredMail:
    """One message as the mailbox keeps it."""

    id: str
    received_at: datetime
    sender: str
    recipients: list[str]
    subject: str
    text: str
    html: str
    #: The Message-ID header, which a bounce names (empty for messages kept without one).
    message_id_header: str = ""


class Mailbox:
    """A folder of delivered messages, newest first."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.app: Flask | None = None

    def record(self, sender: Any, **kwargs: Any) -> None:
        """Receiver of ``flask_mail.email_dispatched``: keep the message if it is this app's.

        Flask-Mail 0.10 sends ``(app, message=message)``, Flask-Mail 0.9 ``(message, app=app)``.
        """
        if kwargs.get("app", sender) is not self.app:
            return
        message: Message = kwargs.get("message", sender)
        text, html = message_texts(message)
        self.add(
            sender=str(make_header(decode_header(message["From"] or ""))),
            recipients=[str(message["To"] or "")],
            subject=str(make_header(decode_header(message["Subject"] or ""))),
            text=text,
            html=html,
            message_id_header=str(message["Message-ID"] or ""),
        )

    def add(
        self,
        *,
        sender: str,
        recipients: list[str],
        subject: str,
        text: str,
        html: str,
        message_id_header: str = "",
    ) -> str:
        """Store a message; returns its id."""
        now = datetime.now(timezone.utc)
        message_id = f"{now:%Y%m%dT%H%M%S%f}-{secrets.token_hex(4)}"
        record = {
            "received_at": now.isoformat(),
            "sender": sender,
            "recipients": recipients,
            "subject": subject,
            "text": text,
            "html": html,
            "message_id": message_id_header,
        }
        self.folder.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=self.folder, prefix=".incoming.")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(record, handle)
        os.replace(temporary, self.folder / f"{message_id}.json")
        self._prune()
        return message_id

    def ids(self) -> list[str]:
        """Ids of the kept messages, newest first."""
        if not self.folder.is_dir():
            return []
        names = (path.stem for path in self.folder.glob("*.json"))
        return sorted((n for n in names if MESSAGE_ID.fullmatch(n)), reverse=True)

    def messages(self) -> list[StoredMail]:
        found = (self.get(message_id) for message_id in self.ids())
        return [mail for mail in found if mail is not None]

    def get(self, message_id: str) -> StoredMail | None:
        """The message ``message_id``, or ``None`` (also for anything not an id)."""
        if MESSAGE_ID.fullmatch(message_id) is None:
            return None
        try:
            with open(self.folder / f"{message_id}.json", encoding="utf-8") as handle:
                data = json.load(handle)
            return StoredMail(
                id=message_id,
                received_at=datetime.fromisoformat(data["received_at"]),
                sender=str(data["sender"]),
                recipients=[str(r) for r in data["recipients"]],
                subject=str(data["subject"]),
                text=str(data["text"]),
                html=str(data["html"]),
                message_id_header=str(data.get("message_id") or ""),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def clear(self) -> None:
        for message_id in self.ids():
            (self.folder / f"{message_id}.json").unlink(missing_ok=True)

    def _prune(self) -> None:
        for message_id in self.ids()[KEEP_MESSAGES:]:
            (self.folder / f"{message_id}.json").unlink(missing_ok=True)


def install_mailbox(app: Flask) -> Mailbox | None:
    """Keep ``app``'s mail in its mailbox folder when the local mailbox is on."""
    if not app.config["CATLOADER_MAILBOX"]:
        return None
    mailbox = Mailbox(app.config["CATLOADER_MAILBOX_FOLDER"])
    app.extensions[EXTENSION_KEY] = mailbox
    # A weak reference to the bound method: the receiver lives as long as the app does.
    mailbox.app = app
    flask_mail.email_dispatched.connect(mailbox.record)
    return mailbox


def mailbox_of(app: Flask) -> Mailbox | None:
    mailbox: Mailbox | None = app.extensions.get(EXTENSION_KEY)
    return mailbox


#: The confirmation code: the line of the email's text indented by four spaces.
_CODE_LINE = re.compile(r"^ {4}([A-Za-z0-9]{4,32})\r?$", re.MULTILINE)


def first_code(text: str) -> str | None:
    """The confirmation code in an email's text, as the extension's templates lay it out."""
    match = _CODE_LINE.search(text)
    return match.group(1) if match else None


def first_link(text: str, prefix: str) -> str | None:
    """The first URL in ``text`` that starts with ``prefix``."""
    for word in text.split():
        if word.startswith(prefix) and len(word) > len(prefix):
            return word.rstrip(".,;)>")
    return None
