"""A real SMTP server for tests and benchmarks: aiosmtpd on 127.0.0.1, in a thread.

Every message it accepts is kept in :attr:`SMTPSink.messages`. Knobs for the unhappy
paths: :attr:`SMTPSink.delay` (a slow server), :meth:`SMTPSink.fail_next` (4xx/5xx
answers to DATA), :meth:`SMTPSink.refuse_recipient_next` (4xx/5xx answers to RCPT),
:meth:`SMTPSink.drop_after_data_next` (a connection lost after DATA) and
:meth:`SMTPSink.stop` / :meth:`SMTPSink.start` (an outage, on the same port).
:attr:`SMTPSink.reply_with_id` answers the final "." as SES does, with an id of its own.
:attr:`SMTPSink.connections` counts the connections clients opened.
``tls=True`` adds STARTTLS with a throwaway certificate, required before any mail
command; ``auth=(user, password)`` requires AUTH PLAIN or LOGIN.
"""

from __future__ import annotations

import asyncio
import datetime
import email.policy
import ipaddress
import logging
import os
import shutil
import socket
import ssl
import tempfile
import threading
import time
import uuid
import weakref
from dataclasses import dataclass
from email.message import EmailMessage
from email.parser import BytesParser
from types import TracebackType
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import (
    SMTP,
    AuthResult,
    Envelope,
    LoginPassword,
    Session,
    TLSSetupException,
)

__all__ = ["ReceivedMail", "SMTPSink"]

_PARSER = BytesParser(policy=email.policy.default)
_log = logging.getLogger(__name__)


@dataclass
class ReceivedMail:
    """One message as the server received it."""

    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    message: EmailMessage
    #: The name the client announced in EHLO or HELO.
    helo: str = ""
    #: The id the reply to the final "." gave (:attr:`SMTPSink.reply_with_id`), else "".
    reply_id: str = ""


class _Handler:
    """The aiosmtpd handler: applies the sink's delay and injected failures, then stores."""

    def __init__(self, sink: SMTPSink) -> None:
        self._sink = sink

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        refusal = self._sink._take_refusal()
        if refusal is not None:
            return f"{refusal} {refusal // 100}.1.1 Refused by SMTPSink.refuse_recipient_next"
        if not self._sink._within_rate():
            return "450 4.7.1 Rate limited by SMTPSink.rate_limit"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        failure_code = self._sink._take_failure()
        if self._sink.delay > 0:
            await asyncio.sleep(self._sink.delay)
        if failure_code is not None:
            klass = 4 if failure_code < 500 else 5
            return f"{failure_code} {klass}.3.0 Failure injected by SMTPSink.fail_next"
        raw = envelope.original_content or envelope.content or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        message = _PARSER.parsebytes(raw)
        assert isinstance(message, EmailMessage)
        reply_id = str(uuid.uuid4()) if self._sink.reply_with_id else ""
        self._sink._store(
            ReceivedMail(
                mail_from=envelope.mail_from or "",
                rcpt_tos=list(envelope.rcpt_tos),
                raw=raw,
                message=message,
                helo=session.host_name or "",
                reply_id=reply_id,
            )
        )
        if self._sink._take_drop() and server.transport is not None:
            server.transport.abort()  # kept the message, the client never hears so
        return f"250 Ok {reply_id}" if reply_id else "250 2.0.0 OK: queued"

    async def handle_exception(self, error: Exception) -> str:
        # A client refusing the throwaway certificate is a case tests provoke: no traceback.
        if isinstance(error, TLSSetupException):
            return "454 4.7.0 TLS not available due to handshake failure"
        _log.exception("SMTPSink: error while handling a command")
        return f"500 5.0.0 Error: ({type(error).__name__}) {error}"


class _QuietSession(Session):
    """aiosmtpd's Session without the deprecation log line it writes on every AUTH."""

    @property
    def login_data(self) -> Any:
        return self._login_data

    @login_data.setter
    def login_data(self, value: Any) -> None:
        self._login_data = value


class _SinkSMTP(SMTP):
    """aiosmtpd's SMTP, quiet, and able to require AUTH over plain text without warning.

    aiosmtpd warns when ``auth_required`` is set without ``auth_require_tls``; on a test
    server bound to 127.0.0.1 that combination is deliberate, and the warning would
    fail every test under ``filterwarnings = error``.
    """

    def __init__(
        self,
        handler: Any,
        *,
        open_connections: set[_SinkSMTP],
        auth_required: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, auth_required=False, **kwargs)
        self._auth_required = auth_required
        self.open_connections = open_connections
        self.socket_transport: asyncio.BaseTransport | None = None

    def _create_session(self) -> Session:
        return _QuietSession(self.loop)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Called again with the TLS transport after STARTTLS; keep the socket's own.
        sink = self.event_handler._sink
        limit = sink.max_connections
        if self.socket_transport is None and limit is not None:
            if len(self.open_connections) >= limit:  # as Postfix past its per-client limit
                with sink._lock:
                    sink.refused_connections += 1
                assert isinstance(transport, asyncio.WriteTransport)
                transport.write(b"421 4.7.0 Too many connections, try again later\r\n")
                transport.close()
                return
        if self.socket_transport is None:
            self.socket_transport = transport
            self.open_connections.add(self)
            with sink._lock:
                sink.connections += 1
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        self.open_connections.discard(self)
        super().connection_lost(error)


class _SinkController(Controller):
    """aiosmtpd's threaded Controller that also drops open connections on :meth:`stop`.

    aiosmtpd's own ``stop`` cancels the connection tasks but leaves their sockets open,
    which a real outage would not do and which ends in ``ResourceWarning``.
    """

    def __init__(self, handler: Any, **kwargs: Any) -> None:
        self._smtp_auth_required = bool(kwargs.pop("auth_required", False))
        self._open_connections: set[_SinkSMTP] = set()
        super().__init__(handler, **kwargs)

    def factory(self) -> SMTP:
        return _SinkSMTP(
            self.handler,
            open_connections=self._open_connections,
            auth_required=self._smtp_auth_required,
            **self.SMTP_kwargs,
        )

    async def _abort_connections(self) -> None:
        for connection in list(self._open_connections):
            transport = connection.socket_transport
            if isinstance(transport, asyncio.Transport):
                transport.abort()
        for _ in range(100):
            if not self._open_connections:
                return
            await asyncio.sleep(0.001)

    def stop(self, no_assert: bool = False) -> None:
        if self._thread is not None and self.loop.is_running():
            asyncio.run_coroutine_threadsafe(self._abort_connections(), self.loop).result(5.0)
        super().stop(no_assert)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def _write_self_signed_certificate(directory: str) -> tuple[str, str]:
    """Write ``cert.pem`` and ``key.pem`` for localhost/127.0.0.1; return their paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    public_key = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    cert_path = os.path.join(directory, "cert.pem")
    key_path = os.path.join(directory, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(certificate.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return cert_path, key_path


class SMTPSink:
    """A real SMTP server on ``host:port`` that keeps what it receives.

    :param host: the address to listen on.
    :param port: the port; ``0`` picks a free one now, kept across :meth:`stop` and
        :meth:`start`.
    :param delay: seconds to wait before answering each DATA command (settable later).
    :param tls: offer STARTTLS with a throwaway self-signed certificate and require it
        before any mail command; clients trust it through :attr:`ssl_context` (or
        :attr:`cert_path`, a PEM file usable as a CA bundle).
    :param auth: ``(user, password)``: require AUTH PLAIN or LOGIN with that pair.

    :attr:`connections` counts the connections clients opened. :attr:`max_connections`
    answers a connection beyond that many open with 421 (counted in
    :attr:`refused_connections`); :attr:`rate_limit` ``(count, seconds)`` answers a recipient
    beyond ``count`` in the last ``seconds`` with 450 (counted in :attr:`rate_refusals`).
    :attr:`reply_with_id` answers each message with ``250 Ok <id>``, a new id each time
    (kept as :attr:`ReceivedMail.reply_id`), as providers give their id for the message;
    off, the answer is ``250 2.0.0 OK: queued``, which holds no id.
    """

    #: The aiosmtpd handler class; a benchmark's sink swaps in one that keeps nothing.
    handler_class: type[Any] = _Handler

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        delay: float = 0.0,
        tls: bool = False,
        auth: tuple[str, str] | None = None,
    ) -> None:
        self.host = host
        self.connections = 0
        self.max_connections: int | None = None
        self.refused_connections = 0
        self.rate_limit: tuple[int, float] | None = None
        self.rate_refusals = 0
        self.reply_with_id = False
        self._accepted_at: list[float] = []
        self._refusals: list[int] = []
        self.port = port or _free_port(host)
        self.delay = delay
        self.auth = auth
        self.messages: list[ReceivedMail] = []
        self._lock = threading.Lock()
        self._failures: list[int] = []
        self._drops = 0
        self._controller: _SinkController | None = None
        self.ssl_context: ssl.SSLContext | None = None
        self.cert_path: str | None = None
        self._server_tls_context: ssl.SSLContext | None = None
        if tls:
            directory = tempfile.mkdtemp(prefix="smtp-sink-")
            weakref.finalize(self, shutil.rmtree, directory, ignore_errors=True)
            cert_path, key_path = _write_self_signed_certificate(directory)
            server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            server_context.load_cert_chain(cert_path, key_path)
            self._server_tls_context = server_context
            self.ssl_context = ssl.create_default_context(cafile=cert_path)
            self.cert_path = cert_path

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<SMTPSink {self.host}:{self.port} {state}, {len(self.messages)} messages>"

    @property
    def running(self) -> bool:
        return self._controller is not None

    def start(self) -> None:
        """Start listening (again, on the same port). Does nothing if already running."""
        if self._controller is not None:
            return
        kwargs: dict[str, Any] = {
            "hostname": self.host,
            "port": self.port,
            "server_hostname": "localhost",
            "ready_timeout": 10.0,
        }
        if self._server_tls_context is not None:
            kwargs["tls_context"] = self._server_tls_context
            kwargs["require_starttls"] = True
        if self.auth is not None:
            kwargs["auth_required"] = True
            kwargs["auth_require_tls"] = self._server_tls_context is not None
            kwargs["authenticator"] = self._authenticate
        # A fresh controller each time: aiosmtpd closes its event loop on stop().
        controller = _SinkController(self.handler_class(self), **kwargs)
        controller.start()
        self._controller = controller

    def stop(self) -> None:
        """Stop listening and drop open connections. Does nothing if already stopped."""
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    def __enter__(self) -> SMTPSink:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[ReceivedMail]:
        """Wait until at least ``count`` messages arrived; return a copy of them all."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                received = list(self.messages)
            if len(received) >= count:
                return received
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"SMTPSink on {self.host}:{self.port} received {len(received)} "
                    f"message(s) within {timeout:g} s, expected at least {count}"
                )
            time.sleep(0.01)

    def clear(self) -> None:
        """Forget the received messages."""
        with self._lock:
            self.messages.clear()

    def fail_next(self, count: int, code: int = 451) -> None:
        """Answer the next ``count`` DATA commands with ``code`` (4xx: retry, 5xx: give up)."""
        if not 400 <= code <= 599:
            raise ValueError(f"fail_next needs a 4xx or 5xx code, got {code}")
        with self._lock:
            self._failures.extend([code] * count)

    def refuse_recipient_next(self, count: int, code: int = 550) -> None:
        """Answer the next ``count`` RCPT commands with ``code`` (4xx or 5xx)."""
        if not 400 <= code <= 599:
            raise ValueError(f"refuse_recipient_next needs a 4xx or 5xx code, got {code}")
        with self._lock:
            self._refusals.extend([code] * count)

    def _within_rate(self) -> bool:
        """Count one recipient against :attr:`rate_limit`; whether it fits."""
        with self._lock:
            if self.rate_limit is None:
                return True
            count, seconds = self.rate_limit
            now = time.monotonic()
            self._accepted_at = [t for t in self._accepted_at if t > now - seconds]
            if len(self._accepted_at) >= count:
                self.rate_refusals += 1
                return False
            self._accepted_at.append(now)
            return True

    def _take_refusal(self) -> int | None:
        with self._lock:
            return self._refusals.pop(0) if self._refusals else None

    def drop_after_data_next(self, count: int) -> None:
        """Keep the next ``count`` messages but drop the connection instead of answering
        (the client cannot tell whether they were delivered)."""
        with self._lock:
            self._drops += count

    def _take_drop(self) -> bool:
        with self._lock:
            if self._drops:
                self._drops -= 1
                return True
            return False

    def _take_failure(self) -> int | None:
        with self._lock:
            return self._failures.pop(0) if self._failures else None

    def _store(self, mail: ReceivedMail) -> None:
        with self._lock:
            self.messages.append(mail)

    def _authenticate(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        mechanism: str,
        auth_data: Any,
    ) -> AuthResult:
        assert self.auth is not None
        if isinstance(auth_data, LoginPassword):
            user, password = self.auth
            if auth_data.login == user.encode() and auth_data.password == password.encode():
                return AuthResult(success=True)
        return AuthResult(success=False, handled=False)
