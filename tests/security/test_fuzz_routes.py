"""Round 2, family 5: property-based fuzzing of every route of the extension (Hypothesis).

The app is ``tests/apps.py``'s (SQLite, then PostgreSQL): the blueprint's routes (the link,
resend), the webhooks of all four providers, and the app's routes behind
:func:`~flask_confirm_mail.signup_view` and :func:`~flask_confirm_mail.confirmed_required`.
Whatever the method, path, headers and body, the answer is never a 5xx, never shows a stack
trace, and the log never holds the live token. ``/signup-then-fail`` is left out: that view
raises by design; so is ``/login/<int>``, the test app's own (not the extension's) route.
Bounded: ``FUZZ``, 150 derandomized examples a test (50 on PostgreSQL), no deadline.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
from flask import Flask
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.bounces.providers import (
    CERT_URL,
    PROVIDERS,
    TOPIC_ARN,
    Keys,
    mailgun_call,
    postmark_call,
    sendgrid_call,
    ses_call,
)
from tests.security.fuzzing import (
    ACCEPTS,
    CONTENT_TYPES,
    EXTRA_HEADERS,
    FORMS,
    HOSTS,
    JSON_VALUES,
    METHODS,
    RAW_BODIES,
    assert_handled,
    assert_secret_free,
    deep_header_token,
    fuzz_settings,
    log_text,
    tokens,
)
from tests.security.victims import Victim, sign_up
from tests.support.smtp_server import SMTPSink

JSON = {"Content-Type": "application/json", "Accept": "application/json"}
#: Unsigned SNS messages: what reaches the SES webhook's parsing before the signature check.
SNS_SHAPED = st.fixed_dictionaries(
    {
        "Type": st.sampled_from(["Notification", "SubscriptionConfirmation", "Other"]),
        "TopicArn": st.just(TOPIC_ARN) | JSON_VALUES,
        "SigningCertURL": st.just(CERT_URL) | st.sampled_from(["https://[::1", "http://x"]),
        "SignatureVersion": st.sampled_from(["1", "2", "3"]),
        "Message": JSON_VALUES,
        "MessageId": JSON_VALUES,
        "Timestamp": JSON_VALUES,
    },
    optional={"Signature": JSON_VALUES, "Subject": JSON_VALUES, "SubscribeURL": JSON_VALUES},
)


@dataclass
class Target:
    app: Flask
    keys: Keys
    victim: Victim
    fuzz: settings


@pytest.fixture
def target(make_app: Callable[..., Flask], smtp_server: SMTPSink, database_url: str) -> Target:
    """The test app with every webhook on and one signed-up user (their link is live)."""
    keys = Keys()
    app = make_app(config={**keys.config(), "CONFIRM_MAIL_RESEND_COOLDOWN": 0})
    app.extensions["confirm_mail_webhooks"].sns.fetch = keys.fetch
    return Target(app, keys, sign_up(app, smtp_server), fuzz_settings(database_url))


def _paths(victim: Victim, route: str) -> st.SearchStrategy[str]:
    """Paths aimed at one ``route`` family (``any``: all of them and junk)."""
    token = tokens([victim.token]).map(lambda t: quote(t, safe=""))
    junk = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=20)
    families = {
        "resend": st.sampled_from(["/confirm/resend", "/confirm/resend/", "/confirm//resend"]),
        "link": st.one_of(
            st.sampled_from([victim.path, victim.path.upper(), victim.path + "/"]),
            token.map(lambda t: f"/confirm/{t}"),
        ),
        "webhooks": st.sampled_from([*PROVIDERS, "POSTMARK", "nope", ""]).map(
            lambda p: f"/confirm/webhooks/{p}"
        ),
        "app": st.sampled_from(["/signup", "/signup-async", "/members", "/members-async"]),
    }
    if route != "any":
        return families[route]
    rest = junk.map(lambda j: "/confirm/" + quote(j, safe="/")) | junk.map(quote)
    return st.one_of(*families.values(), rest)


@st.composite
def requests(draw: st.DrawFn, victim: Victim, route: str) -> dict[str, Any]:
    """Keyword arguments of one ``client.open`` call aimed at ``route``."""
    headers = dict(draw(EXTRA_HEADERS))
    accept = draw(st.none() | ACCEPTS)
    if accept is not None:
        headers["Accept"] = accept
    method = draw(st.sampled_from(["POST", "GET"]) | METHODS)
    kwargs: dict[str, Any] = {"method": method, "path": draw(_paths(victim, route))}
    body = draw(st.sampled_from(["none", "form", "json", "raw", "raw"]))
    if body == "form":
        kwargs["data"] = draw(FORMS)
    elif body == "json":
        kwargs["json"] = draw(
            JSON_VALUES | st.fixed_dictionaries({"email": JSON_VALUES}) | SNS_SHAPED
        )
    elif body == "raw":
        kwargs["data"] = draw(RAW_BODIES)
        headers["Content-Type"] = draw(st.just("application/json") | CONTENT_TYPES)
    host = draw(st.none() | HOSTS)
    if host is not None:
        kwargs["environ_overrides"] = {"HTTP_HOST": host}
    kwargs["headers"] = headers
    return kwargs


def _check(client: Any, target: Target, caplog: pytest.LogCaptureFixture, **kwargs: Any) -> None:
    """Send one request (closed at once, so a resend's work runs) and check the answer."""
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        response = client.open(buffered=True, **kwargs)
    what = f"{kwargs['method']} {kwargs['path'][:80]}"
    assert_handled(response.status_code, response.get_data(), what=what)
    logs = log_text(caplog.records)
    assert_secret_free(logs, [target.victim.token], what=what)
    assert "could not be queued" not in logs, f"{what}: a resend failed after its answer"


@pytest.mark.parametrize("route", ["resend", "link", "webhooks", "app", "any"])
def test_any_request_to_any_route_is_answered_without_a_5xx(
    target: Target, caplog: pytest.LogCaptureFixture, route: str
) -> None:
    @target.fuzz
    @given(request=requests(target.victim, route), logged_in=st.booleans())
    def run(request: dict[str, Any], logged_in: bool) -> None:
        client = target.app.test_client()
        if logged_in:
            assert client.post(f"/login/{target.victim.uid}").status_code == 200
        _check(client, target, caplog, **request)

    run()


def _signed(keys: Keys, provider: str, body: Any) -> tuple[bytes, dict[str, str]]:
    """A call of ``provider`` with a valid credential or signature around any ``body``."""
    if provider == "postmark":
        call = postmark_call(body)
    elif provider == "mailgun":
        call = mailgun_call(body)
    elif provider == "sendgrid":
        call = sendgrid_call(keys, json.dumps(body).encode())
    else:
        call = ses_call(keys, body)
    return call.body, call.headers


def _shaped(provider: str, values: Any, message_id: Any) -> Any:
    """A body of ``provider``'s shape whose fields take fuzzed values."""
    if provider == "postmark":
        return {
            "RecordType": "Bounce", "Type": "HardBounce", "Content": values,
            "MessageID": message_id,
        }  # fmt: skip
    if provider == "mailgun":
        return {
            "event": "failed", "severity": "permanent", "delivery-status": values,
            "message": {"headers": {"message-id": message_id}},
        }  # fmt: skip
    if provider == "sendgrid":
        return [{"event": "bounce", "smtp-id": message_id, "reason": values}, values]
    return {
        "notificationType": "Bounce",
        "bounce": {"bounceType": "Permanent", "bouncedRecipients": values},
        "mail": {"headers": [{"name": "Message-ID", "value": message_id}], "commonHeaders": values},
    }  # fmt: skip


def test_signed_webhook_calls_with_any_body_are_answered_without_a_5xx(
    target: Target, caplog: pytest.LogCaptureFixture
) -> None:
    @target.fuzz
    @given(
        provider=st.sampled_from(PROVIDERS),
        values=JSON_VALUES,
        message_id=JSON_VALUES | st.text(max_size=3000),
        shaped=st.booleans(),
    )
    def run(provider: str, values: Any, message_id: Any, shaped: bool) -> None:
        body = _shaped(provider, values, message_id) if shaped else values
        data, headers = _signed(target.keys, provider, body)
        path = f"/confirm/webhooks/{provider}"
        client = target.app.test_client()
        _check(client, target, caplog, method="POST", path=path, data=data, headers=headers)

    run()


# --- the 500s the fuzzing found, kept as plain regression cases ----------------------------


@pytest.mark.parametrize(
    ("body", "status"),
    [
        pytest.param(b"[" * 100_000 + b"]" * 100_000, 413, id="nested-far-too-big"),
        pytest.param(b'{"email":' * 1500 + b"1" + b"}" * 1500, 400, id="nested-objects"),
        pytest.param(b'{"email": ' + b"[" * 2000 + b"]" * 2000 + b"}", 400, id="nested-value"),
        pytest.param(json.dumps({"email": "a" * 20_000}).encode(), 413, id="overlong"),
        pytest.param(b"[" * 8000 + b"]" * 8000, 400, id="nested-array-under-the-cap"),
        pytest.param(b'{"email": "a@b.c", ', 400, id="malformed"),
    ],
)
@pytest.mark.parametrize("route", ["/confirm/resend", "/confirm/code"])
def test_deep_big_or_malformed_json_on_every_json_route_is_a_clear_4xx(
    target: Target, caplog: pytest.LogCaptureFixture, body: bytes, status: int, route: str
) -> None:
    response = target.app.test_client().post(route, data=body, headers=JSON)
    assert response.status_code == status
    assert response.json["status"] == "error"


def test_a_token_with_a_deeply_nested_header_is_an_invalid_link(target: Target) -> None:
    """A guard: PyJWT turns the parser's RecursionError into a DecodeError."""
    response = target.app.test_client().get(f"/confirm/{deep_header_token()}", headers=JSON)
    assert response.status_code == 400
    assert response.json["status"] == "invalid"


def test_an_sns_message_holding_a_lone_surrogate_is_a_400(target: Target) -> None:
    """Found by reading the code the fuzzing pointed at: the signed text was encoded before
    the signature check, and ``"\\ud800"`` made that a UnicodeEncodeError (a 500)."""
    message = {
        "Type": "Notification", "MessageId": "x", "TopicArn": TOPIC_ARN, "Message": "\ud800",
        "Timestamp": "t", "SignatureVersion": "2", "SigningCertURL": CERT_URL, "Signature": "QQ==",
    }  # fmt: skip
    response = target.app.test_client().post("/confirm/webhooks/ses", json=message)
    assert response.status_code == 400
    assert response.json["error"] == "bad_request"


@pytest.mark.parametrize("path", ["/confirm/resend", "/confirm/not-a-token"])
def test_a_streamed_body_over_the_limit_is_a_413(target: Target, path: str) -> None:
    """No ``Content-Length`` (chunked): the limit holds while the body is read."""
    body = io.BytesIO(b"email=" + b"a" * 40_000)
    response = target.app.test_client().post(
        path,
        input_stream=body,
        content_type="application/x-www-form-urlencoded",
        environ_overrides={"wsgi.input_terminated": True, "HTTP_TRANSFER_ENCODING": "chunked"},
        headers={"Accept": "application/json"},
    )
    assert response.status_code == 413
    assert response.json == {"status": "error", "error": "request entity too large"}
