"""One SMTP connection reused across a batch of messages, reconnecting after a failure.

Used by the in-process Flask-Mail transport and by the mailer service. Every socket
operation has a timeout; STARTTLS or implicit TLS verify the server's certificate
unless a test passes its own SSL context.
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass, field
from types import TracebackType

from .errors import DeliveryError

SECURITY_MODES = ("starttls", "ssl", "none")
_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` names this machine (plain text SMTP is allowed only there)."""
    return host in _LOOPBACK_HOSTS or host.startswith("127.")


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


class SMTPSession:
    """A lazily opened SMTP connection; use as a context manager around a batch.

    :meth:`send` raises :class:`DeliveryError`: ``permanent`` when the server refused
    the recipient or the message for good (5xx), otherwise the caller retries later.
    After a connection-level failure the next :meth:`send` opens a new connection.
    """

    def __init__(self, settings: SMTPSettings) -> None:
        self.settings = settings
        self._client: smtplib.SMTP | None = None

    def __enter__(self) -> SMTPSession:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

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

    def send(self, sender: str, recipient: str, message: bytes) -> None:
        """Send one message to one recipient over the (re)opened connection."""
        try:
            if self._client is None:
                self._client = self._connect()
            refused = self._client.sendmail(sender, [recipient], message)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            raise DeliveryError(
                f"SMTP server refused the recipient ({', '.join(map(str, codes))})",
                permanent=all(code >= 500 for code in codes),
            ) from None
        except smtplib.SMTPResponseException as exc:
            if exc.smtp_code >= 500 and not isinstance(exc, smtplib.SMTPAuthenticationError):
                raise DeliveryError(
                    f"SMTP server rejected the message ({exc.smtp_code})", permanent=True
                ) from None
            self._drop()
            raise DeliveryError(f"SMTP server answered {exc.smtp_code}") from None
        except (OSError, smtplib.SMTPException) as exc:
            self._drop()
            raise DeliveryError(f"SMTP connection failed ({type(exc).__name__})") from None
        if refused:
            raise DeliveryError("SMTP server refused the recipient", permanent=True)

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
