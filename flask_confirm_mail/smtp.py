"""Confirmation emails as the standard library builds them, their header checks, and a thin
SMTP session on :mod:`smtplib`.

Both senders use this module: the app's in-process transport and the mailer service.
:class:`SMTPSession` is written on :mod:`smtplib` rather than taken from Flask-Mail's
``Connection`` because that one sets no socket timeout (a silent server hangs the worker
for ever) and runs STARTTLS without verifying the server's certificate.
"""

from __future__ import annotations

import re
import smtplib
import ssl
import threading
from dataclasses import dataclass, field
from datetime import timedelta
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.message import EmailMessage, Message
from email.policy import SMTP as SMTP_POLICY
from email.utils import formataddr, formatdate, parseaddr
from types import TracebackType

from .errors import DeliveryError

SECURITY_MODES = ("starttls", "ssl", "none")

#: Characters no caller-supplied text that may reach a header should contain.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_LINE_BREAKS = re.compile(r"[\r\n\x0b\x0c\x85\u2028\u2029]")


def unsafe_header(name: str, value: str) -> bool:
    """Whether ``value`` could break out of header ``name``: a line break, raw or hidden.

    A line break may hide in an RFC 2047 encoded word (``=?utf-8?q?=0D=0ABcc:...?=``):
    the email package decodes such words when it parses a header value, and Python
    versions before the fix of gh-121650 write the decoded line break out as is.
    """
    if _LINE_BREAKS.search(value):
        return True
    if "=?" not in value:
        return False  # nothing that parsing would decode
    try:
        parsed = str(SMTP_POLICY.header_factory(name, value))
    except (ValueError, TypeError, LookupError):
        return True
    return _LINE_BREAKS.search(parsed) is not None


def format_sender(sender: str | tuple[str, str] | None) -> str:
    """``("Name", "addr")`` or ``"Name <addr>"`` as one header value, checked for line breaks.

    :raises DeliveryError: (permanent) no sender, or one that is not a single line.
    """
    if sender is None:
        raise DeliveryError("No sender configured (CONFIRM_MAIL_SENDER).", permanent=True)
    text = formataddr(sender) if isinstance(sender, tuple) else str(sender)
    if unsafe_header("From", text):
        raise DeliveryError("The sender is not a single-line address.", permanent=True)
    return text


def lifetime_in_units(lifetime: timedelta) -> tuple[int, str]:
    """``timedelta(hours=48)`` -> ``(48, "hour")``; days only when whole and over two."""
    seconds = int(lifetime.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0 and seconds >= size and (unit != "day" or seconds > 2 * size):
            return seconds // size, unit
    return seconds, "second"


def format_lifetime(lifetime: timedelta) -> str:
    """``timedelta(hours=48)`` -> ``"48 hours"``; days only when whole and over two."""
    count, unit = lifetime_in_units(lifetime)
    return f"{count} {unit}{'' if count == 1 else 's'}"


def build_message(
    *,
    subject: str,
    sender: str | tuple[str, str] | None,
    recipient: str,
    text: str,
    html: str,
    message_id: str,
) -> EmailMessage:
    """The confirmation email: ``multipart/alternative``, text then HTML, to one recipient.

    The bodies are quoted-printable, so a long link stays within SMTP's line limit and
    any relay carries them as they are. ``message_id`` is the caller's, so a retried
    email keeps it.

    :raises DeliveryError: (permanent) a header value could break its line, or the sender
        or the recipient is not a single address.
    """
    name, address = parseaddr(format_sender(sender))
    if unsafe_header("Subject", subject) or unsafe_header("To", recipient):
        raise DeliveryError("A header value could break its line.", permanent=True)
    message = EmailMessage(policy=SMTP_POLICY)
    try:
        message["From"] = Address(name, addr_spec=address)
        message["To"] = Address(addr_spec=recipient)
    except (ValueError, HeaderParseError):
        raise DeliveryError(
            "The sender or the recipient is not one address.", permanent=True
        ) from None
    message["Subject"] = subject
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = message_id
    message.set_content(text, cte="quoted-printable")
    message.add_alternative(html, subtype="html", cte="quoted-printable")
    return message


def message_texts(message: Message) -> tuple[str, str]:
    """The text and HTML bodies of a message built by :func:`build_message`."""
    bodies = {"text/plain": "", "text/html": ""}
    for part in message.walk():
        if part.get_content_type() in bodies and not bodies[part.get_content_type()]:
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                charset = part.get_content_charset() or "utf-8"
                bodies[part.get_content_type()] = payload.decode(charset, "replace")
    return bodies["text/plain"], bodies["text/html"]


@dataclass(frozen=True)
class SMTPSettings:
    """Where and how to reach the SMTP server."""

    host: str
    port: int
    security: str = "none"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = 10.0
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False, compare=False)

    def context(self) -> ssl.SSLContext:
        """The TLS context: the configured one, or the system's CAs with verification."""
        return self.ssl_context or ssl.create_default_context()


class SMTPSession:
    """One SMTP connection, opened on first use and kept for the next message; a context
    manager. :meth:`send` and :meth:`close` may be called from different threads: a
    lock keeps a connection from being closed under a message being sent.

    Every socket operation times out after ``settings.timeout`` seconds. A kept
    connection the server has dropped meanwhile is found at the next message, which is
    then sent once more on a new connection.
    """

    def __init__(self, settings: SMTPSettings) -> None:
        self.settings = settings
        self._client: smtplib.SMTP | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> SMTPSession:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def address(self) -> str:
        """``host:port`` of the server, for error messages."""
        return f"{self.settings.host}:{self.settings.port}"

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        client: smtplib.SMTP
        if s.security == "ssl":
            client = smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout, context=s.context())
        else:
            client = smtplib.SMTP(s.host, s.port, timeout=s.timeout)
        try:
            if s.security == "starttls":
                client.starttls(context=s.context())
            if s.username:
                client.login(s.username, s.password or "")
        except BaseException:
            client.close()
            raise
        return client

    def check(self) -> None:
        """Connect (STARTTLS, AUTH as configured), say ``NOOP``, then ``QUIT``.

        :raises DeliveryError: the server cannot be reached or refused the session.
        """
        try:
            client = self._connect()
        except smtplib.SMTPAuthenticationError as exc:
            raise DeliveryError(
                f"SMTP server {self.address} refused the login ({exc.smtp_code})"
            ) from None
        except OSError as exc:
            raise DeliveryError(self._connection_failed(exc)) from None
        try:
            code, _ = client.noop()
            if code != 250:
                raise DeliveryError(f"SMTP server {self.address} answered NOOP with {code}")
        finally:
            try:
                client.quit()
            except OSError:
                client.close()

    def _connection_failed(self, exc: BaseException) -> str:
        detail = getattr(exc, "strerror", None) or type(exc).__name__
        return f"SMTP connection to {self.address} failed ({type(exc).__name__}: {detail})"

    def send(self, message: EmailMessage) -> None:
        """Send ``message`` from its ``From`` address to its one ``To`` address.

        :raises DeliveryError: ``permanent`` when the server refused for good (a 5xx),
            ``bounced`` as well when that refusal was of the recipient or the message;
            ``outcome_unknown`` when the connection was lost after the message was
            handed over (it may have been delivered); otherwise temporary.
        """
        sender = message["From"].addresses[0].addr_spec
        recipient = message["To"].addresses[0].addr_spec
        data = message.as_bytes(policy=message.policy.clone(linesep="\r\n"))
        with self._lock:
            try:
                client = self._envelope(sender, recipient)
            except OSError as exc:
                raise self._failed(exc) from None
            try:
                code, reply = client.data(data)
                if code != 250:
                    raise smtplib.SMTPDataError(code, reply)
            except smtplib.SMTPResponseException as exc:
                raise self._failed(exc) from None
            except OSError as exc:
                # Lost from the DATA command on: the server may have taken the message.
                self._drop()
                raise DeliveryError(
                    f"SMTP connection to {self.address} lost after the message was sent "
                    f"({type(exc).__name__}): outcome unknown",
                    outcome_unknown=True,
                ) from None

    def _envelope(self, sender: str, recipient: str) -> smtplib.SMTP:
        """``MAIL`` and ``RCPT`` on the kept connection, or on a new one. A kept connection
        the server has closed meanwhile (or is closing, ``421``) is replaced once."""
        if self._client is not None:
            try:
                return _mail_and_rcpt(self._client, sender, recipient)
            except smtplib.SMTPServerDisconnected:
                self._drop()
            except smtplib.SMTPSenderRefused as exc:
                if exc.smtp_code != 421:
                    raise
                self._drop()
        self._client = self._connect()
        return _mail_and_rcpt(self._client, sender, recipient)

    def _failed(self, exc: OSError) -> DeliveryError:
        """``exc``, raised before the message went out or refusing it, as a
        :class:`DeliveryError`; the connection reset for the next message, or dropped."""
        if isinstance(exc, smtplib.SMTPRecipientsRefused):
            codes = [code for code, _ in exc.recipients.values()]
            self._reset()
            return DeliveryError(
                f"SMTP server refused the recipient ({', '.join(map(str, codes))})",
                bounced=all(code >= 500 for code in codes),
            )
        if not isinstance(exc, smtplib.SMTPResponseException):
            self._drop()
            return DeliveryError(self._connection_failed(exc))
        code = exc.smtp_code
        if code >= 500 and not isinstance(exc, smtplib.SMTPAuthenticationError):
            self._reset()
            return DeliveryError(
                f"SMTP server rejected the message ({code})",
                permanent=True,
                # After DATA the message was refused; a 5xx to MAIL FROM or HELO is about
                # us (the sender), not about the recipient's address.
                bounced=isinstance(exc, smtplib.SMTPDataError),
            )
        if code == 421 or isinstance(exc, smtplib.SMTPAuthenticationError):
            self._drop()  # the server is closing this connection, or refused to open it
        else:
            self._reset()
        return DeliveryError(f"SMTP server answered {code}")

    def _reset(self) -> None:
        """``RSET`` after a refusal, so the connection can carry the next message."""
        if self._client is not None:
            try:
                self._client.rset()
            except OSError:
                self._drop()

    def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def close(self) -> None:
        """Say ``QUIT`` if connected, then close; the next :meth:`send` connects again."""
        with self._lock:
            client, self._client = self._client, None
            if client is None:
                return
            try:
                client.quit()
            except OSError:
                client.close()


def _mail_and_rcpt(client: smtplib.SMTP, sender: str, recipient: str) -> smtplib.SMTP:
    """Open a mail transaction on ``client`` for one recipient, as ``sendmail`` does."""
    client.ehlo_or_helo_if_needed()
    code, reply = client.mail(sender)
    if code != 250:
        raise smtplib.SMTPSenderRefused(code, reply, sender)
    code, reply = client.rcpt(recipient)
    if code not in (250, 251):
        raise smtplib.SMTPRecipientsRefused({recipient: (code, reply)})
    return client


class SMTPSender:
    """Sends from any number of threads, each on an :class:`SMTPSession` of its own that
    it keeps between messages (threads never share a connection: an SMTP transaction is
    one conversation). :meth:`close` closes every kept connection; the session of a
    thread that has ended is closed when another thread first sends.
    """

    def __init__(self, settings: SMTPSettings) -> None:
        self.settings = settings
        self._sessions: dict[threading.Thread, SMTPSession] = {}
        self._lock = threading.Lock()

    def send(self, message: EmailMessage) -> None:
        """Send ``message`` on this thread's session; raises as :meth:`SMTPSession.send`."""
        self._session().send(message)

    def _session(self) -> SMTPSession:
        thread = threading.current_thread()
        ended: list[SMTPSession] = []
        with self._lock:
            session = self._sessions.get(thread)
            if session is None:
                for other in [t for t in self._sessions if not t.is_alive()]:
                    ended.append(self._sessions.pop(other))
                session = self._sessions[thread] = SMTPSession(self.settings)
        for old in ended:
            old.close()
        return session

    def close(self) -> None:
        """Close every thread's connection (``QUIT``); each opens a new one at its next send."""
        with self._lock:
            sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            session.close()
