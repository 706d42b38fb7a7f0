"""Provider webhooks: ``POST <prefix>/webhooks/<provider>`` turns bounce and complaint events
into marks (:mod:`flask_confirm_mail.bounces`).

Each provider's call is authenticated the way that provider documents it:

- ``postmark``: HTTP basic auth (``CONFIRM_MAIL_POSTMARK_WEBHOOK_AUTH``);
- ``mailgun``: HMAC-SHA256 of timestamp and token with the signing key
  (``CONFIRM_MAIL_MAILGUN_SIGNING_KEY``); the signature covers no part of the body, so
  each token is accepted once (remembered in the database for twice the maximum age);
- ``sendgrid``: the signed event webhook, ECDSA over timestamp and body
  (``CONFIRM_MAIL_SENDGRID_WEBHOOK_PUBLIC_KEY``);
- ``ses``: Amazon SES notifications through SNS, the SNS message signature (versions 1
  and 2) checked with the certificate at ``SigningCertURL``, fetched only from
  ``https://sns.<region>.amazonaws.com/`` by the host rule of AWS's own SDKs
  (``CONFIRM_MAIL_SES_TOPIC_ARNS`` names the accepted topics; a
  ``SubscriptionConfirmation`` is confirmed).

A provider is off (404) until its setting is set. A bad credential or signature is a
401, a body that is not the provider's documented shape a 400 (so is a message id holding
a control character); nothing becomes a 500.
Events are matched to the outbox row by Message-ID or, when the payload carries none that
matches, by the provider's own id for the message (SES's ``mail.messageId``, Postmark's
``MessageID``, SendGrid's ``sg_message_id`` up to its first "."), which its SMTP server
gave in the reply to the message and the outbox row keeps. Each is applied once
(:meth:`~flask_confirm_mail.bounces.records.BounceRecords.apply`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.parser import HeaderParser
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Flask, Request, current_app, jsonify, request
from sqlalchemy.exc import DBAPIError
from werkzeug.exceptions import HTTPException

from ..errors import ConfigurationError, ConfirmMailError, is_database_fault
from ..responses import RETRY_AFTER_OUTAGE, bound_stream, load_json
from ..settings import Option, OptionSet, duration, text
from .records import (
    BOUNCE,
    COMPLAINT,
    BounceRecords,
    bare_message_id,
    has_control_characters,
)


class WebhookError(ConfirmMailError):
    """A provider's webhook call was refused; the message is public (no secret in it)."""


class WebhookAuthError(WebhookError):
    """The call's credentials or signature are missing or wrong (answered 401)."""


class WebhookPayloadError(WebhookError):
    """The call's body is not an event of the provider's documented shape (answered 400)."""


EXTENSION_KEY = "confirm_mail_webhooks"
PROVIDERS = ("postmark", "mailgun", "sendgrid", "ses")
#: Largest body accepted (SendGrid batches events; SES notifications are a few kB).
MAX_BODY_BYTES = 1024 * 1024
#: ``SigningCertURL`` and ``SubscribeURL`` must be on SNS's own host: the rule of AWS's
#: SDKs (a region label of three or more characters, so ``sns.s3.amazonaws.com``, S3's
#: host for a bucket named ``sns``, is not one).
SNS_HOST = re.compile(r"sns\.[a-z0-9-]{3,}\.amazonaws\.com(\.cn)?")
#: S3 also serves a bucket ``sns`` at ``sns.s3-<region>.amazonaws.com`` and
#: ``sns.s3-accelerate.amazonaws.com``, which the rule above lets through; no SNS region
#: starts so.
S3_LABEL = "s3"
SENDGRID_SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
SENDGRID_TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"
POSTMARK_BOUNCE_TYPES = frozenset({"HardBounce", "BadEmailAddress", "ManuallyDeactivated"})
#: ``fetch(url) -> bytes``: how the SNS certificate and subscription URLs are fetched.
Fetch = Callable[[str], bytes]

logger = logging.getLogger("flask_confirm_mail")
webhooks_blueprint = Blueprint("confirm_mail_webhooks", __name__)


def _basic_auth(value: Any, key: str, app: Flask) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or ":" not in value or not value.partition(":")[2]:
        raise ConfigurationError(f"{key} must be 'user:password'.")
    return value


def _strings(value: Any, key: str, app: Flask) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not all(isinstance(item, str) and item for item in value or ()):
        raise ConfigurationError(f"{key} must be a list of strings.")
    return tuple(value or ())


class WebhookSettings(OptionSet):
    """The providers' webhook settings (``CONFIRM_MAIL_*`` keys of the bounces part)."""

    postmark_webhook_auth = Option(
        None,
        _basic_auth,
        "`user:password` that Postmark's bounce webhook sends (basic auth in its URL). "
        "Unset: no Postmark webhook.",
    )
    mailgun_signing_key = Option(
        None,
        text,
        "Mailgun's HTTP webhook signing key (HMAC of timestamp and token). "
        "Unset: no Mailgun webhook.",
    )
    sendgrid_webhook_public_key = Option(
        None,
        text,
        "SendGrid's signed event webhook verification key (base64 ECDSA public key). "
        "Unset: no SendGrid webhook.",
    )
    ses_topic_arns = Option(
        (),
        _strings,
        "ARNs of the SNS topics whose Amazon SES bounce and complaint notifications are "
        "accepted. Empty: no SES webhook.",
    )
    webhook_max_age = Option(
        300,
        duration(),
        "Seconds a signed Mailgun or SendGrid webhook call stays acceptable (replay window).",
    )

    @property
    def any_provider(self) -> bool:
        """Whether any provider's webhook is configured."""
        return bool(
            self.postmark_webhook_auth
            or self.mailgun_signing_key
            or self.sendgrid_webhook_public_key
            or self.ses_topic_arns
        )


@dataclass(frozen=True)
class BounceEvent:
    """One provider event to apply: the Message-ID it names ("" for none), its kind and
    reason, and the provider's own id for the message ("" for none)."""

    message_id: str
    kind: str
    reason: str
    provider_id: str = ""


# --- small readers of untrusted JSON ----------------------------------------------------------


def _json(body: bytes | str) -> Any:
    try:
        return load_json(body)
    except ValueError:
        raise WebhookPayloadError("The body is not JSON.") from None


def _field(obj: Any, *path: str) -> Any:
    """``obj[path[0]][path[1]]...``, or ``None`` where a step is missing or not an object."""
    for name in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(name)
    return obj


def _text(obj: Any, *path: str) -> str:
    value = _field(obj, *path)
    return value if isinstance(value, str) else ""


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise WebhookPayloadError(f"The body is not {what}.")
    return value


def _fresh(timestamp: str, settings: WebhookSettings) -> None:
    try:
        age = abs(time.time() - int(timestamp))
    except (ValueError, OverflowError):
        raise WebhookAuthError("The signature's timestamp is not a number.") from None
    if age > settings.webhook_max_age.total_seconds():
        raise WebhookAuthError("The signature is too old.")


# --- Postmark ---------------------------------------------------------------------------------


def postmark_events(req: Request, settings: WebhookSettings) -> list[BounceEvent]:
    """Postmark's bounce and spam-complaint webhooks, behind HTTP basic auth.

    The message's own Message-ID is read from the bounce's ``Content`` when the webhook
    includes it; Postmark's ``MessageID``, its own id, finds the message without it.
    """
    expected = settings.postmark_webhook_auth
    assert expected is not None
    try:
        auth = req.authorization
    except ValueError:  # werkzeug refuses a credential that is not base64 of UTF-8 text
        auth = None
    given = f"{auth.username}:{auth.password}" if auth and auth.type == "basic" else ""
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise WebhookAuthError("Wrong or missing credentials.")
    body = _object(_json(req.get_data()), "a Postmark record")
    record = _text(body, "RecordType")
    if not record:
        raise WebhookPayloadError("The body is not a Postmark record.")
    if record == "SpamComplaint":
        kind = COMPLAINT
    elif record == "Bounce" and _text(body, "Type") in POSTMARK_BOUNCE_TYPES:
        kind = BOUNCE
    else:
        return []
    message_id = str(HeaderParser().parsestr(_text(body, "Content")).get("Message-ID") or "")
    provider_id = _text(body, "MessageID")
    if not (message_id or provider_id):
        raise WebhookPayloadError("The record names no message.")
    reason = _text(body, "Description") or _text(body, "Type") or record
    reason = f"Postmark {_text(body, 'Type')}: {reason}"
    return [BounceEvent(message_id, kind, reason, provider_id)]


# --- Mailgun ----------------------------------------------------------------------------------


def mailgun_signed(req: Request, settings: WebhookSettings) -> tuple[dict[str, Any], str]:
    """A Mailgun call whose signature is right and fresh: its body, and its token.

    The signature covers the timestamp and token only, not the event: the caller must
    accept each token once (:meth:`~flask_confirm_mail.bounces.records.BounceRecords.spend_token`).
    """
    key = settings.mailgun_signing_key
    assert key is not None
    body = _object(_json(req.get_data()), "a Mailgun event")
    signature = _object(body.get("signature"), "a signed Mailgun event")
    timestamp, token = _text(signature, "timestamp"), _text(signature, "token")
    expected = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256)
    given = _text(signature, "signature").encode()  # compare_digest refuses non-ASCII str
    if not hmac.compare_digest(expected.hexdigest().encode(), given):
        raise WebhookAuthError("Wrong signature.")
    _fresh(timestamp, settings)
    return body, token


def mailgun_events(body: dict[str, Any]) -> list[BounceEvent]:
    """Mailgun's event webhooks (``failed`` with ``severity: permanent``, ``complained``),
    from a body :func:`mailgun_signed` checked."""
    data = _object(body.get("event-data"), "a Mailgun event")
    event = _text(data, "event")
    if event == "complained":
        kind = COMPLAINT
    elif event == "failed" and _text(data, "severity") == "permanent":
        kind = BOUNCE
    else:
        return []
    message_id = _text(data, "message", "headers", "message-id")
    if not message_id:
        raise WebhookPayloadError("The event names no message.")
    code = _field(data, "delivery-status", "code")
    detail = _text(data, "delivery-status", "description") or _text(data, "reason")
    return [BounceEvent(message_id, kind, f"Mailgun {event} {code or ''}: {detail}".strip())]


# --- SendGrid ---------------------------------------------------------------------------------


def _sendgrid_key(text: str) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        if "BEGIN PUBLIC KEY" in text:
            key = serialization.load_pem_public_key(text.encode())
        else:
            key = serialization.load_der_public_key(base64.b64decode(text))
    except (ValueError, binascii.Error):
        raise ConfigurationError(
            "CONFIRM_MAIL_SENDGRID_WEBHOOK_PUBLIC_KEY is not a base64 ECDSA public key."
        ) from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ConfigurationError("CONFIRM_MAIL_SENDGRID_WEBHOOK_PUBLIC_KEY is not an ECDSA key.")
    return key


def sendgrid_events(req: Request, settings: WebhookSettings, public_key: Any) -> list[BounceEvent]:
    """SendGrid's signed event webhook: ``bounce`` (not ``blocked``) and ``spamreport``."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    timestamp = req.headers.get(SENDGRID_TIMESTAMP, "")
    body = req.get_data()
    try:
        signature = base64.b64decode(req.headers.get(SENDGRID_SIGNATURE, ""), validate=True)
        public_key.verify(signature, timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError, binascii.Error):
        raise WebhookAuthError("Wrong or missing signature.") from None
    _fresh(timestamp, settings)
    batch = _json(body)
    if not isinstance(batch, list):
        raise WebhookPayloadError("The body is not a list of SendGrid events.")
    events = []
    for item in batch:
        event = _text(item, "event")
        if event == "spamreport":
            kind = COMPLAINT
        elif event == "bounce" and _text(item, "type") != "blocked":
            kind = BOUNCE
        else:
            continue
        # sg_message_id is "<the id SendGrid's SMTP reply gave>.filter...". An event naming
        # neither id is kept: it counts as unknown, as any event that matches no message.
        provider_id = _text(item, "sg_message_id").partition(".")[0]
        reason = f"SendGrid {event}: {_text(item, 'reason') or _text(item, 'status')}"
        events.append(BounceEvent(_text(item, "smtp-id"), kind, reason, provider_id))
    return events


# --- Amazon SES through SNS -------------------------------------------------------------------

_SIGNED_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type",
    ),
}  # fmt: skip
_SIGNED_FIELDS["UnsubscribeConfirmation"] = _SIGNED_FIELDS["SubscriptionConfirmation"]


def sns_signed_text(message: dict[str, Any]) -> bytes:
    """The text SNS signs: ``name\\nvalue\\n`` for each signed field present, in order."""
    kind = _text(message, "Type")
    fields = _SIGNED_FIELDS.get(kind)
    if fields is None:
        raise WebhookPayloadError("The body is not an SNS message.")
    parts = []
    for name in fields:
        value = message.get(name)
        if value is None and name == "Subject":
            continue
        if not isinstance(value, str):
            raise WebhookPayloadError("The SNS message lacks a signed field.")
        parts.append(f"{name}\n{value}\n")
    return "".join(parts).encode()


def is_sns_url(url: str) -> bool:
    """Whether ``url`` is an ``https`` URL on SNS's own host (``sns.<region>.amazonaws.com``
    or ``.amazonaws.com.cn``), on port 443."""
    try:
        parts = urlsplit(url)
        port = parts.port  # parsed here: a port out of range or not a number raises
    except ValueError:
        return False
    host = parts.hostname or ""
    return (
        parts.scheme == "https"
        and port in (None, 443)
        and parts.username is None
        and parts.password is None
        and SNS_HOST.fullmatch(host) is not None
        and not host.split(".")[1].startswith(S3_LABEL)
    )


def fetch_url(url: str) -> bytes:
    """GET ``url`` with urllib3 (certificates verified, no redirect, short timeouts)."""
    import urllib3

    try:
        response = _pool().request(
            "GET",
            url,
            timeout=urllib3.Timeout(connect=5.0, read=10.0),
            retries=False,
            redirect=False,
        )
    except urllib3.exceptions.HTTPError as exc:
        raise WebhookError(f"Fetching from SNS failed ({type(exc).__name__})") from None
    if response.status != 200:
        raise WebhookError(f"SNS answered HTTP {response.status}")
    return bytes(response.data[:MAX_BODY_BYTES])


_pools: list[Any] = []


def _pool() -> Any:
    import urllib3

    if not _pools:
        _pools.append(urllib3.PoolManager(num_pools=4))
    return _pools[0]


class SNSVerifier:
    """Checks SNS message signatures; the certificate fetch is :attr:`fetch` (tests swap it).

    :param topic_arns: the topics whose messages are accepted.
    :param fetch: ``fetch(url) -> bytes``; default :func:`fetch_url`.
    """

    def __init__(self, topic_arns: tuple[str, ...], fetch: Fetch = fetch_url) -> None:
        self.topic_arns = frozenset(topic_arns)
        self.fetch = fetch
        self._certificates: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _public_key(self, url: str) -> Any:
        from cryptography import x509

        with self._lock:
            key = self._certificates.get(url)
        if key is None:
            try:
                key = x509.load_pem_x509_certificate(self.fetch(url)).public_key()
            except ValueError:
                raise WebhookAuthError("The signing certificate is not a certificate.") from None
            with self._lock:
                if len(self._certificates) >= 16:
                    self._certificates.clear()
                self._certificates[url] = key
        return key

    def verify(self, message: dict[str, Any]) -> None:
        """Raise :class:`WebhookAuthError` unless SNS signed it."""
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding, rsa

        text = sns_signed_text(message)
        if _text(message, "TopicArn") not in self.topic_arns:
            raise WebhookAuthError("The SNS topic is not accepted.")
        url = _text(message, "SigningCertURL")
        if not is_sns_url(url) or not urlsplit(url).path.endswith(".pem"):
            raise WebhookAuthError("The signing certificate is not on SNS's host.")
        version = _text(message, "SignatureVersion")
        digest = {"1": hashes.SHA1(), "2": hashes.SHA256()}.get(version)
        if digest is None:
            raise WebhookAuthError("Unknown SNS signature version.")
        key = self._public_key(url)
        if not isinstance(key, rsa.RSAPublicKey):
            raise WebhookAuthError("The signing certificate has no RSA key.")
        try:
            signature = base64.b64decode(_text(message, "Signature"), validate=True)
            key.verify(signature, text, padding.PKCS1v15(), digest)
        except (InvalidSignature, ValueError, binascii.Error):
            raise WebhookAuthError("Wrong SNS signature.") from None


def _ses_message_id(mail: Any) -> str:
    for header in _field(mail, "headers") or ():
        if _text(header, "name").lower() == "message-id":
            return _text(header, "value")
    return _text(mail, "commonHeaders", "messageId")


def ses_events(req: Request, verifier: SNSVerifier) -> list[BounceEvent]:
    """SES bounce (``Permanent``) and complaint notifications, delivered by SNS."""
    message = _object(_json(req.get_data()), "an SNS message")
    verifier.verify(message)
    kind = _text(message, "Type")
    if kind == "SubscriptionConfirmation":
        url = _text(message, "SubscribeURL")
        if not is_sns_url(url):
            raise WebhookPayloadError("The subscription URL is not on SNS's host.")
        verifier.fetch(url)
        logger.info("Confirmed the SNS subscription to %s", _text(message, "TopicArn"))
        return []
    if kind != "Notification":
        return []
    notification = _json(_text(message, "Message"))
    notification = _object(notification, "an SES notification")
    event = _text(notification, "notificationType") or _text(notification, "eventType")
    if event == "Bounce" and _text(notification, "bounce", "bounceType") == "Permanent":
        recipients = _field(notification, "bounce", "bouncedRecipients")
        first = recipients[0] if isinstance(recipients, list) and recipients else None
        detail = _text(first, "diagnosticCode") or _text(notification, "bounce", "bounceSubType")
        kind, reason = BOUNCE, f"SES bounce: {detail}"
    elif event == "Complaint":
        feedback = _text(notification, "complaint", "complaintFeedbackType")
        kind, reason = COMPLAINT, f"SES complaint: {feedback or 'reported'}"
    else:
        return []
    # Without "Include original headers" (SES's default) the notification has no headers,
    # but always SES's own id, the one its SMTP reply gave.
    mail = _field(notification, "mail")
    message_id, provider_id = _ses_message_id(mail), _text(mail, "messageId")
    if not (message_id or provider_id):
        raise WebhookPayloadError("The notification names no message.")
    return [BounceEvent(message_id, kind, reason, provider_id)]


# --- the receiver of one app, and the route ---------------------------------------------------


def _checked(events: list[BounceEvent]) -> list[BounceEvent]:
    """``events``, unless one names a Message-ID or provider id with a control character
    (no message has one, and PostgreSQL refuses a NUL in any query)."""
    for event in events:
        for value in (event.message_id, event.provider_id):
            if has_control_characters(bare_message_id(value)):
                raise WebhookPayloadError("A message id holds a control character.")
    return events


class WebhookReceiver:
    """The webhooks of one app, built by ``init_app`` (``app.extensions`` key
    ``confirm_mail_webhooks``); its :attr:`sns` verifier's ``fetch`` may be replaced.

    :raises ConfigurationError: a configured key cannot be used (or ``cryptography`` is
        missing for SendGrid or SES: install the ``webhooks`` extra).
    """

    def __init__(self, settings: WebhookSettings, records: BounceRecords) -> None:
        self.settings = settings
        self.records = records
        self.sendgrid_key: Any = None
        self.sns = SNSVerifier(settings.ses_topic_arns)
        if settings.sendgrid_webhook_public_key or settings.ses_topic_arns:
            try:
                import cryptography  # noqa: F401
            except ImportError:
                raise ConfigurationError(
                    "The SendGrid and SES webhooks need the cryptography package: "
                    "pip install 'flask-confirm-mail[webhooks]'."
                ) from None
        if settings.sendgrid_webhook_public_key:
            self.sendgrid_key = _sendgrid_key(settings.sendgrid_webhook_public_key)

    def enabled(self, provider: str) -> bool:
        """Whether ``provider``'s webhook is configured."""
        settings = self.settings
        return {
            "postmark": settings.postmark_webhook_auth is not None,
            "mailgun": bool(settings.mailgun_signing_key),
            "sendgrid": self.sendgrid_key is not None,
            "ses": bool(settings.ses_topic_arns),
        }.get(provider, False)

    def events(self, provider: str, req: Request) -> tuple[list[BounceEvent], str | None]:
        """The events of one call, and its single-use token (Mailgun's) or ``None``;
        raises a :class:`WebhookError`."""
        if provider == "postmark":
            return _checked(postmark_events(req, self.settings)), None
        if provider == "mailgun":
            body, token = mailgun_signed(req, self.settings)
            try:
                return _checked(mailgun_events(body)), token
            except WebhookPayloadError:
                with self.records.db.engine.begin() as conn:  # a refused body spends it too
                    self.records.spend_token(conn, token, provider)
                raise
        if provider == "sendgrid":
            return _checked(sendgrid_events(req, self.settings, self.sendgrid_key)), None
        return _checked(ses_events(req, self.sns)), None

    def receive(self, app: Flask, provider: str, req: Request) -> dict[str, int]:
        """Apply one call's events, all in one transaction with the spending of its token;
        how many were ``applied``, ``duplicate``, ``unknown``.

        :raises WebhookAuthError: the call's token was spent before (a replay).
        """
        events, token = self.events(provider, req)
        records = self.records
        if token is not None:
            # A token is accepted while its timestamp is within the maximum age either
            # side of now, so it is kept for twice that.
            with records.db.engine.begin() as conn:
                records.forget_tokens(conn, 2 * self.settings.webhook_max_age)
        with records.db.engine.begin() as conn:
            if token is not None and not records.spend_token(conn, token, provider):
                raise WebhookAuthError("The signature was used before.")
            results = []
            for event in events:
                results.append(
                    records.apply_in(
                        conn, message_id=event.message_id, kind=event.kind,
                        reason=event.reason, source=provider, provider_id=event.provider_id,
                    )
                )  # fmt: skip
        records.announce(app, results)
        counts = {"applied": 0, "duplicate": 0, "unknown": 0}
        for done in results:
            counts[done.outcome] += 1
        return counts


def install_webhooks(
    app: Flask, url_prefix: str, settings: WebhookSettings, records: BounceRecords
) -> WebhookReceiver:
    """Build ``app``'s receiver and mount the route at ``<url_prefix>/webhooks/<provider>``."""
    receiver = app.extensions[EXTENSION_KEY] = WebhookReceiver(settings, records)
    prefix = url_prefix.rstrip("/") + "/webhooks"
    app.register_blueprint(webhooks_blueprint, url_prefix=prefix)
    return receiver


def _error(status: int, error: str, message: str) -> Any:
    return jsonify(status="error", error=error, message=message), status


@webhooks_blueprint.errorhandler(HTTPException)
def _http_error(error: HTTPException) -> Any:
    return _error(error.code or 400, (error.name or "error").lower(), error.description or "")


@webhooks_blueprint.route("/<provider>", methods=["POST"])
def receive(provider: str) -> Any:
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    receiver: WebhookReceiver | None = app.extensions.get(EXTENSION_KEY)
    if receiver is None or not receiver.enabled(provider):
        return _error(404, "not_found", "No webhook is configured for this provider.")
    if (request.content_length or 0) > MAX_BODY_BYTES:
        return _error(413, "too_large", "The body is too large.")
    bound_stream(MAX_BODY_BYTES)
    try:
        counts = receiver.receive(app, provider, request)
    except WebhookAuthError as exc:
        logger.warning("Refused a %s webhook call: %s", provider, exc)
        return _error(401, "unauthorized", str(exc))
    except WebhookPayloadError as exc:
        logger.warning("Refused a %s webhook body: %s", provider, exc)
        return _error(400, "bad_request", str(exc))
    except WebhookError as exc:
        logger.warning("A %s webhook call could not be checked: %s", provider, exc)
        return _unavailable()
    except Exception as exc:
        if not is_database_fault(exc):
            raise
        cause = exc.orig if isinstance(exc, DBAPIError) else exc
        logger.warning("Database unavailable for a %s webhook (%s)", provider, type(cause).__name__)
        return _unavailable()
    return jsonify(status="ok", **counts)


def _unavailable() -> Any:
    """503 with ``Retry-After``, as the extension's pages answer an outage: providers retry
    (SES through SNS, SendGrid, Postmark and Mailgun all retry a 5xx)."""
    response, status = _error(503, "unavailable", "Try again later.")
    response.headers["Retry-After"] = str(RETRY_AFTER_OUTAGE)
    return response, status
