"""The remote transport: the app asks a mailer service over HTTP to send each email.

An app sends through it with ``ConfirmMail(..., transport=RemoteTransport())``; its
settings are read from ``app.config`` (:class:`RemoteSettings`) unless given here.

Wire ``v1`` (the default) talks to this package's mailer
(:mod:`flask_confirm_mail.mailer`): ``POST <mailer_url>v1/messages`` with a v1 wrapping
token in ``Authorization: Bearer``. Wire ``variance`` makes the original Variance
client's call, ``GET <mailer_url><blueprint>/<service>/<token>`` with the original
payload, so an app can keep using an already deployed original mailer (or this
package's mailer with ``MAILER_LEGACY_ENDPOINTS=1``).

HTTP goes through one :mod:`urllib3` pool per transport and process (thread-safe; up to
``pool_size`` kept-alive connections, for parallel delivery), with a connect and a read
timeout on every call, and through a proxy where the environment names one, as
``requests`` does: ``HTTPS_PROXY`` / ``HTTP_PROXY`` by the mailer URL's scheme, unless
``NO_PROXY`` lists the host (:func:`urllib.request.getproxies` and
:func:`urllib.request.proxy_bypass`). Any answer other than success raises
:class:`~flask_confirm_mail.errors.DeliveryError`: ``permanent`` for a refusal that a
retry cannot fix (4xx except 408, 409, 425 and 429; the original's error 1), temporary
otherwise, so the outbox retries.
"""

from __future__ import annotations

import hmac
import json
import os
import re
import ssl
import threading
import urllib.request
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit

import urllib3
from flask import Flask
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    MaxRetryError,
    ProxyError,
    ReadTimeoutError,
    SSLError,
)

from ..errors import ConfigurationError, DeliveryError, TokenError
from ..outbox import Purpose
from ..settings import Option, OptionSet, Settings, number, optional_secret, text
from ..tokens import MIN_SECRET_BYTES
from ..transport import ConfirmationEmail, SMTPTransport, Transport
from .wire import (
    EXTRA_FIELDS,
    TEMPLATES,
    ErrorCode,
    is_loopback_host,
    issue_legacy_token,
    issue_wrapping_token,
)

#: The User-Agent of requests to the mailer.
USER_AGENT = "flask-confirm-mail"
#: The wire formats :class:`RemoteTransport` speaks.
WIRES = ("v1", "variance")
#: Statuses that say "try again later" although they are 4xx.
_TEMPORARY_4XX = frozenset({408, 409, 425, 429})
_MAX_ANSWER_BYTES = 64 * 1024
_BLUEPRINT = re.compile(r"[A-Za-z0-9_.~-]+(?:/[A-Za-z0-9_.~-]+)*")
_SAFE_MSG = re.compile(r"[^\w .,:;()'/-]")
#: One new connection when a kept-alive one fails (the server closed it while idle);
#: the mailer's replay store makes sending the same token twice safe. No redirects.
_RETRIES = urllib3.Retry(total=1, connect=1, read=0, status=0, other=0, redirect=False)


#: The mailer's template for each purpose it writes; a reminder is one more confirmation
#: email, so the signup template writes it.
_TEMPLATE_OF: dict[str, str] = {
    Purpose.SIGNUP: "signup",
    Purpose.CHANGE: "change",
    Purpose.REMINDER: "signup",
}


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value


class RemoteSettings(OptionSet):
    """The remote transport's keys (``CONFIRM_MAIL_MAILER_URL`` and the others below);
    arguments of :class:`RemoteTransport` win over them."""

    mailer_url = Option(
        None, text, "The mailer service's base URL, https (http only for a loopback host)."
    )
    mailer_secret = Option(
        None,
        optional_secret,
        "Key that signs wrapping tokens for the mailer (its `JWT_MAILER_SECRET`), at least "
        "32 bytes, different from the link secret.",
    )
    mailer_wire = Option(
        "v1",
        text,
        "`v1` (POST /v1/messages, token in the Authorization header) "
        "or `variance` (the original mailer's GET calls).",
    )
    mailer_blueprint = Option(
        "emailservice-cat", text, "URL part of the original mailer (`variance` wire)."
    )
    mailer_connect_timeout = Option(5.0, number(0.001), "Seconds to connect to the mailer.")
    mailer_read_timeout = Option(15.0, number(0.001), "Seconds to wait for the mailer's answer.")


class RemoteTransport(Transport):
    """Delivers through a mailer service.

    :param mailer_url: the mailer's base URL, e.g. ``https://mailer.example/``; https, or
        http for a loopback host (see ``allow_insecure_http``).
    :param mailer_secret: the mailer's ``JWT_MAILER_SECRET``, at least 32 bytes; it must
        differ from the link secret (the extension checks that).
    :param wire: ``"v1"`` or ``"variance"`` (the original client's call).
    :param legacy_blueprint: the original mailer's path part, ``variance`` wire only.
    :param connect_timeout: seconds to open the connection.
    :param read_timeout: seconds to wait for each answer.
    :param extra: values every email shows (``app_name``, ``user_name``, ``access_key``);
        a message's own ``context`` wins.
    :param ssl_context: for https, e.g. to trust a private CA; default: the system's.
    :param allow_insecure_http: allow ``http://`` to a host that is not loopback (only on
        a network you trust: the token carries the link token).
    :param pool_size: connections kept alive to the mailer, for as many parallel sends;
        default: the app's ``CONFIRM_MAIL_CONCURRENCY``.
    :param linkless: the transport of emails without a link (the change notice), which
        the mailer's wire does not carry; default: SMTP through the app's ``MAIL_*``
        settings when ``CONFIRM_MAIL_CHANGE_NOTICE`` is on.
    :raises ConfigurationError: an option is missing or unsafe (at ``init_app`` for
        what the app's config gives).
    """

    def __init__(
        self,
        *,
        mailer_url: str | None = None,
        mailer_secret: bytes | str | None = None,
        wire: str | None = None,
        legacy_blueprint: str | None = None,
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
        extra: Mapping[str, Any] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        allow_insecure_http: bool = False,
        pool_size: int | None = None,
        linkless: Transport | None = None,
    ) -> None:
        self._given: dict[str, Any] = {
            "mailer_url": mailer_url,
            "mailer_secret": mailer_secret,
            "mailer_wire": wire,
            "mailer_blueprint": legacy_blueprint,
            "mailer_connect_timeout": connect_timeout,
            "mailer_read_timeout": read_timeout,
        }
        self.extra = dict(extra or {})
        self.ssl_context = ssl_context
        self.allow_insecure_http = allow_insecure_http
        self.pool_size = pool_size
        self.linkless = linkless
        self._http: urllib3.PoolManager | None = None
        self._http_pid = 0
        self._lock = threading.Lock()
        if mailer_url is not None and mailer_secret is not None:
            self._configure(RemoteSettings({}), None)

    def init_app(self, app: Flask) -> None:
        """Read the unset options from ``app.config`` and check them all."""
        settings = RemoteSettings.load(app)
        core = Settings.load(app)
        self._configure(settings, core)
        self.extra.setdefault("app_name", core.app_name)
        if any(hmac.compare_digest(self._secret, key) for key in core.secret):
            raise ConfigurationError(
                "CONFIRM_MAIL_MAILER_SECRET must differ from the link secret (CONFIRM_MAIL_SECRET)."
            )
        if self.linkless is None and core.change_notice:
            self.linkless = SMTPTransport(core)
            self.linkless.init_app(app)

    def _configure(self, settings: RemoteSettings, core: Settings | None) -> None:
        def given(key: str) -> Any:
            value = self._given[key]
            return vars(settings).get(key) if value is None else value

        mailer_url, mailer_secret = given("mailer_url"), given("mailer_secret")
        if not mailer_url or mailer_secret is None:
            raise ConfigurationError(
                "The remote transport needs CONFIRM_MAIL_MAILER_URL and "
                "CONFIRM_MAIL_MAILER_SECRET (or its mailer_url and mailer_secret)."
            )
        if isinstance(mailer_secret, str):
            mailer_secret = mailer_secret.encode()
        wire = _or(given("mailer_wire"), "v1")
        legacy_blueprint = _or(given("mailer_blueprint"), "emailservice-cat")
        connect_timeout = _or(given("mailer_connect_timeout"), 5.0)
        read_timeout = _or(given("mailer_read_timeout"), 15.0)
        pool_size = self.pool_size or (core.concurrency if core is not None else 4)
        allow_insecure_http = self.allow_insecure_http
        if wire not in WIRES:
            raise ConfigurationError(f"The mailer wire must be one of: {', '.join(WIRES)}.")
        if len(mailer_secret) < MIN_SECRET_BYTES:
            raise ConfigurationError(
                f"The mailer secret must be at least {MIN_SECRET_BYTES} bytes long."
            )
        blueprint = legacy_blueprint.strip("/")
        if _BLUEPRINT.fullmatch(blueprint) is None or {".", ".."} & set(blueprint.split("/")):
            raise ConfigurationError("The mailer blueprint must be a plain URL path part.")
        if not 1 <= pool_size <= 256:
            raise ConfigurationError("The mailer pool size must be 1 to 256.")
        if not (connect_timeout > 0 and read_timeout > 0):
            raise ConfigurationError("The mailer timeouts must be more than 0 seconds.")
        parts = urlsplit(mailer_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigurationError("The mailer URL must be an absolute http(s) URL.")
        if parts.username or parts.password or parts.query or parts.fragment:
            raise ConfigurationError(
                "The mailer URL must not hold user information, a query or a fragment."
            )
        if parts.scheme == "http" and not (allow_insecure_http or is_loopback_host(parts.hostname)):
            raise ConfigurationError(
                "The mailer URL must use https (http only for a loopback host): "
                "the mailer call carries the link token."
            )
        try:
            port = parts.port
        except ValueError:
            raise ConfigurationError("The mailer URL's port is not valid.") from None
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = port
        #: The base path, always ending in ``/`` (the original's ``MAILER_URL`` did).
        self.base_path = parts.path if parts.path.endswith("/") else parts.path + "/"
        self.wire = wire
        self.legacy_blueprint = blueprint
        self.connect_timeout = float(connect_timeout)
        self.read_timeout = float(read_timeout)
        self.pool_size = pool_size
        self._secret = bytes(mailer_secret)
        self._origin = f"{parts.scheme}://{parts.netloc}"

    def __repr__(self) -> str:
        return f"<RemoteTransport {self.wire} {self.scheme}://{self.host}{self.base_path}>"

    def build_request(self, email: ConfirmationEmail) -> tuple[str, str, dict[str, str]]:
        """The method, path and headers of the call that sends ``email`` (in its locale).

        :raises DeliveryError: (permanent) the message cannot be expressed on this wire.
        """
        template = _TEMPLATE_OF.get(email.purpose)
        if template not in TEMPLATES:
            raise DeliveryError("The mailer has no template for this purpose", permanent=True)
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        context = {**self.extra, **dict(email.context)}
        try:
            if self.wire == "v1":
                token = issue_wrapping_token(
                    self._secret,
                    recipient=email.recipient,
                    template=template,
                    link_url=email.link,
                    link_token=email.link_token,
                    extra={k: context[k] for k in EXTRA_FIELDS if isinstance(context.get(k), str)},
                    code=email.code,
                    locale=email.locale,
                )
                headers["Authorization"] = f"Bearer {token}"
                headers["Content-Length"] = "0"
                return "POST", f"{self.base_path}v1/messages", headers
            access_key = context.get("access_key")
            token = issue_legacy_token(
                self._secret,
                user_email=email.recipient,
                access_key="" if access_key is None else str(access_key),
                link_prefix=email.link_prefix,
                link_token=email.link_token,
                code=email.code,
                locale=email.locale,
            )
        except (TokenError, ValueError):
            raise DeliveryError(
                "The message's values cannot be sent to the mailer", permanent=True
            ) from None
        path = f"{self.base_path}{self.legacy_blueprint}/{template}/{quote(token, safe='')}"
        return "GET", path, headers

    def send(self, email: ConfirmationEmail) -> None:
        """Ask the mailer to send ``email``; raise :class:`DeliveryError` unless it did.

        An email without a link (the change notice) goes through ``linkless`` instead:
        the mailer writes only to the address a link was made for.
        """
        if email.purpose == Purpose.CHANGE_NOTICE:
            if self.linkless is None:
                raise DeliveryError("The mailer sends no email without a link", permanent=True)
            self.linkless.send(email)
            return
        method, path, headers = self.build_request(email)
        status, body = self._exchange(method, path, headers)
        _check_answer(status, body, self.wire)

    def close(self) -> None:
        """Close the kept-alive HTTP connections."""
        if self.linkless is not None:
            self.linkless.close()
        with self._lock:
            http, self._http = self._http, None
        if http is not None:
            http.clear()

    @property
    def proxy_url(self) -> str | None:
        """The proxy the environment names for the mailer URL, ``None`` for none."""
        if urllib.request.proxy_bypass(self.host):
            return None
        return urllib.request.getproxies().get(self.scheme)

    def _client(self) -> urllib3.PoolManager:
        """This process's pool (a forked child builds its own: sockets are not shared)."""
        with self._lock:
            if self._http is None or self._http_pid != os.getpid():
                options: dict[str, Any] = {
                    "maxsize": self.pool_size,
                    "block": False,
                    "timeout": urllib3.Timeout(
                        connect=self.connect_timeout, read=self.read_timeout
                    ),
                    "retries": _RETRIES,
                    "headers": {"User-Agent": USER_AGENT},
                }
                if self.scheme == "https":
                    options["ssl_context"] = self.ssl_context or ssl.create_default_context()
                proxy = self.proxy_url
                self._http = (
                    urllib3.ProxyManager(proxy, **options)
                    if proxy
                    else urllib3.PoolManager(num_pools=2, **options)
                )
                self._http_pid = os.getpid()
            return self._http

    def _exchange(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
        try:
            response = self._client().request(
                method, self._origin + path, headers=headers, preload_content=False
            )
            try:
                body = response.read(_MAX_ANSWER_BYTES + 1)
            except HTTPError:
                response.close()
                raise
        except MaxRetryError as exc:
            raise _delivery_error(exc.reason) from None
        except (HTTPError, OSError) as exc:
            raise _delivery_error(exc) from None
        if len(body) > _MAX_ANSWER_BYTES:
            response.close()  # the rest is unread: the connection is not reused
        else:
            response.release_conn()
        return response.status, body[:_MAX_ANSWER_BYTES]


def _delivery_error(exc: Exception | None) -> DeliveryError:
    """What a failed call to the mailer tells the outbox (temporary), without secrets."""
    if isinstance(exc, ConnectTimeoutError | ReadTimeoutError | TimeoutError):
        return DeliveryError("The mailer did not answer in time")
    if isinstance(exc, ProxyError):
        return DeliveryError("The proxy to the mailer could not be reached")
    if isinstance(exc, SSLError) and "CERTIFICATE_VERIFY_FAILED" in str(exc):
        return DeliveryError("The mailer's certificate is not trusted")
    name = type(exc).__name__ if exc is not None else "no answer"
    return DeliveryError(f"The mailer could not be reached ({name})")


def _check_answer(status: int, body: bytes, wire: str) -> None:
    """Return if the mailer sent the email; otherwise raise :class:`DeliveryError`."""
    try:
        data = json.loads(body) if body else None
    except ValueError:
        data = None
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, bool) or not isinstance(error, int):
        error = None
    msg = data.get("msg") if isinstance(data, dict) else None
    detail = f" (error {error})" if error is not None else ""
    if isinstance(msg, str) and msg and "eyJ" not in msg:
        detail += f": {_SAFE_MSG.sub('', msg)[:160]}"
    if 200 <= status < 300:
        if error == ErrorCode.OK:
            return
        # The original answers 200 for everything: 1 is a token it cannot read, 2 SMTP.
        permanent = wire == "variance" and error == ErrorCode.BAD_TOKEN
        raise DeliveryError(f"The mailer did not send the email{detail}", permanent=permanent)
    permanent = 400 <= status < 500 and status not in _TEMPORARY_4XX
    raise DeliveryError(f"The mailer answered HTTP {status}{detail}", permanent=permanent)
