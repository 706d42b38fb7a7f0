"""Confirmation emails built with :mod:`email`, their header checks, and a thin SMTP session
on :mod:`smtplib`: Flask-Mail's ``Connection`` sets no socket timeout (a silent server hangs
the worker for ever) and runs STARTTLS without verifying the server's certificate."""

from __future__ import annotations

import re
import secrets
import smtplib
import ssl
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import format_datetime, formataddr, parseaddr

from .errors import DeliveryError

SECURITY_MODES = ("starttls", "ssl", "none")

#: Characters no caller-supplied text that may reach a header should contain.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_LINE_BREAKS = re.compile(r"[\r\n\x0b\x0c\x85\u2028\u2029]")
_PROVIDER_ID = re.compile(r"(?=[!-~]*\d)(?!\d\.\d+\.\d+$)[!-~]{1,255}")


def unsafe_header(name: str, value: str) -> bool:
    """Whether ``value`` could break out of header ``name``: a line break, raw or hidden in
    an RFC 2047 word (``=?utf-8?q?=0D=0ABcc:...?=``), which the email package decodes when
    it parses a header and Python before the fix of gh-121650 writes out as is."""
    if _LINE_BREAKS.search(value):
        return True
    try:
        parsed = str(SMTP_POLICY.header_factory(name, value)) if "=?" in value else value
    except (ValueError, TypeError, LookupError):
        return True
    return _LINE_BREAKS.search(parsed) is not None


def format_sender(sender: str | tuple[str, str] | None) -> str:
    """``("Name", "addr")`` or ``"Name <addr>"`` as one header value; else a permanent error."""
    if sender is None:
        raise DeliveryError("No sender configured (CONFIRM_MAIL_SENDER).", permanent=True)
    text = formataddr(sender) if isinstance(sender, tuple) else str(sender)
    if unsafe_header("From", text):
        raise DeliveryError("The sender is not a single-line address.", permanent=True)
    return text


def provider_message_id(reply: str) -> str | None:
    """The provider's id in its reply to DATA's final "." (SES: "250 Ok <id>", SendGrid: "250 Ok:
    queued as <id>"): the last word, if printable ASCII with a digit, no status ("2.0.0")."""
    word = (reply.split() or [""])[-1].strip("<>")
    return word if _PROVIDER_ID.fullmatch(word) else None


def lifetime_in_units(lifetime: timedelta) -> tuple[int, str]:
    """``timedelta(hours=48)`` -> ``(48, "hour")``; days only when whole and over two."""
    seconds = int(lifetime.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0 and seconds >= size and (unit != "day" or seconds > 2 * size):
            return seconds // size, unit
    return seconds, "second"


def format_lifetime(lifetime: timedelta) -> str:
    """``timedelta(hours=48)`` -> ``"48 hours"``."""
    count, unit = lifetime_in_units(lifetime)
    return f"{count} {unit}{'' if count == 1 else 's'}"


def build_message(
    *, subject: str, sender: str | tuple[str, str] | None, recipient: str, text: str,
    html: str, message_id: str,
) -> EmailMessage:  # fmt: skip
    """The confirmation email: ``multipart/alternative``, text then HTML, to one recipient.
    Quoted-printable keeps a long link within SMTP's line limit; ``message_id`` is the
    caller's, so a retried email keeps it. Raises a permanent :class:`DeliveryError`."""
    name, address = parseaddr(format_sender(sender))
    if unsafe_header("Subject", subject) or unsafe_header("To", recipient):
        raise DeliveryError("A header value could break its line.", permanent=True)
    message = EmailMessage(policy=SMTP_POLICY)
    try:
        message["From"] = Address(name, addr_spec=address)
        message["To"] = Address(addr_spec=recipient)
    except (ValueError, HeaderParseError):
        msg = "The sender or the recipient is not one address."
        raise DeliveryError(msg, permanent=True) from None
    message["Subject"] = subject
    message["Date"] = format_datetime(datetime.now(timezone.utc))  # "+0000", not "GMT"
    message["Message-ID"] = message_id
    message.set_content(text, cte="quoted-printable")
    message.add_alternative(html, subtype="html", cte="quoted-printable")
    message.set_boundary(secrets.token_hex(12))  # its Content-Type line within 78 characters
    return message


def message_texts(message: EmailMessage) -> tuple[str, str]:
    """The text and HTML bodies of a message built by :func:`build_message`."""
    text, html = (message.get_body((kind,)) for kind in ("plain", "html"))
    return (text.get_content() if text else "", html.get_content() if html else "")


@dataclass(frozen=True)
class SMTPSettings:
    """Where and how to reach the SMTP server; TLS verifies with the system's CAs by default."""

    host: str
    port: int
    security: str = "none"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = 10.0
    #: Name announced in EHLO; ``None``: the machine's fully qualified name.
    ehlo_name: str | None = None
    #: Seconds to wait for the reply to DATA's final "." (RFC 5321 4.5.3.2.6: 10 minutes); a
    #: reply lost after the message went is an unknown outcome, which may make a copy.
    final_reply_timeout: float = 600.0
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False, compare=False)


class SMTPSession:
    """One SMTP connection, opened on first use and kept; each socket operation times out after
    ``settings.timeout`` seconds. A lock stops :meth:`close` from another thread mid-message."""

    def __init__(self, settings: SMTPSettings) -> None:
        self.settings = settings
        self.address = f"{settings.host}:{settings.port}"
        self._client: smtplib.SMTP | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> SMTPSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        context = None if s.security == "none" else s.ssl_context or ssl.create_default_context()
        client: smtplib.SMTP
        if s.security == "ssl":
            client = smtplib.SMTP_SSL(
                s.host, s.port, s.ehlo_name, timeout=s.timeout, context=context
            )
        else:
            client = smtplib.SMTP(s.host, s.port, s.ehlo_name, timeout=s.timeout)
        try:
            if s.security == "starttls":
                client.starttls(context=context)
            if s.username:
                client.login(s.username, s.password or "")
        except BaseException:
            client.close()
            raise
        return client

    def _connect_or_refused(self) -> smtplib.SMTP:
        try:
            return self._connect()
        except (ConnectionRefusedError, smtplib.SMTPConnectError) as exc:
            if getattr(exc, "smtp_code", 421) >= 500:
                raise
            msg = self._connection_failed(exc).replace("failed", "refused", 1)
            raise DeliveryError(msg, connection_refused=True) from None

    def check(self) -> None:
        """Connect (STARTTLS, AUTH as set), NOOP, QUIT; :class:`DeliveryError` if any step fails."""
        try:
            self._client = self._connect()
        except smtplib.SMTPAuthenticationError as exc:
            msg = f"SMTP server {self.address} refused the login ({exc.smtp_code})"
            raise DeliveryError(msg) from None
        except OSError as exc:
            raise DeliveryError(self._connection_failed(exc)) from None
        with self:
            code, _ = self._client.noop()
            if code != 250:
                raise DeliveryError(f"SMTP server {self.address} answered NOOP with {code}")

    def _connection_failed(self, exc: BaseException) -> str:
        detail = getattr(exc, "strerror", None) or type(exc).__name__
        return f"SMTP connection to {self.address} failed ({type(exc).__name__}: {detail})"

    def send(self, message: EmailMessage) -> str:
        """Send ``message`` to its one ``To`` address; return the final reply's text, or raise
        :class:`DeliveryError`: permanent for a 5xx, bounced when refusing recipient or message."""
        sender = message["From"].addresses[0].addr_spec
        recipient = message["To"].addresses[0].addr_spec
        data = message.as_bytes(policy=message.policy.clone(linesep="\r\n"))
        with self._lock:
            client: smtplib.SMTP | None = None
            try:
                client = self._envelope(sender, recipient)
                self._set_timeout(client, self.settings.final_reply_timeout)
                try:
                    code, reply = client.data(data)
                finally:
                    self._set_timeout(client, self.settings.timeout)
                if code != 250:
                    raise smtplib.SMTPDataError(code, reply)
                return reply.decode(errors="replace")
            except OSError as exc:
                if client is None or isinstance(exc, smtplib.SMTPResponseException):
                    raise self._failed(exc) from None
                # Lost from the DATA command on: the server may have taken the message.
                self._drop()
                name = type(exc).__name__
                msg = f"SMTP connection to {self.address} lost after the message was sent ({name})"
                raise DeliveryError(f"{msg}: outcome unknown", outcome_unknown=True) from None

    @staticmethod
    def _set_timeout(client: smtplib.SMTP, seconds: float) -> None:
        if client.sock is not None:
            client.sock.settimeout(seconds)

    def _envelope(self, sender: str, recipient: str) -> smtplib.SMTP:
        """``MAIL`` and ``RCPT``, as ``sendmail`` does. A kept connection that the server
        has closed meanwhile (or is closing: ``421``) is replaced once."""
        retry = self._client is not None
        while True:
            client = self._client = self._client or self._connect_or_refused()
            try:
                client.ehlo_or_helo_if_needed()
                code, reply = client.mail(sender)
                if code != 250:
                    raise smtplib.SMTPSenderRefused(code, reply, sender)
                code, reply = client.rcpt(recipient)
                if code not in (250, 251):
                    raise smtplib.SMTPRecipientsRefused({recipient: (code, reply)})
                return client
            except (smtplib.SMTPServerDisconnected, smtplib.SMTPSenderRefused) as exc:
                if not retry or getattr(exc, "smtp_code", 421) != 421:
                    raise
            self._drop()
            retry = False

    def _failed(self, exc: OSError) -> DeliveryError:
        if isinstance(exc, smtplib.SMTPRecipientsRefused):
            [(code, _)] = exc.recipients.values()
            self._reset()
            return DeliveryError(f"SMTP server refused the recipient ({code})", bounced=code >= 500)
        if not isinstance(exc, smtplib.SMTPResponseException):
            self._drop()
            return DeliveryError(self._connection_failed(exc))
        code = exc.smtp_code
        if code == 421 or isinstance(exc, smtplib.SMTPAuthenticationError):
            self._drop()  # the server is closing this connection, or refused to open it
            return DeliveryError(f"SMTP server answered {code}")
        self._reset()
        if code < 500:
            return DeliveryError(f"SMTP server answered {code}")
        # A 5xx after DATA refuses the message; one to MAIL FROM or HELO is about us.
        msg = f"SMTP server rejected the message ({code})"
        return DeliveryError(msg, permanent=True, bounced=isinstance(exc, smtplib.SMTPDataError))

    def _reset(self) -> None:
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
            if client is not None:
                try:
                    client.quit()
                except OSError:
                    client.close()


class SMTPSender:
    """Sends from any number of threads over a pool of kept :class:`SMTPSession` objects, one
    message at a time on each (an SMTP transaction is one conversation). When the server
    refuses a new connection (421, or refused) while others are open, the pool keeps to those
    for ``COOL_OFF`` seconds and the send waits for one: a server's connection limit costs
    no message an attempt."""

    #: Seconds the pool stays at the size a refused connection found.
    COOL_OFF = 60.0

    def __init__(self, settings: SMTPSettings) -> None:
        self.settings = settings
        self._idle: list[SMTPSession] = []
        self._busy: set[SMTPSession] = set()
        self._stale: set[SMTPSession] = set()  # busy at close(): closed when given back
        self._cap, self._cap_until = 0, 0.0  # 0: no cap
        self._changed = threading.Condition()

    def send(self, message: EmailMessage) -> str:
        """Send ``message`` on a session of the pool; as :meth:`SMTPSession.send`."""
        while True:
            session, refused = self._take(), False
            try:
                return session.send(message)
            except DeliveryError as exc:
                refused = exc.connection_refused
                if not (refused and self._shrink(session)):
                    raise
            finally:
                if not refused:
                    self._give_back(session)
            # A connection refused while others are open: wait for one of them.

    def _take(self) -> SMTPSession:
        with self._changed:
            while True:
                if self._cap and time.monotonic() >= self._cap_until:
                    self._cap = 0
                if self._idle:
                    session = self._idle.pop()
                elif not self._cap or len(self._busy) < self._cap:
                    session = SMTPSession(self.settings)
                else:
                    self._changed.wait(self._cap_until - time.monotonic())
                    continue
                self._busy.add(session)
                return session

    def _give_back(self, session: SMTPSession) -> None:
        with self._changed:
            self._busy.discard(session)
            stale = session in self._stale
            if stale:
                self._stale.discard(session)
            else:
                self._idle.append(session)
            self._changed.notify()
        if stale:
            session.close()

    def _shrink(self, refused: SMTPSession) -> bool:
        """Forget the refused (unconnected) session; cap the pool at the others, if any."""
        with self._changed:
            self._busy.discard(refused)
            self._stale.discard(refused)
            if others := len(self._busy) + len(self._idle):
                self._cap, self._cap_until = others, time.monotonic() + self.COOL_OFF
                return True
            self._cap = 0  # none connects: the waiting sends try again, and fail as this one
            self._changed.notify_all()
            return False

    def close(self) -> None:
        """Close the idle sessions now and the busy ones when their message is done; the next
        send connects anew."""
        with self._changed:
            idle, self._idle = self._idle, []
            self._stale |= self._busy
        for session in idle:
            session.close()
