"""The mailer service under attack: forged callers, open relay, replay, bad links, floods.

Cases 28-32 of the adversarial list, plus the mailer's share of 23 (logs) and 24 (header
injection through values a caller controls). The original mailer sent whatever any
holder of its secret asked, to anyone, with any link, as often as asked. Here the
mailer is the in-process app of ``create_app()``, configured from an environment as in
production, sending to a real SMTP server on loopback; ``tests/mailer`` runs it under
gunicorn.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import jwt
import pytest
from flask import Flask
from werkzeug.test import TestResponse

from flask_confirm_mail.errors import ConfigurationError
from flask_confirm_mail.mailer import create_app
from flask_confirm_mail.mailer.remote import RemoteTransport
from flask_confirm_mail.mailer.settings import MailerSettings
from flask_confirm_mail.mailer.wire import (
    WRAPPING_AUDIENCE,
    WRAPPING_TOKEN_TYPE,
    is_loopback_host,
    issue_legacy_token,
    issue_wrapping_token,
)
from flask_confirm_mail.tokens import LINK_AUDIENCE, LINK_TOKEN_TYPE, LinkTokenSigner
from tests.apps import EXTERNAL_URL, SECRET_KEY
from tests.security.forgery import (
    LINK_KEY,
    b64url,
    flip_signature_byte,
    forge,
    link_payload,
    segment,
)
from tests.security.outcomes import app_log_texts, assert_no_leak
from tests.support.smtp_server import SMTPSink

MAILER_KEY = b"mailer-secret-for-the-security-suite-0123456789"
LINK_PREFIX = f"{EXTERNAL_URL}/confirm/"
HOST = "app.example.com"
RECIPIENT = "victim@example.org"
RATE_LIMIT = 5
JSON_TYP = {"alg": "HS256", "typ": WRAPPING_TOKEN_TYPE}


def link_token(address: str = RECIPIENT, /, **claims: Any) -> str:
    """A link token as the app mints it; with ``claims``, an unsigned hand-built variant.

    The mailer never holds the link secret, so it cannot tell the two apart.
    """
    if claims:
        return forge({"alg": "HS256", "typ": LINK_TOKEN_TYPE}, link_payload(1, address, **claims))
    signer = LinkTokenSigner(LINK_KEY, lifetime=timedelta(hours=48))
    return signer.issue("1", address)


def _hs512(claims: dict[str, Any]) -> str:
    header = {"alg": "HS512", "typ": WRAPPING_TOKEN_TYPE}
    signing_input = f"{segment(header)}.{segment(claims)}"
    signature = hmac.new(MAILER_KEY, signing_input.encode(), hashlib.sha512).digest()
    return f"{signing_input}.{b64url(signature)}"


def wrapping_claims(recipient: str = RECIPIENT, **changes: Any) -> dict[str, Any]:
    token = changes.pop("link_token", None) or link_token(recipient)
    now = int(time.time())
    claims = {
        "aud": WRAPPING_AUDIENCE,
        "iat": now,
        "exp": now + 300,
        "jti": secrets.token_urlsafe(16),
        "recipient": recipient,
        "template": "signup",
        "link_url": LINK_PREFIX + token,
        "link_token": token,
    }
    claims.update(changes)
    return claims


def wrapping_token(recipient: str = RECIPIENT, **changes: Any) -> str:
    """A v1 wrapping token signed with the mailer secret (``changes`` bend its claims)."""
    if not changes:
        token = link_token(recipient)
        return issue_wrapping_token(
            MAILER_KEY,
            recipient=recipient,
            template="signup",
            link_url=LINK_PREFIX + token,
            link_token=token,
        )
    return forge(JSON_TYP, wrapping_claims(recipient, **changes), MAILER_KEY)


@dataclass
class Mailer:
    """The mailer app and the SMTP server it sends to."""

    app: Flask
    sink: SMTPSink

    def send(self, token: str | None, *, scheme: str = "Bearer") -> TestResponse:
        headers = {} if token is None else {"Authorization": f"{scheme} {token}"}
        return self.app.test_client().post("/v1/messages", headers=headers)

    def legacy(self, token: str, service: str = "signup") -> TestResponse:
        return self.app.test_client().get(f"/emailservice-cat/{service}/{token}")

    def refused(self, response: TestResponse, status: int | tuple[int, ...], *leaks: str) -> None:
        """``status`` (or one of them), nothing sent, no token, secret or link in the answer."""
        statuses = status if isinstance(status, tuple) else (status,)
        assert response.status_code in statuses, (response.status_code, response.json)
        assert response.json["error"] != 0 and response.json["id"] is None
        assert self.sink.messages == [], "an email was sent"
        assert_no_leak(
            response.get_data(as_text=True) + str(response.headers),
            MAILER_KEY.decode(),
            LINK_KEY.decode(),
            *leaks,
        )


def _env(sink: SMTPSink, **changes: str) -> dict[str, str]:
    env = {
        "JWT_MAILER_SECRET": MAILER_KEY.decode(),
        "MAILERTOGO_SMTP_HOST": sink.host,
        "MAILERTOGO_SMTP_PORT": str(sink.port),
        "MAILERTOGO_DOMAIN": "mailer.example",
        "SENDER_NAME": "CatLoader",
        "MAILER_SMTP_SECURITY": "none",
        "MAILER_ALLOWED_LINK_PREFIXES": LINK_PREFIX,
        "MAILER_LEGACY_ENDPOINTS": "1",
        "MAILER_RATE_LIMIT": str(RATE_LIMIT),
    }
    env.update(changes)
    return env


@pytest.fixture
def make_mailer(smtp_server: SMTPSink) -> Callable[..., Mailer]:
    def make(**env: str) -> Mailer:
        app = create_app(MailerSettings.from_env(_env(smtp_server, **env)))
        app.config["TESTING"] = True
        return Mailer(app, smtp_server)

    return make


@pytest.fixture
def mailer(make_mailer: Callable[..., Mailer]) -> Mailer:
    return make_mailer()


def test_the_control_request_sends_one_email(mailer: Mailer) -> None:
    """Without the faults below, the same builders make a request that is served."""
    for token in (wrapping_token(), wrapping_token(extra={})):
        answer = mailer.send(token)
        assert answer.status_code == 200 and answer.json["error"] == 0
    assert [m.rcpt_tos for m in mailer.sink.messages] == [[RECIPIENT]] * 2


# --- 28. forged or foreign wrapping tokens -------------------------------------------------------

#: Forged signatures and algorithms, and other tokens of the system: 401.
FORGED: dict[str, Callable[[], str]] = {
    "alg none": lambda: forge({**JSON_TYP, "alg": "none"}, wrapping_claims()),
    "alg None, signed": lambda: forge({**JSON_TYP, "alg": "None"}, wrapping_claims(), MAILER_KEY),
    "empty signature": lambda: forge(JSON_TYP, wrapping_claims()),
    "HS512 with the mailer secret": lambda: _hs512(wrapping_claims()),
    "signature flipped": lambda: flip_signature_byte(wrapping_token()),
    "wrong secret": lambda: forge(JSON_TYP, wrapping_claims(), b"w" * 48),
    'secret ""': lambda: forge(JSON_TYP, wrapping_claims(), b""),
    "the link secret": lambda: forge(JSON_TYP, wrapping_claims(), LINK_KEY),
    "the app's SECRET_KEY": lambda: forge(JSON_TYP, wrapping_claims(), SECRET_KEY.encode()),
    "the link token itself": lambda: link_token(),
    "a link-typed token signed with the mailer secret": lambda: forge(
        {"alg": "HS256", "typ": LINK_TOKEN_TYPE}, wrapping_claims(aud=LINK_AUDIENCE), MAILER_KEY
    ),
    "legacy payload on the v1 route": lambda: issue_legacy_token(
        MAILER_KEY,
        user_email=RECIPIENT,
        access_key="1234567890",
        link_prefix=LINK_PREFIX,
        link_token=link_token(),
    ),
    "expired": lambda: wrapping_token(iat=int(time.time()) - 900, exp=int(time.time()) - 600),
    "a Flask session cookie": lambda: _session_cookie(),
    "garbage": lambda: "garbage",
    "a.b": lambda: "a.b",
    "a.b.c.d": lambda: "a.b.c.d",
    "16 KB": lambda: forge(JSON_TYP, wrapping_claims(pad="p" * 16_000), MAILER_KEY),
    "1 MB": lambda: forge(JSON_TYP, wrapping_claims(pad="p" * 1_000_000), MAILER_KEY),
}


def _session_cookie() -> str:
    app = Flask(__name__)
    app.secret_key = SECRET_KEY
    serializer = app.session_interface.get_signing_serializer(app)  # type: ignore[attr-defined]
    return str(serializer.dumps({"uid": 1}))


#: Genuine signatures over bad claims: refused as a bad request (400) or unauthorized.
BAD_CLAIMS: dict[str, Callable[[], str]] = {
    "mailer typ, link audience": lambda: forge(
        JSON_TYP, wrapping_claims(aud=LINK_AUDIENCE), MAILER_KEY
    ),
    "lifetime of a day": lambda: wrapping_token(exp=int(time.time()) + 86400),
    "issued in the future": lambda: wrapping_token(
        iat=int(time.time()) + 3600, exp=int(time.time()) + 3900
    ),
    "recipient a list": lambda: wrapping_token(recipient=[RECIPIENT]),
    "unknown template": lambda: wrapping_token(template="../../etc/passwd"),
    "extra not an object": lambda: wrapping_token(extra=["x"]),
    "extra with a line break": lambda: wrapping_token(extra={"user_name": "a\r\nBcc: b@y.com"}),
}


@pytest.mark.parametrize("build", [pytest.param(b, id=n) for n, b in FORGED.items()])
def test_forged_wrapping_tokens_are_refused(mailer: Mailer, build: Callable[[], str]) -> None:
    token = build()
    mailer.refused(mailer.send(token), 401, token)


@pytest.mark.parametrize("build", [pytest.param(b, id=n) for n, b in BAD_CLAIMS.items()])
def test_wrapping_tokens_with_bad_claims_are_refused(
    mailer: Mailer, build: Callable[[], str]
) -> None:
    token = build()
    mailer.refused(mailer.send(token), (400, 401), token)


@pytest.mark.parametrize(
    "claim", ["aud", "iat", "exp", "jti", "recipient", "template", "link_url", "link_token"]
)
def test_wrapping_token_missing_a_claim_is_refused(mailer: Mailer, claim: str) -> None:
    claims = wrapping_claims()
    del claims[claim]
    token = forge(JSON_TYP, claims, MAILER_KEY)
    mailer.refused(mailer.send(token), (400, 401), token)


@pytest.mark.parametrize(
    "how",
    ["no header", "Basic scheme", "empty bearer", "token in the query", "token in the body"],
)
def test_a_token_outside_the_authorization_header_is_refused(mailer: Mailer, how: str) -> None:
    token = wrapping_token()
    client = mailer.app.test_client()
    if how == "no header":
        answer = mailer.send(None)
    elif how == "Basic scheme":
        answer = mailer.send(token, scheme="Basic")
    elif how == "empty bearer":
        answer = mailer.send("")
    elif how == "token in the query":
        answer = client.post("/v1/messages", query_string={"token": token})
    else:
        answer = client.post("/v1/messages", data={"token": token})
    mailer.refused(answer, 401, token)


@pytest.mark.parametrize(
    "secret", [b"w" * 48, LINK_KEY, b""], ids=["wrong secret", "link secret", "empty"]
)
def test_forged_legacy_tokens_are_refused(mailer: Mailer, secret: bytes) -> None:
    token = forge(
        {"alg": "HS256", "typ": "JWT"},
        {
            "user_email": RECIPIENT,
            "user_aut_key_or_otp": "1234567890",
            "email_link_url": LINK_PREFIX,
            "email_link_token": link_token(),
        },
        secret,
    )
    mailer.refused(mailer.legacy(token), 401, token)


# --- 29. no open relay ---------------------------------------------------------------------------

RELAY: dict[str, Callable[[], str]] = {
    "another recipient": lambda: wrapping_token(
        "attacker@evil.example", link_token=link_token(RECIPIENT)
    ),
    "a second recipient appended": lambda: wrapping_token(
        f"{RECIPIENT}, attacker@evil.example", link_token=link_token(RECIPIENT)
    ),
    "a Bcc line appended": lambda: wrapping_token(
        f"{RECIPIENT}\r\nBcc: attacker@evil.example", link_token=link_token(RECIPIENT)
    ),
    "link token naming several recipients": lambda: wrapping_token(
        RECIPIENT, link_token=link_token(f"{RECIPIENT}, attacker@evil.example")
    ),
    "link token without an address": lambda: wrapping_token(
        RECIPIENT, link_token=link_token(RECIPIENT, email=None)
    ),
    "link token that is not a JWT": lambda: wrapping_token(RECIPIENT, link_token="a" * 43),
    "another kind of token naming another address": lambda: wrapping_token(
        RECIPIENT,
        link_token=forge(
            {"alg": "HS256", "typ": "JWT"}, {"aud": "x", "email": "attacker@evil.example"}, LINK_KEY
        ),
    ),
    "the original's link token naming another address": lambda: wrapping_token(
        RECIPIENT,
        link_token=jwt.encode(
            {"aut_id": 7, "aut_email": "attacker@evil.example"}, LINK_KEY, algorithm="HS256"
        ),
    ),
}


@pytest.mark.parametrize("build", [pytest.param(b, id=n) for n, b in RELAY.items()])
def test_the_recipient_must_be_the_links_address(mailer: Mailer, build: Callable[[], str]) -> None:
    mailer.refused(mailer.send(build()), 400, "attacker@evil.example")


def test_legacy_recipient_must_be_the_links_address(mailer: Mailer) -> None:
    original_link = jwt.encode(
        {"aut_id": 7, "aut_email": RECIPIENT, "aut_random_key": "q8XwZ1rT0b"},
        LINK_KEY,
        algorithm="HS256",
    )
    token = issue_legacy_token(
        MAILER_KEY,
        user_email="attacker@evil.example",
        access_key="1234567890",
        link_prefix=LINK_PREFIX,
        link_token=original_link,
    )
    mailer.refused(mailer.legacy(token), 400, "attacker@evil.example")


# --- 30. replay ----------------------------------------------------------------------------------


def test_the_same_token_fifty_times_sends_one_email(mailer: Mailer) -> None:
    token = wrapping_token()
    answers = [mailer.send(token) for _ in range(50)]
    assert [a.status_code for a in answers] == [200] * 50
    assert {a.json["id"] for a in answers} == {answers[0].json["id"]}
    assert [a.json["msg"] for a in answers[1:]] == ["Already sent"] * 49
    assert len(mailer.sink.messages) == 1


def test_the_same_token_fifty_times_at_once_sends_one_email(mailer: Mailer) -> None:
    token = wrapping_token()
    statuses: list[int] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(10)

    def replay() -> None:
        try:
            barrier.wait(timeout=30)
            for _ in range(5):
                statuses.append(mailer.send(token).status_code)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=replay) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(statuses) == 50
    assert set(statuses) <= {200, 409}, statuses
    assert len(mailer.sink.messages) == 1


def test_a_legacy_token_with_jti_sends_once(mailer: Mailer) -> None:
    token = issue_legacy_token(
        MAILER_KEY,
        user_email=RECIPIENT,
        access_key="1234567890",
        link_prefix=LINK_PREFIX,
        link_token=link_token(),
    )
    answers = [mailer.legacy(token) for _ in range(20)]
    assert {a.status_code for a in answers} == {200}
    assert len(mailer.sink.messages) == 1


def test_a_legacy_token_without_jti_sends_once(mailer: Mailer) -> None:
    original_link = jwt.encode(
        {"aut_id": 7, "aut_email": RECIPIENT, "aut_random_key": "q8XwZ1rT0b"},
        LINK_KEY,
        algorithm="HS256",
    )
    payload = {
        "user_email": RECIPIENT,
        "user_aut_key_or_otp": "1234567890",
        "email_link_url": LINK_PREFIX,
        "email_link_token": original_link,
    }
    token = jwt.encode(payload, MAILER_KEY, algorithm="HS256")
    for _ in range(3):
        assert mailer.legacy(token).status_code == 200
    assert len(mailer.sink.messages) == 1


# --- 31. links outside the allowlist --------------------------------------------------------------


def _links(token: str) -> dict[str, str]:
    return {
        "javascript:": f"javascript:alert(1)//{token}",
        "data:": f"data:text/html,<script>alert(1)</script>/{token}",
        "http downgrade": f"http://{HOST}/confirm/{token}",
        "http://example.com": f"http://example.com/confirm/{token}",
        "suffix domain": f"https://{HOST}.evil.tld/confirm/{token}",
        "user info": f"https://{HOST}@evil.tld/confirm/{token}",
        "user info with password": f"https://{HOST}:443@evil.tld/confirm/{token}",
        "backslash": f"https://evil.tld\\@{HOST}/confirm/{token}",
        "fragment trick": f"https://evil.tld#@{HOST}/confirm/{token}",
        "scheme-relative": f"//evil.tld/confirm/{token}",
        "other port": f"https://{HOST}:8443/confirm/{token}",
        "dot segments": f"https://{HOST}/confirm/../evil/{token}",
        "encoded dot segments": f"https://{HOST}/confirm/%2e%2e/evil/{token}",
        "path prefix without a boundary": f"https://{HOST}/confirmation/{token}",
        "Cyrillic host": f"https://\u0430pp.example.com/confirm/{token}",
        "white space": f"https://{HOST}/confirm/ {token}",
        "token not at the end": f"https://{HOST}/confirm/{token}?next=https://evil.tld",
        "another token in the link": f"https://{HOST}/confirm/{link_token()}",
        "token as a query value elsewhere": f"https://evil.tld/?t={token}",
    }


LINK_CASES = list(_links("t"))
#: A legacy link is always prefix + token, so these two cannot be written as one.
LEGACY_LINK_CASES = [
    c for c in LINK_CASES if c not in ("token not at the end", "another token in the link")
]


@pytest.mark.parametrize("case", LINK_CASES)
def test_links_outside_the_allowlist_are_refused(mailer: Mailer, case: str) -> None:
    token = link_token()
    link = _links(token)[case]
    answer = mailer.send(wrapping_token(link_token=token, link_url=link))
    mailer.refused(answer, 403, link, token)


@pytest.mark.parametrize("case", LEGACY_LINK_CASES)
def test_legacy_links_outside_the_allowlist_are_refused(mailer: Mailer, case: str) -> None:
    token = link_token()
    link = _links(token)[case]
    legacy = issue_legacy_token(
        MAILER_KEY,
        user_email=RECIPIENT,
        access_key="1234567890",
        link_prefix=link[: -len(token)],
        link_token=token,
    )
    mailer.refused(mailer.legacy(legacy), 403, link, token)


# --- 32. flooding one recipient -------------------------------------------------------------------


def test_a_hundred_requests_for_one_recipient_hit_the_rate_limit(mailer: Mailer) -> None:
    variants = [RECIPIENT, "Victim@example.org", "VICTIM@EXAMPLE.ORG", "victim@Example.Org"]
    answers = []
    for n in range(100):
        address = variants[n % len(variants)]
        answers.append(mailer.send(wrapping_token(address)))
    sent = [a for a in answers if a.status_code == 200]
    limited = [a for a in answers if a.status_code == 429]
    assert len(sent) == RATE_LIMIT and len(limited) == 100 - RATE_LIMIT
    assert len(mailer.sink.messages) == RATE_LIMIT
    for answer in limited:
        retry_after = int(answer.headers["Retry-After"])
        assert 0 < retry_after <= 3600
        assert answer.json["error"] == 5 and answer.json["id"] is None


def test_the_legacy_route_shares_the_rate_limit(mailer: Mailer) -> None:
    for _ in range(RATE_LIMIT):
        assert mailer.send(wrapping_token()).status_code == 200
    legacy = issue_legacy_token(
        MAILER_KEY,
        user_email=RECIPIENT,
        access_key="1234567890",
        link_prefix=LINK_PREFIX,
        link_token=link_token(),
    )
    answer = mailer.legacy(legacy)
    assert answer.status_code == 429 and int(answer.headers["Retry-After"]) > 0
    assert len(mailer.sink.messages) == RATE_LIMIT


# --- 24 at the mailer: caller-controlled values in headers ---------------------------------------

ENCODED_BREAKS = [
    "=?utf-8?q?Cat=0D=0ABcc:_attacker@evil.example?=",
    "Cat =?utf-8?b?DQpCY2M6IGF0dGFja2VyQGV2aWwuZXhhbXBsZQ==?=",
    "x=?utf-8?q?=0A?=Bcc: attacker@evil.example",
]


def _assert_no_injected_header(mailer: Mailer) -> None:
    for mail in mailer.sink.messages:
        assert mail.rcpt_tos == [RECIPIENT]
        assert mail.message["Bcc"] is None
        head = mail.raw.split(b"\r\n\r\n", 1)[0]
        assert b"\nBcc:" not in head and b"\rBcc:" not in head


@pytest.mark.parametrize("value", ENCODED_BREAKS)
def test_app_name_from_the_token_cannot_add_headers(mailer: Mailer, value: str) -> None:
    answer = mailer.send(wrapping_token(extra={"app_name": value}))
    assert answer.status_code in (200, 400)
    _assert_no_injected_header(mailer)
    assert answer.status_code == 400, "the value should be refused, not sent"


@pytest.mark.parametrize("value", ENCODED_BREAKS)
@pytest.mark.parametrize("variable", ["SENDER_NAME", "MAILER_SUBJECT_SIGNUP", "MAILER_APP_NAME"])
def test_header_values_from_the_environment_cannot_add_headers(
    make_mailer: Callable[..., Mailer], variable: str, value: str
) -> None:
    try:
        mailer = make_mailer(**{variable: value})
    except ConfigurationError as exc:  # refusing at start-up is the best outcome
        assert value not in str(exc)
        return
    answer = mailer.send(wrapping_token())
    assert answer.status_code < 500 or answer.json["error"] == 2
    _assert_no_injected_header(mailer)


def test_smtp_failures_echo_nothing(mailer: Mailer) -> None:
    token = link_token()
    wrapping = wrapping_token(link_token=token, link_url=LINK_PREFIX + token)
    for code in (451, 550):
        mailer.sink.fail_next(1, code)
        answer = mailer.send(wrapping)
        assert answer.status_code in (502, 503) and answer.json["error"] == 2
        assert_no_leak(answer.get_data(as_text=True), wrapping, token, MAILER_KEY.decode())
    mailer.sink.stop()
    answer = mailer.send(wrapping)
    assert answer.status_code == 503
    assert_no_leak(answer.get_data(as_text=True), wrapping, token, MAILER_KEY.decode())


# --- 23 at the mailer: logs ---------------------------------------------------------------------


def test_the_mailers_log_holds_no_token(mailer: Mailer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    tokens = [wrapping_token() for _ in range(3)]
    link = link_token()
    legacy = issue_legacy_token(
        MAILER_KEY,
        user_email=RECIPIENT,
        access_key="1234567890",
        link_prefix=LINK_PREFIX,
        link_token=link,
    )
    mailer.send(tokens[0])
    mailer.send(tokens[0])
    mailer.send(tokens[1][:-3] + "AAA")
    mailer.send(wrapping_token(link_token=link, link_url=f"https://evil.tld/{link}"))
    mailer.legacy(legacy)
    mailer.legacy(legacy + "x")
    mailer.sink.fail_next(1, 451)
    mailer.send(tokens[2])
    texts = app_log_texts(caplog)
    assert any("/v1/messages" in text for text in texts), "the request log was captured"
    for token in (*tokens, link, legacy):
        for part in (token, token.rsplit(".", 1)[1]):
            assert not any(part in text for text in texts), "a token is in the mailer's log"
    assert not any(MAILER_KEY.decode() in text for text in texts)


# --- round 2, family 6: a second spelling of a legacy token ---------------------------------------

#: Other spellings of one token (PyJWT verifies the first: see the test after these).
_RESPELLINGS: dict[str, Callable[[str], str]] = {
    "padding after the signature": lambda t: t + "=",
    "double padding": lambda t: t + "==",
    "padding in the payload": lambda t: t.replace(".", "=.", 2).replace("=.", ".", 1),
    "a trailing space": lambda t: t + " ",
}


def _legacy_without_jti() -> str:
    payload = {
        "user_email": RECIPIENT,
        "user_aut_key_or_otp": "1234567890",
        "email_link_url": LINK_PREFIX,
        "email_link_token": jwt.encode({"aut_email": RECIPIENT}, LINK_KEY, algorithm="HS256"),
    }
    return jwt.encode(payload, MAILER_KEY, algorithm="HS256")


@pytest.mark.parametrize("respell", list(_RESPELLINGS), ids=list(_RESPELLINGS))
def test_a_second_spelling_of_a_legacy_token_sends_nothing(mailer: Mailer, respell: str) -> None:
    """Only the canonical spelling is accepted, so the replay key (the token's hash when it
    has no ``jti``) cannot be dodged by spelling the same token again."""
    token = _legacy_without_jti()
    assert mailer.legacy(token).status_code == 200
    assert mailer.legacy(_RESPELLINGS[respell](token)).status_code in (401, 404)
    assert len(mailer.sink.messages) == 1


def test_pyjwt_verifies_a_padded_spelling() -> None:
    """Why the test above can fail: without the shape check, the padded token verifies."""
    token = _legacy_without_jti()
    assert jwt.decode(token + "=", MAILER_KEY, algorithms=["HS256"])["user_email"] == RECIPIENT


# --- round 2, family 7: loopback decided on literals ----------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("LOCALHOST", True),
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("127.0.0.1.evil.example", False),
        ("127.evil.example", False),
        ("localhost.evil.example", False),
        ("0x7f.0.0.1", False),
        ("10.0.0.1", False),
        ("example.com", False),
    ],
)
def test_loopback_is_decided_on_ip_literals_and_localhost(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


@pytest.mark.parametrize("host", ["127.0.0.1.evil.example", "127.evil.example"])
def test_plain_text_is_refused_for_a_name_that_starts_with_127(host: str) -> None:
    with pytest.raises(ConfigurationError, match="MAILER_SMTP_SECURITY=none"):
        MailerSettings.from_env({**_env_for_host(host), "MAILER_SMTP_SECURITY": "none"})
    with pytest.raises(ConfigurationError, match="https"):
        RemoteTransport(mailer_url=f"http://{host}/", mailer_secret=MAILER_KEY)
    with pytest.raises(ConfigurationError, match="https"):
        MailerSettings.from_env(
            {**_env_for_host("127.0.0.1"), "MAILER_ALLOWED_LINK_PREFIXES": f"http://{host}/c/"}
        )


def test_plain_text_stays_allowed_on_loopback() -> None:
    """Control: the same settings on a loopback literal are accepted."""
    settings = MailerSettings.from_env(
        {**_env_for_host("127.0.0.1"), "MAILER_SMTP_SECURITY": "none"}
    )
    assert settings.smtp.security == "none"
    assert RemoteTransport(mailer_url="http://127.0.0.1:8000/", mailer_secret=MAILER_KEY)


def _env_for_host(host: str) -> dict[str, str]:
    return {
        "JWT_MAILER_SECRET": MAILER_KEY.decode(),
        "MAILERTOGO_SMTP_HOST": host,
        "MAILERTOGO_DOMAIN": "mailer.example",
        "MAILER_ALLOWED_LINK_PREFIXES": LINK_PREFIX,
    }
