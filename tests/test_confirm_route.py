"""The /confirm/<token> route: outcomes, bad tokens, rotation, GET behaviour."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from flask_confirm_mail import email_confirmed
from tests.apps import LINK_SECRET, SECRET_KEY, User, db
from tests.conftest import link_from
from tests.support.smtp_server import SMTPSink
from tests.support.tokens import link_claims, raw_token, sign

EMAIL = "kitty@example.org"


def signed_up(app: Flask, smtp_server: SMTPSink, email: str = EMAIL) -> tuple[int, str]:
    """Sign up through the view and return the user id and the link path from the email."""
    response = app.test_client().post("/signup", data={"email": email})
    assert response.status_code == 201
    mail = smtp_server.wait_for(1)[-1]
    link = link_from(mail)
    return int(response.json["id"]), link.removeprefix("https://app.example.com")


def user_row(app: Flask, uid: int) -> dict[str, Any]:
    with app.app_context():
        user = db.session.get(User, uid)
        if user is None:
            return {}
        return {
            "email": user.email,
            "confirmed": user.email_confirmed_at,
            "pending": user.pending_email,
        }


def _bad_tokens(uid: int) -> dict[str, str]:
    good = link_claims(uid, EMAIL)
    rsa_header = {"alg": "RS256", "typ": "cm-link+jwt"}
    tokens = {
        "garbage": "not-a-token",
        "two segments": "abc.def",
        "wrong signature": sign(good, "another-secret-that-is-long-enough-0123"),
        "alg none": raw_token({"alg": "none", "typ": "cm-link+jwt"}, good),
        "HS512 header": sign(good, LINK_SECRET, alg="HS512"),
        "RS256 header": raw_token(rsa_header, good, b"x" * 256),
        "wrong purpose": sign(link_claims(uid, EMAIL, aud="some-other-purpose"), LINK_SECRET),
        "wrong typ": sign(good, LINK_SECRET, typ="JWT"),
        "future iat": sign(
            link_claims(uid, EMAIL, iat=good["iat"] + 3600, exp=good["exp"] + 3600), LINK_SECRET
        ),
        "non-numeric exp": sign(link_claims(uid, EMAIL, exp="abc"), LINK_SECRET),
        "float exp": sign(link_claims(uid, EMAIL, exp=1e300), LINK_SECRET),
        "subject list": raw_token({}, {}),  # replaced below
        "unknown user": sign(link_claims(uid + 1000, EMAIL), LINK_SECRET),
        "other address": sign(link_claims(uid, "other@example.org"), LINK_SECRET),
        "signed with SECRET_KEY": sign(good, SECRET_KEY),
        "16 KB token": sign(link_claims(uid, EMAIL, pad="x" * 16_000), LINK_SECRET),
        "lifetime too long": sign(link_claims(uid, EMAIL, lifetime=400 * 86400), LINK_SECRET),
    }
    tokens["subject list"] = sign(link_claims(uid, EMAIL, sub=[uid]), LINK_SECRET)
    for claim in ("sub", "email", "aud", "iat", "exp", "jti"):
        tokens[f"missing {claim}"] = sign(link_claims(uid, EMAIL, **{claim: None}), LINK_SECRET)
    return tokens


BAD_TOKEN_NAMES = [
    "garbage",
    "two segments",
    "wrong signature",
    "alg none",
    "HS512 header",
    "RS256 header",
    "wrong purpose",
    "wrong typ",
    "future iat",
    "non-numeric exp",
    "float exp",
    "subject list",
    "unknown user",
    "other address",
    "signed with SECRET_KEY",
    "16 KB token",
    "lifetime too long",
    "missing sub",
    "missing email",
    "missing aud",
    "missing iat",
    "missing exp",
    "missing jti",
]


@pytest.mark.parametrize("name", BAD_TOKEN_NAMES)
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_bad_tokens_are_refused(
    make_app: Any, smtp_server: SMTPSink, name: str, method: str
) -> None:
    app = make_app()
    uid, _ = signed_up(app, smtp_server)
    token = _bad_tokens(uid)[name]
    before = user_row(app, uid)
    client = app.test_client()
    page = client.open(f"/confirm/{token}", method=method)
    assert page.status_code == 400
    assert b"We could not confirm your address" in page.data
    assert page.data.split(b"<main")[1].count(b"not valid") == 1  # said once on the page
    assert token.encode() not in page.data
    answer = client.open(f"/confirm/{token}", method=method, headers={"Accept": "application/json"})
    assert answer.status_code == 400
    assert answer.json["status"] == "invalid"
    assert user_row(app, uid) == before
    assert before["confirmed"] is None


def test_expired_link_offers_resend(make_app: Any, smtp_server: SMTPSink, clock: Any) -> None:
    app = make_app()
    uid, path = signed_up(app, smtp_server)
    clock.shift(48 * 3600 + 31)
    client = app.test_client()
    page = client.post(path)
    assert page.status_code == 410
    assert b"expired" in page.data and b'action="/confirm/resend"' in page.data
    answer = client.post(path, headers={"Accept": "application/json"})
    assert answer.json == {
        "status": "expired",
        "message": "This confirmation link has expired.",
        "resend_url": "/confirm/resend",
    }
    assert user_row(app, uid)["confirmed"] is None


def test_deleted_user_link_is_invalid(make_app: Any, smtp_server: SMTPSink) -> None:
    app = make_app()
    uid, path = signed_up(app, smtp_server)
    with app.app_context():
        db.session.delete(db.session.get(User, uid))
        db.session.commit()
    assert app.test_client().post(path).status_code == 400


def test_empty_token_is_not_found(app: Flask) -> None:
    assert app.test_client().post("/confirm/").status_code == 404


def test_get_never_confirms_by_default(make_app: Any, smtp_server: SMTPSink) -> None:
    app = make_app()
    uid, path = signed_up(app, smtp_server)
    client = app.test_client()
    for _ in range(3):
        page = client.get(path)
        assert page.status_code == 200
        assert b'method="post"' in page.data and b"<script" not in page.data
    assert user_row(app, uid)["confirmed"] is None


def test_confirm_on_get_option(make_app: Any, smtp_server: SMTPSink) -> None:
    app = make_app(config={"CONFIRM_MAIL_CONFIRM_ON_GET": True})
    uid, path = signed_up(app, smtp_server)
    assert app.test_client().get(path).status_code == 200
    assert user_row(app, uid)["confirmed"] is not None


def test_confirmed_endpoint_redirect_with_flash(make_app: Any, smtp_server: SMTPSink) -> None:
    app = make_app(config={"CONFIRM_MAIL_CONFIRMED_ENDPOINT": "members"})
    _, path = signed_up(app, smtp_server)
    client = app.test_client()
    response = client.post(path)
    assert response.status_code == 303
    assert response.headers["Location"] == "/members"
    with client.session_transaction() as session:
        assert session["_flashes"] == [("success", "Your email address is confirmed.")]


def test_second_use_is_already_confirmed_and_signal_fires_once(
    make_app: Any, smtp_server: SMTPSink
) -> None:
    app = make_app()
    uid, path = signed_up(app, smtp_server)
    seen: list[str] = []

    def on_confirmed(sender: Flask, **kwargs: Any) -> None:
        seen.append(kwargs["email"])

    with email_confirmed.connected_to(on_confirmed, app):
        first = app.test_client().post(path, headers={"Accept": "application/json"})
        second = app.test_client().post(path, headers={"Accept": "application/json"})
    assert first.json["status"] == "confirmed"
    assert second.json["status"] == "already_confirmed"
    assert second.status_code == 200
    assert seen == [EMAIL]


def test_rotated_secret_still_verifies(make_app: Any, smtp_server: SMTPSink) -> None:
    old_app = make_app()
    uid, path = signed_up(old_app, smtp_server)
    new_secret = "a-brand-new-link-secret-0123456789abcdef"
    rotated = make_app(config={"CONFIRM_MAIL_SECRET": [LINK_SECRET, new_secret]})
    answer = rotated.test_client().post(path, headers={"Accept": "application/json"})
    assert answer.json["status"] == "confirmed"
    dropped = make_app(config={"CONFIRM_MAIL_SECRET": new_secret})
    answer = dropped.test_client().post(path, headers={"Accept": "application/json"})
    assert answer.json["status"] == "invalid"


def test_a_link_key_derived_from_secret_key_rotates_with_its_fallbacks(
    make_app: Any, smtp_server: SMTPSink
) -> None:
    old_key, new_key = "an-old-secret-key-0123456789abcdef", "a-new-secret-key-0123456789abcdef"
    old_app = make_app(config={"CONFIRM_MAIL_SECRET": None, "SECRET_KEY": old_key})
    _, path = signed_up(old_app, smtp_server)
    rotated = make_app(
        config={
            "CONFIRM_MAIL_SECRET": None,
            "SECRET_KEY": new_key,
            "SECRET_KEY_FALLBACKS": [old_key],
        }
    )
    dropped = make_app(config={"CONFIRM_MAIL_SECRET": None, "SECRET_KEY": new_key})
    refused = dropped.test_client().post(path, headers={"Accept": "application/json"})
    assert refused.json["status"] == "invalid"
    answer = rotated.test_client().post(path, headers={"Accept": "application/json"})
    assert answer.json["status"] == "confirmed"


def test_confirmed_and_already_confirmed_pages_lead_on(
    make_app: Any, smtp_server: SMTPSink
) -> None:
    app = make_app()
    _, path = signed_up(app, smtp_server)
    client = app.test_client()
    done = client.post(path)
    again = client.post(path)
    assert done.status_code == 200 and b"Email confirmed" in done.data
    assert again.status_code == 200 and b"Already confirmed" in again.data
    for page in (done, again):
        assert b'<a href="/">Continue to app.example.com</a>' in page.data


def test_emails_start_their_sentence_with_a_capital(make_app: Any, smtp_server: SMTPSink) -> None:
    signed_up(make_app(), smtp_server)
    body = smtp_server.wait_for(1)[-1].message.get_body(("plain",))
    assert body is not None
    text = body.get_content().replace("\r\n", "\n")
    assert "Hello,\n\nPlease confirm your email address for app.example.com" in text


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/confirm/a/b", 404),
        ("POST", "/confirm/resend/extra", 404),
        ("PUT", "/confirm/some-token", 405),
        ("DELETE", "/confirm/resend", 405),
        ("PATCH", "/confirm/code", 405),
    ],
)
def test_a_path_or_method_no_route_takes_is_answered_like_the_routes(
    app: Flask, method: str, path: str, status: int
) -> None:
    client = app.test_client()
    answer = client.open(path, method=method, headers={"Accept": "application/json"})
    assert answer.status_code == status and answer.json is not None
    assert answer.json["status"] == "error"
    page = client.open(path, method=method)
    assert page.status_code == status and b"<main" in page.data
    if status == 405:
        assert set(answer.headers["Allow"].split(", ")) == {"GET", "HEAD", "POST", "OPTIONS"}
    assert client.get("/elsewhere", headers={"Accept": "application/json"}).json is None
