"""The mailer app in process (Flask's test client), SMTP to a real sink: failure paths."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from flask import Flask
from flask.testing import FlaskClient

from flask_confirm_mail.mailer import create_app
from flask_confirm_mail.mailer.settings import MailerSettings
from flask_confirm_mail.smtp import format_lifetime
from tests.support.fixtures import SECURE_SMTP_AUTH
from tests.support.smtp_server import SMTPSink

from .conftest import mailer_env
from .tokens import link_token, original_token, unique_address, v1_token

T0 = 1_800_000_000


def post(client: FlaskClient, token: str) -> Any:
    return client.post("/v1/messages", headers={"Authorization": f"Bearer {token}"})


@pytest.fixture
def app(make_mailer_app: Callable[..., Flask]) -> Flask:
    return make_mailer_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def test_without_redis_the_stores_are_said_to_be_per_process(
    make_mailer_app: Callable[..., Flask], caplog: Any
) -> None:
    with caplog.at_level(logging.WARNING, logger="flask_confirm_mail.mailer"):
        app = make_mailer_app()
    assert (
        "MAILER_REDIS_URL is not set: the replay store and the rate limit are per "
        "process" in caplog.text
    )
    health = app.test_client().get("/v1/health")
    assert (health.status_code, health.json["msg"]) == (200, "ok; stores per process")


def test_temporary_smtp_failure_is_503_and_the_same_token_can_retry(
    client: FlaskClient, smtp_server: SMTPSink
) -> None:
    token = v1_token()
    smtp_server.fail_next(1, 451)

    failed = post(client, token)

    assert failed.status_code == 503
    assert failed.json["error"] == 2
    assert failed.json["id"] is None
    retried = post(client, token)
    assert retried.status_code == 200
    assert retried.json["msg"] == "All ok"
    assert len(smtp_server.messages) == 1


def test_permanent_smtp_refusal_is_502(client: FlaskClient, smtp_server: SMTPSink) -> None:
    smtp_server.fail_next(1, 554)
    answer = post(client, v1_token())
    assert answer.status_code == 502
    assert answer.json["error"] == 2


def test_smtp_server_down_is_503(client: FlaskClient, smtp_server: SMTPSink) -> None:
    smtp_server.stop()
    answer = post(client, v1_token())
    assert answer.status_code == 503
    assert answer.json["error"] == 2


def test_failed_sends_do_not_count_against_the_rate_limit(
    make_mailer_app: Callable[..., Flask], smtp_server: SMTPSink
) -> None:
    client = make_mailer_app(MAILER_RATE_LIMIT="1").test_client()
    recipient = unique_address()
    smtp_server.fail_next(3, 451)
    for _ in range(3):
        assert post(client, v1_token(recipient)).status_code == 503
    assert post(client, v1_token(recipient)).status_code == 200
    assert post(client, v1_token(recipient)).status_code == 429


def test_rate_limit_window_slides(make_mailer_app: Callable[..., Flask]) -> None:
    client = make_mailer_app().test_client()
    recipient = unique_address()
    with time_machine.travel(T0, tick=False) as traveller:
        for _ in range(5):
            assert post(client, v1_token(recipient)).status_code == 200
        limited = post(client, v1_token(recipient))
        assert limited.status_code == 429
        assert limited.headers["Retry-After"] == "3600"
        traveller.shift(1800)
        assert post(client, v1_token(recipient)).headers["Retry-After"] == "1800"
        traveller.shift(1801)
        assert post(client, v1_token(recipient)).status_code == 200


def test_replayed_token_after_expiry_is_refused_not_resent(
    client: FlaskClient, smtp_server: SMTPSink
) -> None:
    with time_machine.travel(T0, tick=False) as traveller:
        token = v1_token()
        assert post(client, token).status_code == 200
        traveller.shift(299)
        assert post(client, token).json["msg"] == "Already sent"
        traveller.shift(600)
        assert post(client, token).status_code == 401
    assert len(smtp_server.messages) == 1


def test_unexpected_error_is_json_without_trace(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr("flask_confirm_mail.mailer.service.build_message", broken)
    token = original_token(unique_address())
    with caplog.at_level(logging.ERROR, logger=app.logger.name):
        answer = client.get(f"/emailservice-cat/signup/{token}")

    assert answer.status_code == 503
    assert answer.json == {"error": 8, "msg": "Internal error; retry later", "id": None}
    assert "a bug" not in answer.get_data(as_text=True)
    assert "RuntimeError" in caplog.text
    assert token not in caplog.text
    assert "/emailservice-cat/signup/[redacted]" in caplog.text


def test_request_log_line_is_redacted(app: Flask, client: FlaskClient, caplog: Any) -> None:
    token = original_token(unique_address())
    with caplog.at_level(logging.INFO, logger=app.logger.name):
        client.get(f"/emailservice-cat/signup/{token}")
        post(client, v1_token())
    assert "GET /emailservice-cat/signup/[redacted] 200 error=0" in caplog.text
    assert "POST /v1/messages 200 error=0" in caplog.text
    assert token not in caplog.text


def test_every_value_is_html_escaped(
    make_mailer_app: Callable[..., Flask], smtp_server: SMTPSink
) -> None:
    client = make_mailer_app(MAILER_ALLOWED_LINK_PREFIXES="https://app.example/c?a=").test_client()
    recipient = unique_address()
    token = link_token(recipient, lifetime=7200)
    link = f"https://app.example/c?a={token}"
    extra = {"app_name": "Cat's", "user_name": "Ann O'Neil", "access_key": "AK-1"}

    answer = post(client, v1_token(recipient, link_url=link, link_token=token, extra=extra))

    assert answer.status_code == 200, answer.json
    [mail] = smtp_server.messages
    html_part = mail.message.get_body(("html",))
    text_part = mail.message.get_body(("plain",))
    assert html_part is not None and text_part is not None
    html, text = html_part.get_content(), text_part.get_content()
    assert "Ann O&#39;Neil" in html and "Cat&#39;s" in html
    assert f'href="{link}"' in html
    assert link in text
    assert "2 hours" in text and "2 hours" in html
    assert mail.message["Subject"] == "Confirm and access Cat's"


def test_legacy_without_link_lifetime_says_nothing_about_it(
    client: FlaskClient, smtp_server: SMTPSink
) -> None:
    assert client.get(f"/emailservice/{original_token(unique_address())}").status_code == 200
    [mail] = smtp_server.messages
    text = mail.message.get_body(("plain",))
    assert text is not None and "works for" not in text.get_content()


def test_non_ascii_sender_name(
    make_mailer_app: Callable[..., Flask], smtp_server: SMTPSink
) -> None:
    client = make_mailer_app(SENDER_NAME="Chätloader, Inc.").test_client()
    assert post(client, v1_token()).status_code == 200
    [mail] = smtp_server.messages
    assert mail.message["From"].addresses[0].display_name == "Chätloader, Inc."
    assert mail.message["From"].addresses[0].addr_spec == "noreply@mailer.example"


def test_legacy_endpoints_off_answer_404(make_mailer_app: Callable[..., Flask]) -> None:
    client = make_mailer_app(MAILER_LEGACY_ENDPOINTS="0").test_client()
    answer = client.get(f"/emailservice-cat/signup/{original_token(unique_address())}")
    assert answer.status_code == 404
    assert answer.json["error"] == 7


def _secure_client(sink: SMTPSink, **overrides: str) -> FlaskClient:
    assert sink.cert_path is not None
    env = mailer_env(
        sink,
        MAILER_SMTP_SECURITY="starttls",
        MAILERTOGO_SMTP_USER=SECURE_SMTP_AUTH[0],
        MAILERTOGO_SMTP_PASSWORD=SECURE_SMTP_AUTH[1],
        MAILER_SMTP_CA_FILE=sink.cert_path,
    )
    env.update(overrides)
    return create_app(MailerSettings.from_env(env)).test_client()


def test_starttls_auth_and_connection_reuse(secure_smtp_server: SMTPSink) -> None:
    client = _secure_client(secure_smtp_server)
    for _ in range(3):
        assert post(client, v1_token()).status_code == 200
    assert len(secure_smtp_server.messages) == 3


@pytest.mark.parametrize(
    "overrides",
    [
        {"MAILERTOGO_SMTP_PASSWORD": "wrong-password"},
        {"MAILERTOGO_SMTP_USER": ""},
        {"MAILER_SMTP_CA_FILE": ""},
        {"MAILER_SMTP_SECURITY": "none"},
    ],
    ids=["wrong password", "no login", "untrusted certificate", "no tls"],
)
def test_secure_server_failures_are_503(
    secure_smtp_server: SMTPSink, overrides: dict[str, str]
) -> None:
    answer = post(_secure_client(secure_smtp_server, **overrides), v1_token())
    assert answer.status_code in (502, 503)
    assert answer.json["error"] == 2
    assert secure_smtp_server.messages == []


@pytest.mark.parametrize(
    ("seconds", "words"),
    [
        (86400, "24 hours"),
        (172800, "48 hours"),
        (259200, "3 days"),
        (3600, "1 hour"),
        (5400, "90 minutes"),
        (600, "10 minutes"),
        (45, "45 seconds"),
    ],
)
def test_format_lifetime(seconds: int, words: str) -> None:
    assert format_lifetime(timedelta(seconds=seconds)) == words
