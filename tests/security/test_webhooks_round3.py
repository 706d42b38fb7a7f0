"""Security round 3, family 3 (webhooks) and the bounces command of family 5.

A Mailgun token is accepted once, across processes; no credential-less call is a 500; a
complaint outlives a delivery; SES certificates come only from SNS's own host; and no
provider's reason text carries terminal escapes into a mark or onto the terminal.

Each test runs on SQLite and PostgreSQL (``make_app``). The tests of each finding fail on
the code before its fix (the replay applied, the calls answered 500, the complaint was
cleared, S3 hosts were fetched from, the escapes were stored and printed); the controls
beside them (a bounce still cleared by a delivery, SNS's own hosts still accepted, a
clean Message-ID still applied) pass on both.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import unicodedata
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
import time_machine
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from flask import Flask

from flask_confirm_mail import confirmation_bounced, outbox
from flask_confirm_mail.bounces import records_of
from tests.bounces.conftest import mark_of, outbox_rows
from tests.bounces.providers import (
    CERT_URL,
    MAILGUN_KEY,
    PROVIDERS,
    Call,
    Keys,
    mailgun_call,
    mailgun_event,
    postmark_body,
    postmark_call,
    sendgrid_call,
    sendgrid_events,
    ses_call,
    ses_notification,
    signed_call,
    sns_message,
)
from tests.support.smtp_server import SMTPSink

VICTIM = "victim@example.org"
KINDS = ("bounce", "complaint")  # an events row of another kind is a spent token
ESCAPES = "\x1b[2J\x1b]0;owned\x07\x9b31m\u202e\x00\r\nX-Injected: 1\x85\u2028\x7f"


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


def _hooked(app: Flask, keys: Keys, smtp_server: SMTPSink, address: str = VICTIM) -> str:
    """Sign ``address`` up on ``app`` (webhooks on); the Message-ID of its email."""
    keys.fetched.clear()
    app.extensions["confirm_mail_webhooks"].sns.fetch = keys.fetch
    before = len(smtp_server.messages)
    assert app.test_client().post("/signup", data={"email": address}).status_code == 201
    smtp_server.wait_for(before + 1)
    return str(outbox_rows(app)[-1].message_id)


@pytest.fixture
def hooked(make_app: Callable[..., Flask], smtp_server: SMTPSink, keys: Keys) -> tuple[Flask, str]:
    """An app with every provider's webhook on, and the Message-ID of the victim's email."""
    app = make_app(config=keys.config())
    return app, _hooked(app, keys, smtp_server)


def post(app: Flask, provider: str, call: Call) -> Any:
    return app.test_client().post(
        f"/confirm/webhooks/{provider}", data=call.body, headers=call.headers
    )


def _with_event(call: Call, event: dict[str, Any]) -> Call:
    """``call`` with its signature kept and its ``event-data`` replaced."""
    body = json.loads(call.body)
    body["event-data"] = event
    return Call(json.dumps(body).encode(), call.headers)


def _unprintable(text: str) -> list[str]:
    return [ch for ch in text if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp")]


# --- a Mailgun token is single-use ---------------------------------------------------------


def test_a_captured_mailgun_call_reposted_with_another_body_is_refused(
    hooked: tuple[Flask, str],
) -> None:
    app, message_id = hooked
    captured = mailgun_call(mailgun_event(message_id, "bounce", soft=True))
    first = post(app, "mailgun", captured)
    assert first.status_code == 200 and first.get_json()["applied"] == 0, "a soft bounce"
    forged = _with_event(captured, mailgun_event(message_id, "bounce"))
    response = post(app, "mailgun", forged)
    assert response.status_code == 401, response.get_json()
    assert response.get_json()["error"] == "unauthorized"
    assert mark_of(app, VICTIM) is None
    assert post(app, "mailgun", captured).status_code == 401, "the very same call again"
    fresh = post(app, "mailgun", mailgun_call(mailgun_event(message_id, "bounce")))
    assert fresh.status_code == 200 and fresh.get_json()["applied"] == 1, "a new token"


def test_a_mailgun_token_is_refused_by_every_process_of_the_app(
    build_app: Callable[..., Flask], database_url: str, smtp_server: SMTPSink, keys: Keys
) -> None:
    """Two apps on one database stand for two processes: the token is kept in it."""
    one = build_app(database_url, config=keys.config())
    other = build_app(database_url, config=keys.config())
    message_id = _hooked(one, keys, smtp_server)
    captured = mailgun_call({"event": "delivered", "message": {"headers": {}}})
    assert post(one, "mailgun", captured).status_code == 200
    forged = _with_event(captured, mailgun_event(message_id, "complaint"))
    assert post(other, "mailgun", forged).status_code == 401
    assert mark_of(other, VICTIM) is None


def test_a_mailgun_body_refused_as_malformed_still_spends_its_token(
    hooked: tuple[Flask, str],
) -> None:
    app, message_id = hooked
    captured = mailgun_call({"event": "failed", "severity": "permanent", "message": None})
    assert post(app, "mailgun", captured).status_code == 400
    forged = _with_event(captured, mailgun_event(message_id, "bounce"))
    assert post(app, "mailgun", forged).status_code == 401
    assert mark_of(app, VICTIM) is None


def test_spent_mailgun_tokens_are_forgotten_once_they_could_not_be_fresh(
    hooked: tuple[Flask, str],
) -> None:
    app, message_id = hooked
    records = records_of(app)
    assert records is not None
    events = records.events

    def tokens() -> int:
        with app.app_context(), records.db.engine.connect() as conn:
            query = sa.select(sa.func.count()).where(events.c.kind.not_in(KINDS))
            return int(conn.execute(query).scalar_one())

    with time_machine.travel(time.time(), tick=False) as clock:
        assert (
            post(app, "mailgun", mailgun_call(mailgun_event(message_id, "bounce"))).status_code
            == 200
        )
        assert tokens() == 1
        clock.shift(300)  # the default maximum age: a token stamped ahead may still be fresh
        assert post(app, "mailgun", mailgun_call({"event": "opened"})).status_code == 200
        assert tokens() == 2
        clock.shift(301)
        assert post(app, "mailgun", mailgun_call({"event": "opened"})).status_code == 200
        assert tokens() == 2, "the first token is gone, the second is kept"
    with app.app_context(), records.db.engine.connect() as conn:
        applied = conn.execute(sa.select(events.c.kind).where(events.c.kind.in_(KINDS)))
        assert [row.kind for row in applied] == ["bounce"], "applied events are kept"


# --- no 500 without a credential ------------------------------------------------------------


@pytest.mark.parametrize("signature", ["é" * 64, "\u0663" * 64, "ff" * 31 + "\u00ff\u00ff"])
def test_a_non_ascii_mailgun_signature_is_401(hooked: tuple[Flask, str], signature: str) -> None:
    app, message_id = hooked
    call = mailgun_call(mailgun_event(message_id, "bounce"))
    body = json.loads(call.body)
    body["signature"]["signature"] = signature
    response = post(app, "mailgun", Call(json.dumps(body).encode(), call.headers))
    assert response.status_code == 401 and response.is_json
    assert mark_of(app, VICTIM) is None


@pytest.mark.parametrize(
    "authorization",
    ["Basic \xff\xfe", "Basic " + base64.b64encode(b"postmark:\xff").decode(), "Basic \u00e9"],
)
def test_a_postmark_credential_that_is_not_base64_of_utf8_is_401(
    hooked: tuple[Flask, str], authorization: str
) -> None:
    app, message_id = hooked
    call = postmark_call(postmark_body(message_id, "bounce"))
    headers = {**call.headers, "Authorization": authorization}
    response = post(app, "postmark", Call(call.body, headers))
    assert response.status_code == 401 and response.is_json
    assert mark_of(app, VICTIM) is None


@pytest.mark.parametrize("timestamp", ["9" * 400, "-" + "9" * 400])
def test_a_signed_timestamp_too_large_for_a_float_is_401(
    hooked: tuple[Flask, str], timestamp: str
) -> None:
    app, message_id = hooked
    call = mailgun_call(mailgun_event(message_id, "bounce"))
    body = json.loads(call.body)
    token = body["signature"]["token"]
    body["signature"]["timestamp"] = timestamp
    body["signature"]["signature"] = hmac.new(
        MAILGUN_KEY.encode(), (timestamp + token).encode(), hashlib.sha256
    ).hexdigest()
    response = post(app, "mailgun", Call(json.dumps(body).encode(), call.headers))
    assert response.status_code == 401 and response.is_json
    assert mark_of(app, VICTIM) is None


BAD_PORTS = [
    "https://sns.eu-west-1.amazonaws.com:99999/SimpleNotificationService-1.pem",
    "https://sns.eu-west-1.amazonaws.com:443x/SimpleNotificationService-1.pem",
    "https://sns.eu-west-1.amazonaws.com:-1/SimpleNotificationService-1.pem",
    "https://sns.eu-west-1.amazonaws.com:8443/SimpleNotificationService-1.pem",
]


@pytest.mark.parametrize("cert_url", BAD_PORTS)
def test_an_ses_signing_cert_url_with_a_bad_port_is_401(
    hooked: tuple[Flask, str], keys: Keys, cert_url: str
) -> None:
    app, message_id = hooked
    call = ses_call(keys, ses_notification(message_id, "bounce"), cert_url=cert_url)
    response = post(app, "ses", call)
    assert response.status_code == 401 and response.is_json
    assert keys.fetched == []
    assert mark_of(app, VICTIM) is None


@pytest.mark.parametrize("subscribe_url", BAD_PORTS[:3])
def test_an_sns_subscribe_url_with_a_bad_port_is_400(
    hooked: tuple[Flask, str], keys: Keys, subscribe_url: str
) -> None:
    """The SubscriptionConfirmation is genuinely signed: only its URL is unusable."""
    app, _ = hooked
    message = sns_message(keys, "SubscriptionConfirmation", message="You have chosen")
    message["SubscribeURL"] = subscribe_url
    resigned = _resign(keys, message)
    response = post(app, "ses", Call(json.dumps(resigned).encode(), {}))
    assert response.status_code == 400 and response.is_json
    assert keys.fetched == [CERT_URL], "the subscription URL was not fetched"


def _resign(keys: Keys, message: dict[str, Any]) -> dict[str, Any]:
    fields = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")
    text = "".join(f"{name}\n{message[name]}\n" for name in fields)
    signature = keys.sns[0].sign(text.encode(), padding.PKCS1v15(), hashes.SHA256())
    return {**message, "Signature": base64.b64encode(signature).decode()}


def _call_naming(keys: Keys, provider: str, message_id: str) -> Call:
    """A genuine call of ``provider`` whose Message-ID is ``message_id`` as given."""
    if provider == "postmark":
        return postmark_call(postmark_body(message_id, "bounce"))
    if provider == "mailgun":
        event = mailgun_event("<x@y>", "bounce")
        event["message"]["headers"]["message-id"] = message_id
        return mailgun_call(event)
    if provider == "sendgrid":
        return sendgrid_call(keys, json.dumps(sendgrid_events(message_id, "bounce")).encode())
    return ses_call(keys, ses_notification(message_id, "bounce"))


@pytest.mark.parametrize("control", ["\x00", "\x1b", "\x7f", "\x85", "\x9b"])
@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_control_character_in_a_message_id_is_400(
    hooked: tuple[Flask, str], keys: Keys, provider: str, control: str
) -> None:
    """PostgreSQL refuses a NUL in any query: before the fix that was a 500 there."""
    app, message_id = hooked
    tampered = message_id.replace("@", f"{control}@")
    response = post(app, provider, _call_naming(keys, provider, tampered))
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.get_json()["error"] == "bad_request"
    assert mark_of(app, VICTIM) is None
    control_call = post(app, provider, _call_naming(keys, provider, message_id))
    assert control_call.status_code == 200 and control_call.get_json()["applied"] == 1


# --- a complaint outlives a delivery ---------------------------------------------------------


def _send(app: Flask, address: str) -> None:
    result = app.test_cli_runner().invoke(args=["confirm-mail", "send", address])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_delivery_does_not_clear_a_complaint(
    hooked: tuple[Flask, str], keys: Keys, smtp_server: SMTPSink, provider: str
) -> None:
    app, message_id = hooked
    assert (
        post(app, provider, signed_call(keys, provider, message_id, "complaint")).status_code == 200
    )
    _send(app, VICTIM)
    smtp_server.wait_for(2)  # delivered: the delivery signal was sent
    mark = mark_of(app, VICTIM)
    assert mark is not None and mark.kind == "complaint"


def test_a_later_bounce_does_not_turn_a_complaint_into_a_bounce(
    hooked: tuple[Flask, str], keys: Keys, smtp_server: SMTPSink
) -> None:
    app, message_id = hooked
    assert post(app, "ses", signed_call(keys, "ses", message_id, "complaint")).status_code == 200
    smtp_server.fail_next(1, 550)
    _send(app, VICTIM)
    assert outbox_rows(app)[-1].status == outbox.DEAD, "refused for good"
    _send(app, VICTIM)
    smtp_server.wait_for(2)
    mark = mark_of(app, VICTIM)
    assert mark is not None and mark.kind == "complaint"


def test_a_delivery_still_clears_a_bounce(
    hooked: tuple[Flask, str], keys: Keys, smtp_server: SMTPSink
) -> None:
    app, message_id = hooked
    assert post(app, "ses", signed_call(keys, "ses", message_id, "bounce")).status_code == 200
    _send(app, VICTIM)
    smtp_server.wait_for(2)
    assert mark_of(app, VICTIM) is None


# --- SES certificates only from SNS's own host ------------------------------------------------


@pytest.fixture
def serving_any_url(keys: Keys) -> Callable[[str], bytes]:
    """A fetch that serves the test certificate from any URL, recording each."""

    def fetch(url: str) -> bytes:
        keys.fetched.append(url)
        return keys.sns[1]

    return fetch


@pytest.mark.parametrize(
    "host",
    [
        "sns.s3.amazonaws.com",  # S3's host of a bucket named "sns"
        "sns.s3-eu-west-1.amazonaws.com",
        "sns.s3-accelerate.amazonaws.com",
        "sns.s3.amazonaws.com.cn",
        "sns.eu.amazonaws.com",
        "sns.a.amazonaws.com",
        "sns..amazonaws.com",
        "sns.eu_west_1.amazonaws.com",
        "sns.eu-west-1.amazonaws.co",
        "sns.eu-west-1.amazonaws.com.evil",
        "sns.eu-west-1.amazonaws.com.cn.evil",
        "x.sns.eu-west-1.amazonaws.com",
        "sqs.eu-west-1.amazonaws.com",
    ],
)
def test_ses_fetches_no_certificate_from_a_host_aws_would_refuse(
    hooked: tuple[Flask, str], keys: Keys, serving_any_url: Callable[[str], bytes], host: str
) -> None:
    app, message_id = hooked
    app.extensions["confirm_mail_webhooks"].sns.fetch = serving_any_url
    cert_url = f"https://{host}/SimpleNotificationService-0123456789.pem"
    response = post(
        app, "ses", ses_call(keys, ses_notification(message_id, "bounce"), cert_url=cert_url)
    )
    assert response.status_code == 401
    assert keys.fetched == [], "nothing fetched from a host that is not SNS's"
    assert mark_of(app, VICTIM) is None


@pytest.mark.parametrize(
    "host",
    [
        "sns.eu-west-1.amazonaws.com",
        "sns.eu-west-1.amazonaws.com:443",
        "sns.cn-north-1.amazonaws.com.cn",
        "sns.us-gov-west-1.amazonaws.com",
        "SNS.EU-WEST-1.AMAZONAWS.COM",
    ],
)
def test_ses_fetches_certificates_from_sns_hosts(
    hooked: tuple[Flask, str], keys: Keys, serving_any_url: Callable[[str], bytes], host: str
) -> None:
    """The control: SNS's own hosts (any region, China's, port 443 spelled out) pass."""
    app, message_id = hooked
    app.extensions["confirm_mail_webhooks"].sns.fetch = serving_any_url
    cert_url = f"https://{host}/SimpleNotificationService-0123456789.pem"
    response = post(
        app, "ses", ses_call(keys, ses_notification(message_id, "bounce"), cert_url=cert_url)
    )
    assert response.status_code == 200 and response.get_json()["applied"] == 1
    assert keys.fetched == [cert_url]


# --- reasons are stored and printed as plain text ---------------------------------------------


def _call_with_reason(keys: Keys, provider: str, message_id: str, reason: str) -> Call:
    if provider == "postmark":
        body = postmark_body(message_id, "bounce")
        body["Description"] = reason
        return postmark_call(body)
    if provider == "mailgun":
        event = mailgun_event(message_id, "bounce")
        event["delivery-status"]["description"] = reason
        return mailgun_call(event)
    if provider == "sendgrid":
        batch = sendgrid_events(message_id, "bounce")
        batch[-1]["reason"] = reason
        return sendgrid_call(keys, json.dumps(batch).encode())
    notification = ses_notification(message_id, "bounce")
    notification["bounce"]["bouncedRecipients"][0]["diagnosticCode"] = reason
    return ses_call(keys, notification)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_providers_reason_is_stored_without_control_characters(
    hooked: tuple[Flask, str], keys: Keys, provider: str
) -> None:
    """A NUL in the reason was also a 500 on PostgreSQL."""
    app, message_id = hooked
    signals: list[dict[str, Any]] = []

    def receive(sender: Flask, **kwargs: Any) -> None:
        signals.append(kwargs)

    reason = f"550 user {ESCAPES} unknown"
    with confirmation_bounced.connected_to(receive, sender=app):
        response = post(app, provider, _call_with_reason(keys, provider, message_id, reason))
    assert response.status_code == 200 and response.get_json()["applied"] == 1
    mark = mark_of(app, VICTIM)
    assert mark is not None
    assert _unprintable(mark.reason) == [], repr(mark.reason)
    assert "550 user [2J ]0;owned 31m X-Injected: 1 unknown" in mark.reason
    assert [_unprintable(s["reason"]) for s in signals] == [[]]


def test_the_bounces_command_prints_no_escape_sequences(hooked: tuple[Flask, str]) -> None:
    """A row written by anything (here straight into the table) is cleaned when printed."""
    app, _ = hooked
    records = records_of(app)
    assert records is not None
    with app.app_context(), records.db.engine.begin() as conn:
        conn.execute(
            sa.insert(records.marks).values(
                address=VICTIM,
                kind="bounce",
                reason=f"550 {ESCAPES.replace(chr(0), '')} gone",
                source="mailgun\x1b[8m",
                message_id=None,
                marked_at=outbox.utcnow(),
            )
        )
    result = app.test_cli_runner().invoke(args=["confirm-mail", "bounces"])
    assert result.exit_code == 0, result.output
    [line] = result.output.splitlines()
    assert _unprintable(line) == [], repr(line)
    assert line.startswith(f"{VICTIM}: bounce from mailgun [8m, ")
    assert line.endswith("UTC: 550 [2J ]0;owned 31m X-Injected: 1 gone")
