"""Confirmation emails on the SMTP wire: the message, its header checks, one SMTP session.

Both senders use this module: the app's in-process transport and the mailer service. A
message is an :class:`email.message.Message` (text and HTML alternatives, a Message-ID kept
across retries). :class:`SMTPSession` is written on :mod:`smtplib` rather than taken from
Flask-Mail's ``Connection`` because that one sets no socket timeout (a silent server hangs
the worker for ever) and runs STARTTLS without verifying the server's certificate.
"""

from __future__ import annotations

import re
import secrets
import smtplib
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from email.charset import QP, Charset
from email.header import Header
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.nonmultipart import MIMENonMultipart
from email.policy import SMTP as SMTP_POLICY
from email.policy import compat32
from email.utils import formataddr, formatdate, parseaddr
from types import TracebackType

from .errors import DeliveryError

SECURITY_MODES = ("starttls", "ssl", "none")

#: Characters no caller-supplied text that may reach a header should contain.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_UTF8_QP = Charset("utf-8")
_UTF8_QP.body_encoding = QP
#: What smtplib sends as it is: CRLF line ends.
_WIRE = compat32.clone(linesep="\r\n")
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
) -> Message:
    """The confirmation email: ``multipart/alternative``, text then HTML, quoted-printable.

    Built with the standard library's MIME classes rather than ``flask_mail.Message``:
    Flask-Mail writes a display name holding ``<``, ``@`` or quotes into ``From`` unquoted,
    so such a name would read as another address. Not with the newer ``EmailMessage``
    API either: its header parsing made each message cost 1.2 ms of CPU against 0.25 ms
    here (measured on 1,000 messages), a third of a delivery worker's time.

    :raises DeliveryError: (permanent) a header value could break its line.
    """
    name, address = parseaddr(format_sender(sender))
    if unsafe_header("Subject", subject) or unsafe_header("To", recipient) or not address:
        raise DeliveryError("A header value could break its line.", permanent=True)
    # Quoted-printable bodies write "=" as "=3D", so a boundary holding "==" cannot occur
    # in them; giving one saves the generator compiling a regex to search for a safe one.
    boundary = f"==cm-{secrets.token_hex(12)}=="
    message = MIMEMultipart("alternative", boundary=boundary, policy=_WIRE)
    # A compat32 message takes a Header and folds it when written (typeshed says str only).
    message["Subject"] = subject if subject.isascii() else Header(subject, "utf-8")  # type: ignore[assignment]
    message["From"] = formataddr((name, address), charset="utf-8")
    message["To"] = recipient
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = message_id
    for subtype, body in (("plain", text), ("html", html)):
        part = MIMENonMultipart("text", subtype, policy=_WIRE, charset="utf-8")
        part.set_payload(body, _UTF8_QP)
        message.attach(part)
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


def envelope_sender(message: Message) -> str:
    """The bare address of the message's ``From``, for ``MAIL FROM``."""
    return parseaddr(str(message["From"]))[1]


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
        return self.ssl_context or ssl.create_default_context()


def _dot_terminated(data: bytes) -> bytes:
    """``data`` as DATA sends it: leading dots doubled, ended by ``CRLF . CRLF``."""
    data = _LEADING_DOT.sub(b"..", data)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


_LEADING_DOT = re.compile(rb"(?m)^\.")
#: Back-off of one connection after a 4xx answer: first delay and cap, seconds.
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0


class SMTPSession:
    """A lazily opened SMTP connection, reused across messages; a context manager.

    :meth:`send` raises :class:`DeliveryError`: ``permanent`` when the server refused
    the recipient or the message for good (5xx), ``outcome_unknown`` when the connection
    was lost after the whole message was sent (it may have been delivered), otherwise
    the caller retries later. After a connection-level failure the next :meth:`send`
    opens a new connection. After a 4xx answer the next :meth:`send` on this session
    waits first (0.5 s, doubling to 30 s while 4xx answers go on): the server asked
    this connection to slow down.

    The steps of ``sendmail`` (``MAIL``, ``RCPT``, ``DATA``) are taken one by one so
    that a connection lost while waiting for the answer to the message can be told
    apart from one lost before the message was sent.
    """

    def __init__(self, settings: SMTPSettings, *, clock: Callable[[], float] = time.monotonic):
        self.settings = settings
        self._client: smtplib.SMTP | None = None
        self._clock = clock
        self._backoffs = 0
        #: When this session may send again (``clock()`` time), after a 4xx answer.
        self.resume_at = 0.0

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
        except (OSError, smtplib.SMTPException) as exc:
            raise DeliveryError(self._connection_failed(exc)) from None
        try:
            code, _ = client.noop()
            if code != 250:
                raise DeliveryError(f"SMTP server {self.address} answered NOOP with {code}")
        finally:
            try:
                client.quit()
            except (OSError, smtplib.SMTPException):
                client.close()

    def _connection_failed(self, exc: BaseException) -> str:
        detail = getattr(exc, "strerror", None) or type(exc).__name__
        return f"SMTP connection to {self.address} failed ({type(exc).__name__}: {detail})"

    def send_message(self, message: Message) -> None:
        """Send a message built by :func:`build_message` to its one recipient."""
        self.send(envelope_sender(message), str(message["To"]), message.as_bytes())

    def send(self, sender: str, recipient: str, data: bytes) -> None:
        """Send ``data`` from ``sender`` to ``recipient`` over the (re)opened connection."""
        wait = self.resume_at - self._clock()
        if wait > 0:
            time.sleep(wait)
        handed_over = False
        try:
            if self._client is None:
                self._client = self._connect()
            client = self._client
            client.ehlo_or_helo_if_needed()
            size = [f"size={len(data)}"] if client.does_esmtp and client.has_extn("size") else []
            code, reply = client.mail(sender, size)
            if code != 250:
                raise smtplib.SMTPSenderRefused(code, reply, sender)
            code, reply = client.rcpt(recipient)
            if code not in (250, 251):
                raise smtplib.SMTPRecipientsRefused({recipient: (code, reply)})
            code, reply = client.docmd("data")
            if code != 354:
                raise smtplib.SMTPDataError(code, reply)
            client.send(_dot_terminated(data))
            handed_over = True
            code, reply = client.getreply()
            if code != 250:
                raise smtplib.SMTPDataError(code, reply)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            self._answered(min(codes))
            raise DeliveryError(
                f"SMTP server refused the recipient ({', '.join(map(str, codes))})",
                bounced=all(code >= 500 for code in codes),
            ) from None
        except smtplib.SMTPResponseException as exc:
            if exc.smtp_code >= 500 and not isinstance(exc, smtplib.SMTPAuthenticationError):
                self._answered(exc.smtp_code)
                raise DeliveryError(
                    f"SMTP server rejected the message ({exc.smtp_code})",
                    permanent=True,
                    # After DATA the message was refused; a 5xx to MAIL FROM or HELO
                    # is about us (the sender), not about the recipient's address.
                    bounced=isinstance(exc, smtplib.SMTPDataError),
                ) from None
            if exc.smtp_code == 421 or isinstance(exc, smtplib.SMTPAuthenticationError):
                self._drop()
            self._answered(exc.smtp_code)
            raise DeliveryError(f"SMTP server answered {exc.smtp_code}") from None
        except (OSError, smtplib.SMTPException) as exc:
            self._drop()
            if handed_over:
                raise DeliveryError(
                    f"SMTP connection to {self.address} lost after the message was sent "
                    f"({type(exc).__name__}): outcome unknown",
                    outcome_unknown=True,
                ) from None
            raise DeliveryError(self._connection_failed(exc)) from None
        self._backoffs = 0

    def _answered(self, code: int) -> None:
        """After a refusal: reset the transaction; after a 4xx, back this session off."""
        if code < 500:
            self.resume_at = self._clock() + min(
                BACKOFF_MAX, BACKOFF_FIRST * 2 ** min(self._backoffs, 16)
            )
            self._backoffs += 1
        if self._client is not None:
            try:
                self._client.rset()
            except (OSError, smtplib.SMTPException):
                self._drop()

    def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except OSError:
                pass

    def close(self) -> None:
        """Say QUIT if connected, then close."""
        client, self._client = self._client, None
        if client is None:
            return
        try:
            client.quit()
        except (OSError, smtplib.SMTPException):
            client.close()


class SMTPSessionPool:
    """Lends :class:`SMTPSession` objects for one send each, and keeps a few open between.

    Threads never share a session. A session idle longer than ``idle_seconds`` is closed
    rather than reused: servers drop idle clients, and a dropped connection would cost the
    caller a retry. With ``max_open``, no more than that many sessions exist at once: a
    borrower waits for one to come back. An idle session that is backing off after a
    4xx answer is lent only when no other is idle.

    :param settings: where and how to reach the SMTP server.
    :param max_idle: how many idle sessions to keep (at most ``max_open``).
    :param idle_seconds: how long an idle session may be reused.
    :param max_open: how many sessions may exist at once; ``None``: no limit.
    """

    def __init__(
        self,
        settings: SMTPSettings,
        *,
        max_idle: int = 4,
        idle_seconds: float = 20.0,
        max_open: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.max_idle = max_idle if max_open is None else min(max_idle, max_open)
        self.idle_seconds = idle_seconds
        self.max_open = max_open
        self._clock = clock
        self._idle: list[tuple[float, SMTPSession]] = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max_open) if max_open else None

    def send_message(self, message: Message) -> None:
        """Send ``message`` on a borrowed session; raises as :meth:`SMTPSession.send`."""
        if self._slots is not None:
            self._slots.acquire()
        try:
            session = self._borrow()
            try:
                session.send_message(message)
            except DeliveryError:
                self._give_back(session)  # the session reconnects or backs off itself
                raise
            except BaseException:
                session.close()
                raise
            self._give_back(session)
        finally:
            if self._slots is not None:
                self._slots.release()

    def _borrow(self) -> SMTPSession:
        with self._lock:
            now = self._clock()
            stale = [s for since, s in self._idle if now - since > self.idle_seconds]
            self._idle = [(since, s) for since, s in self._idle if now - since <= self.idle_seconds]
            borrowed = None
            if self._idle:
                # The most recently used among those not backing off.
                index = min(
                    range(len(self._idle)),
                    key=lambda i: (self._idle[i][1].resume_at > now, -self._idle[i][0]),
                )
                borrowed = self._idle.pop(index)[1]
        for session in stale:
            session.close()
        return borrowed or SMTPSession(self.settings, clock=self._clock)

    def _give_back(self, session: SMTPSession) -> None:
        with self._lock:
            if len(self._idle) < self.max_idle:
                self._idle.append((self._clock(), session))
                return
        session.close()

    def close(self) -> None:
        """Close every idle session (QUIT)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for _, session in idle:
            session.close()
