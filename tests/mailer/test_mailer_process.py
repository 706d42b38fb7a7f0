"""End to end: the mailer as a real gunicorn / flask-run process, mail to a real SMTP server."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jwt
import pytest

from tests.support.smtp_server import SMTPSink

from .conftest import messages_to
from .process import MailerProcess
from .tokens import (
    LINK_PREFIX,
    LINK_SECRET,
    MAILER_AUD,
    WRONG_SECRET,
    link_token,
    original_link_token,
    original_token,
    sign,
    unique_address,
    v1_claims,
    v1_token,
)


def assert_nothing_sent(sink: SMTPSink, recipient: str) -> None:
    time.sleep(0.05)  # the mailer answers after SMTP; this only guards against a bug
    assert messages_to(sink, recipient) == []


def test_v1_sends_one_email(mailer: MailerProcess, mailer_sink: SMTPSink) -> None:
    recipient = unique_address()
    token = link_token(recipient)
    answer = mailer.post(
        v1_token(
            recipient,
            link_url=LINK_PREFIX + token,
            link_token=token,
            extra={"user_name": "Ann O'Neil"},
        )
    )

    assert answer.status == 200
    assert answer.json["error"] == 0
    assert answer.json["msg"] == "All ok"
    [mail] = messages_to(mailer_sink, recipient)
    message = mail.message
    assert message["Message-ID"] == answer.json["id"]
    assert message["From"] == "CatLoader <noreply@mailer.example>"
    assert mail.mail_from == "noreply@mailer.example"
    assert message["Subject"] == "Confirm and access CatLoader"
    assert message["Date"]
    assert message.get_content_type() == "multipart/alternative"
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None
    assert LINK_PREFIX + token in text.get_content()
    assert f'href="{LINK_PREFIX}{token}"' in html.get_content()
    assert "24 hours" in text.get_content()
    assert "Ann O&#39;Neil" in html.get_content()


def test_change_template_has_the_original_subject(
    mailer: MailerProcess, mailer_sink: SMTPSink
) -> None:
    recipient = unique_address()
    assert mailer.post(v1_token(recipient, template="change")).status == 200
    [mail] = messages_to(mailer_sink, recipient)
    assert mail.message["Subject"] == "Confirm changed email/login"


def test_same_token_fifty_times_sends_one_email(
    mailer: MailerProcess, mailer_sink: SMTPSink
) -> None:
    recipient = unique_address()
    token = v1_token(recipient)

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda _: mailer.post(token), range(50)))

    assert {answer.status for answer in answers} <= {200, 409}
    sent = [answer.json for answer in answers if answer.status == 200]
    assert len({body["id"] for body in sent}) == 1
    assert len(messages_to(mailer_sink, recipient)) == 1
    again = mailer.post(token)
    assert again.status == 200
    assert again.json["msg"] == "Already sent"
    assert again.json["id"] == sent[0]["id"]
    assert len(messages_to(mailer_sink, recipient)) == 1


def _without(claim: str) -> Callable[[str], str]:
    return lambda recipient: v1_token(recipient, **{claim: None})


def _unsigned(claims: dict[str, Any]) -> str:
    return jwt.encode(claims, None, algorithm="none", headers={"typ": "cm-mailer+jwt"})


REFUSED_TOKENS = {
    "unsigned": lambda r: _unsigned(v1_claims(r)),
    "wrong secret": lambda r: sign(v1_claims(r), secret=WRONG_SECRET),
    "link secret": lambda r: sign(v1_claims(r), secret=LINK_SECRET),
    "link token as wrapping token": lambda r: link_token(r, secret=LINK_SECRET),
    "no typ header": lambda r: sign(v1_claims(r), typ=None),
    "expired": lambda r: v1_token(r, iat=int(time.time()) - 900, exp=int(time.time()) - 300),
    "exp too far ahead": lambda r: v1_token(r, exp=int(time.time()) + 601),
    "iat in the future": lambda r: v1_token(
        r, iat=int(time.time()) + 400, exp=int(time.time()) + 500
    ),
    "other audience": lambda r: v1_token(r, aud="flask-confirm-mail:link"),
    "unknown template": lambda r: v1_token(r, template="resetkey"),
    "not a token": lambda r: "not-a-token",
    **{
        f"missing {claim}": _without(claim)
        for claim in (
            "aud",
            "iat",
            "exp",
            "jti",
            "recipient",
            "template",
            "link_url",
            "link_token",
        )
    },
}


@pytest.mark.parametrize("case", sorted(REFUSED_TOKENS))
def test_refused_tokens_send_nothing(
    mailer: MailerProcess, mailer_sink: SMTPSink, case: str
) -> None:
    recipient = unique_address()
    answer = mailer.post(REFUSED_TOKENS[case](recipient))

    assert answer.status in (400, 401)
    assert answer.json["error"] == 1
    assert answer.json["id"] is None
    assert_nothing_sent(mailer_sink, recipient)


@pytest.mark.parametrize(
    "locale",
    [
        "",
        "d",
        "deutsch",
        "de_",
        "de AT",
        "de\r\nBcc: x",
        "../de",
        "de" + "_abcdefgh" * 4,
        49,
        ["de"],
    ],
)
@pytest.mark.parametrize("wire", ["v1", "legacy"])
def test_a_bad_locale_is_400_and_sends_nothing(
    mailer: MailerProcess, mailer_sink: SMTPSink, wire: str, locale: Any
) -> None:
    recipient = unique_address()
    if wire == "v1":
        answer = mailer.post(v1_token(recipient, locale=locale))
        msg = "Problem with token (bad_claims)"
    else:
        answer = mailer.get("emailservice-cat/signup", original_token(recipient, locale=locale))
        msg = "Problem with token"

    assert answer.status == 400
    assert answer.json == {"error": 1, "msg": msg, "id": None}
    assert_nothing_sent(mailer_sink, recipient)


def test_missing_authorization_is_401(mailer: MailerProcess) -> None:
    answer = mailer.request("POST", "/v1/messages")
    assert answer.status == 401
    assert answer.json == {"error": 1, "msg": answer.json["msg"], "id": None}


def test_token_in_the_url_is_not_accepted(mailer: MailerProcess, mailer_sink: SMTPSink) -> None:
    recipient = unique_address()
    token = v1_token(recipient)
    mailer.tokens.append(token)
    answer = mailer.request("POST", f"/v1/messages?token={token}")
    assert answer.status == 401
    assert_nothing_sent(mailer_sink, recipient)


BAD_LINKS = {
    "javascript": lambda token: "javascript:alert(1)//" + token,
    "data": lambda token: "data:text/html,<script>alert(1)</script>/" + token,
    "http to a non-loopback host": lambda token: "http://app.example/confirm/" + token,
    "lookalike host": lambda token: "https://app.example.evil.tld/confirm/" + token,
    "user info": lambda token: "https://app.example@evil.tld/confirm/" + token,
    "other path": lambda token: "https://app.example/admin/" + token,
    "dot segments": lambda token: "https://app.example/confirm/../admin/" + token,
    "other port": lambda token: "https://app.example:8443/confirm/" + token,
    "backslash": lambda token: "https://app.example\\@evil.tld/confirm/" + token,
}


@pytest.mark.parametrize("case", sorted(BAD_LINKS))
def test_links_outside_the_allowlist_are_refused(
    mailer: MailerProcess, mailer_sink: SMTPSink, case: str
) -> None:
    recipient = unique_address()
    token = link_token(recipient)
    answer = mailer.post(v1_token(recipient, link_url=BAD_LINKS[case](token), link_token=token))

    assert answer.status == 403
    assert answer.json["error"] == 3
    assert_nothing_sent(mailer_sink, recipient)


def test_link_token_must_be_the_token_in_the_link(
    mailer: MailerProcess, mailer_sink: SMTPSink
) -> None:
    recipient = unique_address()
    in_link, claimed = link_token(recipient), link_token(recipient)
    answer = mailer.post(v1_token(recipient, link_url=LINK_PREFIX + in_link, link_token=claimed))

    assert answer.status == 403
    assert answer.json["error"] == 3
    assert_nothing_sent(mailer_sink, recipient)


@pytest.mark.parametrize(
    "recipient",
    [
        "victim@example.com\r\nBcc: many@evil.tld",
        "victim@example.com\nBcc: many@evil.tld",
        "one@example.com, two@example.com",
        "one@example.com;two@example.com",
        "Victim <victim@example.com>",
        "victim@example.com (comment)",
        "not-an-address",
    ],
)
def test_bad_recipients_are_refused(
    mailer: MailerProcess, mailer_sink: SMTPSink, recipient: str
) -> None:
    count = len(mailer_sink.messages)
    token = link_token(recipient)
    answer = mailer.post(v1_token(recipient, link_url=LINK_PREFIX + token, link_token=token))

    assert answer.status == 400
    assert answer.json["error"] == 4
    time.sleep(0.05)
    assert len(mailer_sink.messages) == count


def test_recipient_must_be_the_link_tokens_email(
    mailer: MailerProcess, mailer_sink: SMTPSink
) -> None:
    recipient, other = unique_address("asked"), unique_address("linked")
    token = link_token(other)
    answer = mailer.post(v1_token(recipient, link_url=LINK_PREFIX + token, link_token=token))

    assert answer.status == 400
    assert answer.json["error"] == 4
    assert_nothing_sent(mailer_sink, recipient)
    assert_nothing_sent(mailer_sink, other)


def test_rate_limit_per_recipient(mailer: MailerProcess, mailer_sink: SMTPSink) -> None:
    recipient = unique_address("flooded")
    for _ in range(5):
        assert mailer.post(v1_token(recipient)).status == 200

    answer = mailer.post(v1_token(recipient))

    assert answer.status == 429
    assert answer.json["error"] == 5
    assert 0 < int(answer.headers["Retry-After"]) <= 3600
    assert len(messages_to(mailer_sink, recipient)) == 5
    other = unique_address()
    assert mailer.post(v1_token(other)).status == 200


def test_legacy_get_with_the_original_payload(mailer: MailerProcess, mailer_sink: SMTPSink) -> None:
    recipient = unique_address("legacy")
    token = original_token(recipient)

    answer = mailer.get("emailservice-cat/signup", token)

    assert answer.status == 200
    assert answer.json["error"] == 0
    assert answer.json["msg"] == "All ok"
    [mail] = messages_to(mailer_sink, recipient)
    text = mail.message.get_body(("plain",))
    assert text is not None
    body = text.get_content()
    assert LINK_PREFIX + original_link_token(recipient) in body
    assert "Kx7-Q2pL9m" in body
    assert mail.message["Subject"] == "Confirm and access CatLoader"


@pytest.mark.parametrize(
    ("path", "subject"),
    [
        ("emailservice", "Confirm and access CatLoader"),
        ("emailservice-usr/signup", "Confirm and access CatLoader"),
        ("emailservice-cat/change", "Confirm changed email/login"),
        ("emailservice-usr/change", "Confirm changed email/login"),
    ],
)
def test_legacy_routes(
    mailer: MailerProcess, mailer_sink: SMTPSink, path: str, subject: str
) -> None:
    recipient = unique_address("legacy")
    # The article's version read ``user_aut_key``.
    token = original_token(recipient, user_aut_key_or_otp=None, user_aut_key="OldKey123")
    answer = mailer.get(path, token)

    assert answer.status == 200, answer
    [mail] = messages_to(mailer_sink, recipient)
    assert mail.message["Subject"] == subject


LEGACY_REFUSED = {
    "wrong secret": lambda r: jwt.encode(
        {"user_email": r, "email_link_url": LINK_PREFIX, "email_link_token": "x"},
        WRONG_SECRET,
        algorithm="HS256",
    ),
    "missing recipient": lambda r: original_token(r, user_email=None),
    "missing link token": lambda r: original_token(r, email_link_token=None),
    "v1 token": lambda r: v1_token(r),
    "expired": lambda r: original_token(r, exp=int(time.time()) - 100),
    "exp too far ahead": lambda r: original_token(r, exp=int(time.time()) + 3600),
    "audience": lambda r: original_token(r, aud=MAILER_AUD),
}


@pytest.mark.parametrize("case", sorted(LEGACY_REFUSED))
def test_legacy_refusals_answer_problem_with_token(
    mailer: MailerProcess, mailer_sink: SMTPSink, case: str
) -> None:
    recipient = unique_address("legacy")
    answer = mailer.get("emailservice-cat/signup", LEGACY_REFUSED[case](recipient))

    assert 400 <= answer.status < 500
    assert answer.json == {"error": 1, "msg": "Problem with token", "id": None}
    assert_nothing_sent(mailer_sink, recipient)


@pytest.mark.parametrize(
    ("case", "overrides", "error"),
    [
        ("link outside allowlist", {"email_link_url": "https://evil.tld/confirm/"}, 3),
        ("javascript link", {"email_link_url": "javascript:alert(1)//"}, 3),
        ("recipient with CRLF", {"user_email": "a@example.com\r\nBcc: b@evil.tld"}, 4),
        ("two recipients", {"user_email": "a@example.com,b@example.com"}, 4),
    ],
)
def test_legacy_keeps_allowlist_and_recipient_checks(
    mailer: MailerProcess,
    mailer_sink: SMTPSink,
    case: str,
    overrides: dict[str, str],
    error: int,
) -> None:
    recipient = unique_address("legacy")
    count = len(mailer_sink.messages)
    answer = mailer.get("emailservice-cat/signup", original_token(recipient, **overrides))

    assert 400 <= answer.status < 500
    assert answer.json["error"] == error
    time.sleep(0.05)
    assert len(mailer_sink.messages) == count


def test_legacy_token_with_jti_is_sent_once(mailer: MailerProcess, mailer_sink: SMTPSink) -> None:
    recipient = unique_address("legacy")
    now = int(time.time())
    token = original_token(recipient, iat=now, exp=now + 300, jti=uuid.uuid4().hex)

    first = mailer.get("emailservice-cat/signup", token)
    second = mailer.get("emailservice-cat/signup", token)

    assert first.status == second.status == 200
    assert second.json["msg"] == "Already sent"
    assert len(messages_to(mailer_sink, recipient)) == 1


def test_unknown_legacy_service_is_404(mailer: MailerProcess) -> None:
    answer = mailer.get("emailservice-cat/resetkey", original_token(unique_address()))
    assert answer.status == 404
    assert answer.json["error"] == 7


def test_no_500_for_odd_requests(mailer: MailerProcess) -> None:
    for method, path, headers in [
        ("GET", "/v1/messages", {}),
        ("POST", "/v1/messages", {"Authorization": "Basic dXNlcjpwdw=="}),
        ("POST", "/v1/messages", {"Authorization": "Bearer " + "a" * 5000}),
        ("POST", "/v1/messages", {"Authorization": "Bearer a.b.c"}),
        ("GET", "/emailservice-cat/signup/%00%ff", {}),
        ("GET", "/nothing-here", {}),
    ]:
        answer = mailer.request(method, path, headers)
        assert 400 <= answer.status < 500, (method, path, answer)
        assert set(answer.json) == {"error", "msg", "id"}


def test_legacy_off_is_404_under_flask_run(
    flask_run_mailer: MailerProcess, mailer_sink: SMTPSink
) -> None:
    recipient = unique_address("legacy")
    answer = flask_run_mailer.get("emailservice-cat/signup", original_token(recipient))

    assert answer.status == 404
    assert answer.json["error"] == 7
    assert_nothing_sent(mailer_sink, recipient)
    assert flask_run_mailer.post(v1_token(recipient)).status == 200
    assert len(messages_to(mailer_sink, recipient)) == 1


def test_starttls_and_auth(secure_mailer: MailerProcess, secure_mailer_sink: SMTPSink) -> None:
    recipient = unique_address("secure")
    answer = secure_mailer.post(v1_token(recipient))

    assert answer.status == 200, answer
    [mail] = messages_to(secure_mailer_sink, recipient)
    assert mail.mail_from == "noreply@mailer.example"
    legacy = secure_mailer.get("emailservice-cat/signup", original_token(recipient))
    assert legacy.status == 404


def test_logs_hold_no_token(
    mailer: MailerProcess, flask_run_mailer: MailerProcess, mailer_sink: SMTPSink
) -> None:
    recipient = unique_address("logged")
    mailer.post(v1_token(recipient))
    mailer.get("emailservice-cat/signup", original_token(recipient))
    mailer.get("emailservice", original_token(recipient))
    flask_run_mailer.get("emailservice-usr/change", original_token(recipient))
    flask_run_mailer.post(sign(v1_claims(recipient), secret=WRONG_SECRET))
    time.sleep(0.2)  # let the servers write their access lines

    for process in (mailer, flask_run_mailer):
        log = process.log()
        assert "POST /v1/messages" in log
        assert "[redacted]" in log
        assert process.leaked_tokens() == []
    assert "auth=" in mailer.log()
