"""Test keys and signed calls of each provider's webhook, in the shape its docs show.

Postmark: basic auth. Mailgun: HMAC-SHA256 of timestamp + token. SendGrid: ECDSA P-256
over timestamp + body. SES: an SNS message signed (SHA256withRSA for version 2,
SHA1withRSA for version 1) with a throwaway certificate the test's fetch serves.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

POSTMARK_AUTH = ("postmark", "hook-password-for-tests")
MAILGUN_KEY = "mailgun-signing-key-for-tests"
TOPIC_ARN = "arn:aws:sns:eu-west-1:123456789012:ses-bounces"
CERT_URL = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0123456789.pem"
SUBSCRIBE_URL = (
    "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn="
    + TOPIC_ARN
    + "&Token=2336412f37"
)
PROVIDERS = ("postmark", "mailgun", "sendgrid", "ses")


def _sendgrid_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _sns_certificate() -> tuple[rsa.RSAPrivateKey, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return key, cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class Keys:
    """One test run's keys, and what its SNS fetch was asked for."""

    sendgrid: ec.EllipticCurvePrivateKey = field(default_factory=_sendgrid_key)
    sns: tuple[rsa.RSAPrivateKey, bytes] = field(default_factory=_sns_certificate)
    fetched: list[str] = field(default_factory=list)

    def config(self) -> dict[str, Any]:
        public = self.sendgrid.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return {
            "CONFIRM_MAIL_POSTMARK_WEBHOOK_AUTH": ":".join(POSTMARK_AUTH),
            "CONFIRM_MAIL_MAILGUN_SIGNING_KEY": MAILGUN_KEY,
            "CONFIRM_MAIL_SENDGRID_WEBHOOK_PUBLIC_KEY": base64.b64encode(public).decode(),
            "CONFIRM_MAIL_SES_TOPIC_ARNS": [TOPIC_ARN],
        }

    def fetch(self, url: str) -> bytes:
        self.fetched.append(url)
        if url == CERT_URL:
            return self.sns[1]
        return b"<ConfirmSubscriptionResponse/>"


@dataclass
class Call:
    """One webhook call: its body and headers."""

    body: bytes
    headers: dict[str, str]


def _basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}", "Content-Type": "application/json"}


# --- bodies of each provider's documented shape -------------------------------------------


def postmark_body(message_id: str, kind: str, soft: bool = False) -> dict[str, Any]:
    if kind == "complaint":
        return {
            "RecordType": "SpamComplaint",
            "ID": 42,
            "Type": "SpamComplaint",
            "TypeCode": 512,
            "MessageID": "00000000-0000-0000-0000-000000000000",
            "Email": "someone-else@example.net",
            "Description": "The subscriber explicitly marked this message as spam.",
            "Content": f"Message-ID: {message_id}\r\nSubject: Confirm\r\n\r\n",
        }
    return {
        "RecordType": "Bounce",
        "ID": 4323372036854775807,
        "Type": "Transient" if soft else "HardBounce",
        "TypeCode": 2 if soft else 1,
        "Name": "Hard bounce",
        "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
        "ServerID": 23,
        "MessageStream": "outbound",
        "Description": "The server was unable to deliver your message (ex: unknown user).",
        "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
        "Email": "someone-else@example.net",
        "From": "noreply@app.example.com",
        "BouncedAt": "2026-12-03T07:00:00Z",
        "DumpAvailable": True,
        "Inactive": True,
        "CanActivate": True,
        "Subject": "Confirm your email address",
        "Content": f"Return-Path: <>\r\nMessage-ID: {message_id}\r\nSubject: Confirm\r\n\r\n",
    }


def mailgun_event(message_id: str, kind: str, soft: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": secrets.token_hex(8),
        "timestamp": time.time(),
        "recipient": "someone-else@example.net",
        "message": {"headers": {"message-id": message_id.strip("<>"), "to": "x@example.net"}},
    }
    if kind == "complaint":
        data["event"] = "complained"
    else:
        data.update(
            event="failed",
            severity="temporary" if soft else "permanent",
            reason="bounce" if not soft else "generic",
            **{
                "delivery-status": {
                    "code": 452 if soft else 550,
                    "message": "5.1.1 The email account does not exist",
                    "description": "No such mailbox",
                }
            },
        )
    return data


def sendgrid_events(message_id: str, kind: str, soft: bool = False) -> list[dict[str, Any]]:
    event: dict[str, Any] = {
        "email": "someone-else@example.net",
        "timestamp": int(time.time()),
        "smtp-id": message_id,
        "sg_event_id": secrets.token_hex(8),
        "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
    }
    if kind == "complaint":
        event["event"] = "spamreport"
    else:
        event.update(
            event="bounce",
            type="blocked" if soft else "bounce",
            reason="500 unknown recipient",
            status="5.0.0",
        )
    return [{"email": "other@example.net", "event": "processed", "smtp-id": "<x@y>"}, event]


def ses_notification(message_id: str, kind: str, soft: bool = False) -> dict[str, Any]:
    mail = {
        "timestamp": "2026-12-03T07:00:00.000Z",
        "source": "noreply@app.example.com",
        "messageId": "0100018c2f3a-ses-own-id-000000",
        "destination": ["someone-else@example.net"],
        "headersTruncated": False,
        "headers": [
            {"name": "From", "value": "noreply@app.example.com"},
            {"name": "Message-ID", "value": message_id},
        ],
        "commonHeaders": {"messageId": message_id, "subject": "Confirm your email address"},
    }
    if kind == "complaint":
        return {
            "notificationType": "Complaint",
            "complaint": {
                "complainedRecipients": [{"emailAddress": "someone-else@example.net"}],
                "complaintFeedbackType": "abuse",
                "timestamp": "2026-12-03T07:00:01.000Z",
                "feedbackId": "0100018c-feedback",
            },
            "mail": mail,
        }
    return {
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": "Transient" if soft else "Permanent",
            "bounceSubType": "General",
            "bouncedRecipients": [
                {
                    "emailAddress": "someone-else@example.net",
                    "action": "failed",
                    "status": "5.1.1",
                    "diagnosticCode": "smtp; 550 5.1.1 user unknown",
                }
            ],
            "timestamp": "2026-12-03T07:00:01.000Z",
            "feedbackId": "0100018c-feedback",
        },
        "mail": mail,
    }


def without_headers_call(keys: Keys, provider: str, provider_id: str, kind: str) -> Call:
    """A genuine call of ``provider`` whose event names the message by the provider's own
    id only (none when ``provider_id`` is ""): SES's default notification (no "Include
    original headers": no ``headers`` nor ``commonHeaders``), Postmark's webhook without
    "Include bounce content", a SendGrid event without ``smtp-id``."""
    if provider == "postmark":
        body = postmark_body("", kind)
        del body["Content"]
        body["MessageID"] = provider_id
        return postmark_call(body)
    if provider == "sendgrid":
        events = sendgrid_events("", kind)
        del events[-1]["smtp-id"]
        if provider_id:
            events[-1]["sg_message_id"] = f"{provider_id}.filter0001.16648.5515E0B88.0"
        else:
            del events[-1]["sg_message_id"]
        return sendgrid_call(keys, json.dumps(events).encode())
    notification = ses_notification("", kind)
    mail = notification["mail"]
    for name in ("headersTruncated", "headers", "commonHeaders"):
        del mail[name]
    mail.update(
        messageId=provider_id,
        sourceArn="arn:aws:ses:eu-west-1:123456789012:identity/app.example.com",
        sendingAccountId="123456789012",
    )
    return ses_call(keys, notification)


# --- signing ------------------------------------------------------------------------------


def postmark_call(body: Any, auth: tuple[str, str] = POSTMARK_AUTH) -> Call:
    return Call(json.dumps(body).encode(), _basic(*auth))


def mailgun_call(event: Any, key: str = MAILGUN_KEY, timestamp: int | None = None) -> Call:
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    token = secrets.token_hex(25)
    signature = hmac.new(key.encode(), (stamp + token).encode(), hashlib.sha256).hexdigest()
    body = {"signature": {"timestamp": stamp, "token": token, "signature": signature}}
    body["event-data"] = event
    return Call(json.dumps(body).encode(), {"Content-Type": "application/json"})


def sendgrid_call(keys: Keys, raw: bytes, timestamp: int | None = None) -> Call:
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    signature = keys.sendgrid.sign(stamp.encode() + raw, ec.ECDSA(hashes.SHA256()))
    return Call(
        raw,
        {
            "Content-Type": "application/json",
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
        },
    )


SNS_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}


def sns_message(
    keys: Keys,
    message_type: str,
    *,
    message: str,
    version: str = "2",
    topic: str = TOPIC_ARN,
    cert_url: str = CERT_URL,
) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "Type": message_type,
        "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
        "TopicArn": topic,
        "Message": message,
        "Timestamp": "2026-12-03T07:00:02.000Z",
        "SignatureVersion": version,
        "SigningCertURL": cert_url,
    }
    if message_type == "SubscriptionConfirmation":
        fields.update(Token="2336412f37", SubscribeURL=SUBSCRIBE_URL)
    else:
        fields["UnsubscribeURL"] = "https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe"
    text = "".join(
        f"{name}\n{fields[name]}\n" for name in SNS_FIELDS[message_type] if name in fields
    )
    digest = hashes.SHA256() if version == "2" else hashes.SHA1()
    signature = keys.sns[0].sign(text.encode(), padding.PKCS1v15(), digest)
    fields["Signature"] = base64.b64encode(signature).decode()
    return fields


def ses_call(keys: Keys, notification: Any, **options: Any) -> Call:
    message = sns_message(keys, "Notification", message=json.dumps(notification), **options)
    return Call(json.dumps(message).encode(), {"Content-Type": "text/plain; charset=UTF-8"})


def signed_call(keys: Keys, provider: str, message_id: str, kind: str, soft: bool = False) -> Call:
    """A genuine call of ``provider`` for a ``kind`` event of the message ``message_id``."""
    if provider == "postmark":
        return postmark_call(postmark_body(message_id, kind, soft))
    if provider == "mailgun":
        return mailgun_call(mailgun_event(message_id, kind, soft))
    if provider == "sendgrid":
        return sendgrid_call(keys, json.dumps(sendgrid_events(message_id, kind, soft)).encode())
    return ses_call(keys, ses_notification(message_id, kind, soft))


def forged_call(keys: Keys, provider: str, message_id: str) -> Call:
    """A call of ``provider``'s shape whose credential or signature is wrong."""
    if provider == "postmark":
        return postmark_call(postmark_body(message_id, "bounce"), ("postmark", "guessed"))
    if provider == "mailgun":
        return mailgun_call(mailgun_event(message_id, "bounce"), key="not-the-key")
    if provider == "sendgrid":
        genuine = sendgrid_call(keys, json.dumps(sendgrid_events(message_id, "bounce")).encode())
        tampered = genuine.body.replace(b"500 unknown", b"501 unknown")
        return Call(tampered, genuine.headers)
    genuine = ses_call(keys, ses_notification(message_id, "bounce"))
    message = json.loads(genuine.body)
    message["Message"] = message["Message"].replace("Permanent", "Permanent ")
    return Call(json.dumps(message).encode(), genuine.headers)
