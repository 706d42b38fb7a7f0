"""``POST /confirm/webhooks/<provider>``: signed bounce and complaint events of Postmark,
Mailgun, SendGrid and SES (SNS), matched by Message-ID, applied once, never a 500."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from flask import Flask

from flask_confirm_mail.bounces.webhooks import WebhookError
from flask_confirm_mail.responses import RETRY_AFTER_OUTAGE
from tests.bounces.conftest import mark_of, outbox_rows
from tests.bounces.providers import (
    CERT_URL,
    PROVIDERS,
    SUBSCRIBE_URL,
    Call,
    Keys,
    forged_call,
    mailgun_call,
    mailgun_event,
    sendgrid_call,
    ses_call,
    ses_notification,
    signed_call,
    sns_message,
    without_headers_call,
)
from tests.support.smtp_server import SMTPSink

RECIPIENT = "ann@example.org"


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


@pytest.fixture
def hooked(make_app: Any, smtp_server: SMTPSink, keys: Keys) -> tuple[Flask, str]:
    """An app with every provider's webhook on, and the Message-ID of one sent email."""
    app = make_app(config=keys.config())
    keys.fetched.clear()
    app.extensions["confirm_mail_webhooks"].sns.fetch = keys.fetch
    client = app.test_client()
    assert client.post("/signup", data={"email": RECIPIENT}).status_code == 201
    smtp_server.wait_for(1)
    [row] = outbox_rows(app)
    return app, row.message_id


@pytest.fixture
def hooked_by_id(make_app: Any, smtp_server: SMTPSink, keys: Keys) -> tuple[Flask, str]:
    """As ``hooked``, the SMTP server answering with its own id for the email, as SES,
    SendGrid and Postmark do: the app, and that id."""
    smtp_server.reply_with_id = True
    app = make_app(config=keys.config())
    app.extensions["confirm_mail_webhooks"].sns.fetch = keys.fetch
    assert app.test_client().post("/signup", data={"email": RECIPIENT}).status_code == 201
    [mail] = smtp_server.wait_for(1)
    [row] = outbox_rows(app)
    assert row.provider_message_id == mail.reply_id
    return app, mail.reply_id


#: The providers whose SMTP reply gives their own id for the message.
REPLYING_PROVIDERS = ("ses", "postmark", "sendgrid")


def post(app: Flask, provider: str, call: Call) -> Any:
    return app.test_client().post(
        f"/confirm/webhooks/{provider}", data=call.body, headers=call.headers
    )


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_bounce_marks_the_messages_recipient_once(
    hooked: tuple[Flask, str], keys: Keys, provider: str, bounced_signals: list[Any]
) -> None:
    app, message_id = hooked
    call = signed_call(keys, provider, message_id, "bounce")
    first = post(app, provider, call)
    assert first.status_code == 200, first.get_json()
    assert first.get_json()["applied"] == 1
    again = post(app, provider, signed_call(keys, provider, message_id, "bounce"))
    assert again.status_code == 200
    assert again.get_json() == {"status": "ok", "applied": 0, "duplicate": 1, "unknown": 0}
    mark = mark_of(app, RECIPIENT)
    assert mark is not None and (mark.kind, mark.source) == ("bounce", provider)
    assert mark_of(app, "someone-else@example.net") is None, "only the outbox's recipient"
    assert [s["email"] for s in bounced_signals] == [RECIPIENT]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_complaint_marks_the_address_as_a_complaint(
    hooked: tuple[Flask, str], keys: Keys, provider: str
) -> None:
    app, message_id = hooked
    response = post(app, provider, signed_call(keys, provider, message_id, "complaint"))
    assert response.status_code == 200 and response.get_json()["applied"] == 1
    mark = mark_of(app, RECIPIENT)
    assert mark is not None and mark.kind == "complaint"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_soft_bounce_marks_nothing(hooked: tuple[Flask, str], keys: Keys, provider: str) -> None:
    app, message_id = hooked
    response = post(app, provider, signed_call(keys, provider, message_id, "bounce", soft=True))
    assert response.status_code == 200 and response.get_json()["applied"] == 0
    assert mark_of(app, RECIPIENT) is None


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_bad_signature_is_401_and_marks_nothing(
    hooked: tuple[Flask, str], keys: Keys, provider: str
) -> None:
    app, message_id = hooked
    response = post(app, provider, forged_call(keys, provider, message_id))
    assert response.status_code == 401
    assert response.get_json()["error"] == "unauthorized"
    assert mark_of(app, RECIPIENT) is None


@pytest.mark.parametrize("provider", PROVIDERS)
def test_an_event_of_an_unknown_message_is_acknowledged_and_ignored(
    hooked: tuple[Flask, str], keys: Keys, provider: str
) -> None:
    app, _ = hooked
    response = post(app, provider, signed_call(keys, provider, "<nope@elsewhere>", "bounce"))
    assert response.status_code == 200 and response.get_json()["unknown"] == 1
    assert mark_of(app, RECIPIENT) is None


def _bad_bodies(keys: Keys, provider: str) -> list[Call]:
    """Bodies that are not the provider's shape, each with valid credentials where the
    provider signs the raw body."""
    raws = [b"", b"not json", b"null", b"[]", b"{}", b"5", b'{"RecordType": []}']
    if provider == "postmark":
        from tests.bounces.providers import POSTMARK_AUTH, _basic

        return [Call(raw, _basic(*POSTMARK_AUTH)) for raw in raws]
    if provider == "sendgrid":
        return [sendgrid_call(keys, raw) for raw in raws if raw != b"[]"]  # [] is no event
    if provider == "mailgun":
        return [Call(raw, {}) for raw in raws] + [
            mailgun_call([]),
            mailgun_call({"event": "failed", "severity": "permanent", "message": None}),
        ]
    return [Call(raw, {}) for raw in raws] + [
        Call(json.dumps({"Type": "Notification", "Message": 5}).encode(), {}),
        ses_call(keys, "not an object"),
        ses_call(keys, {"notificationType": "Bounce", "bounce": {"bounceType": "Permanent"}}),
    ]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_bad_body_is_a_client_error_never_a_500(
    hooked: tuple[Flask, str], keys: Keys, provider: str
) -> None:
    app, _ = hooked
    for call in _bad_bodies(keys, provider):
        response = post(app, provider, call)
        assert response.status_code in (400, 401), (call.body, response.status_code)
        assert response.is_json
    assert post(app, provider, _bad_bodies(keys, provider)[1]).status_code in (400, 401)
    assert mark_of(app, RECIPIENT) is None


def test_webhooks_are_off_unless_configured(make_app: Any) -> None:
    client = make_app().test_client()
    for provider in (*PROVIDERS, "unknown"):
        response = client.post(f"/confirm/webhooks/{provider}", data=b"{}")
        assert response.status_code == 404, provider


def test_mailgun_refuses_an_old_signature(hooked: tuple[Flask, str]) -> None:
    app, message_id = hooked
    old = mailgun_call(mailgun_event(message_id, "bounce"), timestamp=int(time.time()) - 3600)
    assert post(app, "mailgun", old).status_code == 401
    assert mark_of(app, RECIPIENT) is None


def test_sendgrid_refuses_an_old_signature(hooked: tuple[Flask, str], keys: Keys) -> None:
    app, _ = hooked
    old = sendgrid_call(keys, b"[]", timestamp=int(time.time()) - 3600)
    assert post(app, "sendgrid", old).status_code == 401


@pytest.mark.parametrize("version", ["1", "2"])
def test_ses_accepts_both_sns_signature_versions(
    hooked: tuple[Flask, str], keys: Keys, version: str
) -> None:
    app, message_id = hooked
    call = ses_call(keys, ses_notification(message_id, "bounce"), version=version)
    assert post(app, "ses", call).get_json()["applied"] == 1
    assert keys.fetched == [CERT_URL]


@pytest.mark.parametrize(
    "cert_url",
    [
        "https://attacker.example/SimpleNotificationService.pem",
        "http://sns.eu-west-1.amazonaws.com/SimpleNotificationService.pem",
        "https://sns.eu-west-1.amazonaws.com.attacker.example/cert.pem",
        "https://sns.eu-west-1.amazonaws.com:8443/cert.pem",
        "https://user@sns.eu-west-1.amazonaws.com/cert.pem",
        "https://sns.eu-west-1.amazonaws.com/not-a-certificate.txt",
    ],
)
def test_ses_fetches_certificates_only_from_the_sns_host(
    hooked: tuple[Flask, str], keys: Keys, cert_url: str
) -> None:
    app, message_id = hooked
    call = ses_call(keys, ses_notification(message_id, "bounce"), cert_url=cert_url)
    assert post(app, "ses", call).status_code == 401
    assert keys.fetched == [], "nothing fetched from another host"


def test_ses_refuses_a_topic_not_configured(hooked: tuple[Flask, str], keys: Keys) -> None:
    app, message_id = hooked
    other = "arn:aws:sns:eu-west-1:999999999999:someone-elses-topic"
    call = ses_call(keys, ses_notification(message_id, "bounce"), topic=other)
    assert post(app, "ses", call).status_code == 401
    assert mark_of(app, RECIPIENT) is None


def test_ses_confirms_a_subscription(hooked: tuple[Flask, str], keys: Keys) -> None:
    app, _ = hooked
    message = sns_message(keys, "SubscriptionConfirmation", message="You have chosen to ...")
    response = post(app, "ses", Call(json.dumps(message).encode(), {}))
    assert response.status_code == 200
    assert keys.fetched == [CERT_URL, SUBSCRIBE_URL]


def test_an_sns_fetch_that_fails_is_503_with_retry_after(
    hooked: tuple[Flask, str], keys: Keys
) -> None:
    """The provider retries a 5xx: the answer says when, and nothing is marked."""
    app, message_id = hooked

    def unreachable(url: str) -> bytes:  # the fetch from AWS, which a test cannot reach
        raise WebhookError("Fetching from SNS failed (TimeoutError)")

    app.extensions["confirm_mail_webhooks"].sns.fetch = unreachable
    response = post(app, "ses", ses_call(keys, ses_notification(message_id, "bounce")))
    assert response.status_code == 503
    assert response.headers["Retry-After"] == str(RETRY_AFTER_OUTAGE)
    assert response.get_json()["error"] == "unavailable"
    assert mark_of(app, RECIPIENT) is None


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_database_outage_is_503_with_retry_after_never_a_500(
    database_that_goes_away: Any, keys: Keys, provider: str, caplog: pytest.LogCaptureFixture
) -> None:
    app, go_down = database_that_goes_away(keys.config())
    app.extensions["confirm_mail_webhooks"].sns.fetch = keys.fetch
    go_down()
    response = post(app, provider, signed_call(keys, provider, "<gone@example.org>", "bounce"))
    assert response.status_code == 503, response.get_data(as_text=True)
    assert response.headers["Retry-After"] == str(RETRY_AFTER_OUTAGE)
    assert response.get_json() == {
        "status": "error",
        "error": "unavailable",
        "message": "Try again later.",
    }
    assert f"Database unavailable for a {provider} webhook (OperationalError)" in caplog.text


@pytest.mark.parametrize("provider", REPLYING_PROVIDERS)
def test_an_event_without_headers_is_matched_by_the_providers_own_id(
    hooked_by_id: tuple[Flask, str], keys: Keys, provider: str, bounced_signals: list[Any]
) -> None:
    """SES's default notification, Postmark's webhook without bounce content and SendGrid's
    event without ``smtp-id`` name the message only by the id the SMTP reply gave."""
    app, provider_id = hooked_by_id
    unknown = {"status": "ok", "applied": 0, "duplicate": 0, "unknown": 1}
    nothing = post(app, provider, without_headers_call(keys, provider, "", "bounce"))
    if provider == "sendgrid":  # one event of a batch: counted, as any matching no message
        assert nothing.get_json() == unknown
    else:
        assert nothing.status_code == 400, nothing.get_json()
        assert "names no message" in nothing.get_json()["message"]
    other = without_headers_call(keys, provider, "0100018c-someone-elses-000000", "bounce")
    assert post(app, provider, other).get_json() == unknown
    control = without_headers_call(keys, provider, provider_id + "\x00", "bounce")
    assert post(app, provider, control).status_code == 400
    assert mark_of(app, RECIPIENT) is None
    first = post(app, provider, without_headers_call(keys, provider, provider_id, "bounce"))
    assert first.status_code == 200, first.get_json()
    assert first.get_json() == {"status": "ok", "applied": 1, "duplicate": 0, "unknown": 0}
    again = post(app, provider, without_headers_call(keys, provider, provider_id, "bounce"))
    assert again.get_json() == {"status": "ok", "applied": 0, "duplicate": 1, "unknown": 0}
    mark = mark_of(app, RECIPIENT)
    assert mark is not None and (mark.kind, mark.source) == ("bounce", provider)
    assert [s["email"] for s in bounced_signals] == [RECIPIENT]


@pytest.mark.parametrize("provider", REPLYING_PROVIDERS)
def test_a_complaint_without_headers_is_matched_by_the_providers_own_id(
    hooked_by_id: tuple[Flask, str], keys: Keys, provider: str
) -> None:
    app, provider_id = hooked_by_id
    call = without_headers_call(keys, provider, provider_id, "complaint")
    assert post(app, provider, call).get_json()["applied"] == 1
    mark = mark_of(app, RECIPIENT)
    assert mark is not None and mark.kind == "complaint"
