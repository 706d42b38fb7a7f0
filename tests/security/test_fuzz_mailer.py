"""Round 2, family 5: property-based fuzzing of the mailer service (Hypothesis).

In process (Flask's test client on the mailer's real app, legacy endpoints on): any method,
path, header and body; random and mutated bearer tokens; and tokens *signed with the
mailer's key* whose claims take any JSON value (links that do not parse, recipients of any
type, ``extra`` of any shape). The mailer turns an unexpected exception into a 503 with
``error`` 8 (``INTERNAL``) and logs "Unexpected error": both count as a 500 here. Then one
test sends fuzzed requests to a live gunicorn process and checks its log.
"""

from __future__ import annotations

import http.client
import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from flask import Flask
from hypothesis import given, settings
from hypothesis import strategies as st

from flask_confirm_mail.mailer import create_app
from flask_confirm_mail.mailer.settings import MailerSettings
from flask_confirm_mail.mailer.wire import ErrorCode
from tests.mailer.conftest import mailer_env
from tests.mailer.process import MailerProcess
from tests.mailer.tokens import LINK_PREFIX, link_token, sign, unique_address, v1_claims, v1_token
from tests.security.fuzzing import (
    ACCEPTS,
    CONTENT_TYPES,
    EXTRA_HEADERS,
    FUZZ,
    JSON_VALUES,
    METHODS,
    RAW_BODIES,
    assert_handled,
    assert_secret_free,
    log_text,
    tokens,
)
from tests.support.smtp_server import SMTPSink

#: Links a caller could put in a signed token: unparsable, odd schemes, hosts, ports.
LINKS = st.sampled_from(
    [
        "http://[::1",
        "https://[",
        "https://app.example:99999/confirm/x",
        "https://app.example:-1/confirm/x",
        "https://user@app.example/confirm/",
        "https://app.example/confirm/%zz",
        "//app.example/confirm/",
        "javascript:alert(1)",
        "https://\u0430pp.example/confirm/",
        "https://app.example/confirm/\x00",
        LINK_PREFIX,
        "",
    ]
) | st.text(max_size=80).map(lambda tail: LINK_PREFIX + tail)
CLAIM_NAMES = st.sampled_from(
    ["recipient", "template", "link_url", "link_token", "extra", "iat", "exp", "jti", "aud"]
)
LEGACY_CLAIMS = st.fixed_dictionaries(
    {},
    optional={
        name: JSON_VALUES | LINKS
        for name in (
            "user_email", "email_link_url", "email_link_token", "user_aut_key_or_otp",
            "user_aut_key", "exp", "iat", "jti",
        )
    },
)  # fmt: skip
LEGACY_PATHS = ["/emailservice/", "/emailservice-cat/signup/", "/emailservice-usr/change/"]


@pytest.fixture
def mailer_app(smtp_server: SMTPSink) -> Flask:
    settings_ = MailerSettings.from_env(mailer_env(smtp_server))
    app = create_app(settings_)
    app.config["TESTING"] = True
    return app


def _valid_tokens() -> list[str]:
    return [v1_token(), v1_token(template="change")]


@st.composite
def signed_tokens(draw: st.DrawFn) -> str:
    """A v1 token signed with the mailer's key, some claims replaced by any value."""
    recipient = unique_address("fuzz")
    overrides = draw(st.dictionaries(CLAIM_NAMES, JSON_VALUES | LINKS, max_size=4))
    if draw(st.booleans()):
        overrides["link_url"] = draw(LINKS)
    if draw(st.booleans()):
        overrides["link_token"] = link_token(draw(st.text(max_size=30)) or recipient)
    claims = {**v1_claims(recipient), **overrides}
    typ = draw(st.sampled_from(["cm-mailer+jwt", "JWT", None]))
    return sign(claims, typ=typ)


@st.composite
def mailer_requests(draw: st.DrawFn) -> dict[str, Any]:
    """Keyword arguments of one ``client.open`` call to the mailer."""
    # Only tokens signed with the mailer's key are secrets; junk may show in a log as sent.
    token, signed = draw(
        signed_tokens().map(lambda t: (t, True)) | tokens(_valid_tokens()).map(lambda t: (t, False))
    )
    headers = dict(draw(EXTRA_HEADERS))
    if draw(st.booleans()):
        scheme = draw(st.sampled_from(["Bearer ", "bearer ", "Bearer  ", "Basic ", ""]))
        headers["Authorization"] = scheme + token
    if draw(st.booleans()):
        headers["Accept"] = draw(ACCEPTS)
    path = draw(
        st.sampled_from(["/v1/messages", "/v1/health", "/v1/messages/", "/", "/v2/messages"])
        | st.sampled_from(LEGACY_PATHS)
    )
    if path in LEGACY_PATHS:
        if draw(st.booleans()):
            token, signed = sign(draw(LEGACY_CLAIMS), typ="JWT"), True
        path += quote(token, safe="")
    kwargs: dict[str, Any] = {"method": draw(st.sampled_from(["POST", "GET"]) | METHODS)}
    kwargs["path"] = path
    if draw(st.booleans()):
        kwargs["data"] = draw(RAW_BODIES)
        headers["Content-Type"] = draw(CONTENT_TYPES)
    kwargs["headers"] = headers
    kwargs["secrets"] = [token] if signed else []
    return kwargs


def test_any_request_to_the_mailer_is_answered_without_an_internal_error(
    mailer_app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    client = mailer_app.test_client()

    @FUZZ
    @given(request=mailer_requests())
    def run(request: dict[str, Any]) -> None:
        secrets = request.pop("secrets")
        caplog.clear()
        with caplog.at_level(logging.DEBUG):
            response = client.open(buffered=True, **request)
        what = f"{request['method']} {request['path'][:80]}"
        body = response.get_data()
        answer = response.get_json(silent=True)
        assert not (isinstance(answer, dict) and answer.get("error") == ErrorCode.INTERNAL), what
        # A 503 is the mailer's answer to a delivery or store failure, never to the request.
        status = response.status_code
        assert_handled(200 if status == 503 else status, body, what=what)
        logs = log_text(caplog.records)
        assert "Unexpected error" not in logs, f"{what}: {logs[-500:]}"
        assert_secret_free(logs, secrets, what=what)

    run()


# --- one live gunicorn process ---------------------------------------------------------------


@pytest.fixture
def live_mailer(smtp_server: SMTPSink, tmp_path: Any) -> Iterator[MailerProcess]:
    process = MailerProcess(mailer_env(smtp_server), tmp_path / "gunicorn.log")
    process.start()
    try:
        yield process
    finally:
        process.stop()


def _sendable(value: str) -> bool:
    """Whether http.client can send ``value`` as a header (latin-1, no line breaks)."""
    return value.isprintable() and all(ord(c) < 256 for c in value)


def test_a_live_mailer_answers_fuzzed_requests_without_an_internal_error(
    live_mailer: MailerProcess,
) -> None:
    @settings(FUZZ, max_examples=60)
    @given(request=mailer_requests())
    def run(request: dict[str, Any]) -> None:
        live_mailer.tokens.extend(t for t in request.pop("secrets") if len(t) >= 16)
        connection = http.client.HTTPConnection("127.0.0.1", live_mailer.port, timeout=15)
        try:
            headers = {
                name: value
                for name, value in request["headers"].items()
                if name != "Transfer-Encoding" and _sendable(value)
            }
            connection.request(
                request["method"], request["path"], body=request.get("data"), headers=headers
            )
            response = connection.getresponse()
            status, body = response.status, response.read()
        finally:
            connection.close()
        what = f"{request['method']} {request['path'][:80]}"
        assert b'"error":8' not in body.replace(b" ", b""), what
        assert_handled(200 if status == 503 else status, body, what=what)

    run()
    log = live_mailer.log()
    assert "Unexpected error" not in log, log[-2000:]
    assert "Traceback" not in log, log[-2000:]
    leaked = live_mailer.leaked_tokens()
    assert not leaked, [log[max(log.find(t) - 300, 0) : log.find(t) + 40] for t in leaked][:2]
