"""The wrapping token: its own kind, bounded lifetime, legacy payloads, link peeking."""

from __future__ import annotations

import time
import warnings

import jwt
import pytest
import time_machine

from flask_confirm_mail.errors import ExpiredToken, InvalidToken
from flask_confirm_mail.mailer.wire import (
    MAX_WRAPPING_LIFETIME,
    WRAPPING_AUDIENCE,
    WRAPPING_TOKEN_TYPE,
    clean_extra,
    issue_legacy_token,
    issue_wrapping_token,
    peek_link_token,
    verify_legacy_token,
    verify_wrapping_token,
)

from .tokens import (
    LINK_PREFIX,
    LINK_SECRET,
    MAILER_SECRET,
    WRONG_SECRET,
    link_token,
    original_link_token,
    original_token,
)

KEY = MAILER_SECRET.encode()


def issue(**overrides: object) -> str:
    token = link_token("ann@example.com")
    values: dict[str, object] = {
        "recipient": "ann@example.com",
        "template": "signup",
        "link_url": LINK_PREFIX + token,
        "link_token": token,
    }
    values.update(overrides)
    return issue_wrapping_token(KEY, **values)  # type: ignore[arg-type]


def test_round_trip() -> None:
    token = issue(extra={"user_name": "Ann", "unknown": "dropped", "access_key": 12})
    header = jwt.get_unverified_header(token)
    assert header["typ"] == WRAPPING_TOKEN_TYPE
    claims = verify_wrapping_token(token, [KEY])
    assert claims.recipient == "ann@example.com"
    assert claims.template == "signup"
    assert claims.link_url.endswith(claims.link_token)
    assert claims.extra == {"user_name": "Ann"}
    issued_at = jwt.decode(token, options={"verify_signature": False})["iat"]
    assert claims.expires_at == issued_at + 300
    assert len(claims.replay_key) >= 16
    assert claims.link_token not in repr(claims)


def test_each_token_has_its_own_jti() -> None:
    first, second = verify_wrapping_token(issue(), [KEY]), verify_wrapping_token(issue(), [KEY])
    assert first.replay_key != second.replay_key


def test_previous_key_still_verifies() -> None:
    token = issue_wrapping_token(
        WRONG_SECRET.encode(),
        recipient="a@example.com",
        template="change",
        link_url="https://app.example/confirm/x",
        link_token="x",
    )
    assert verify_wrapping_token(token, [KEY, WRONG_SECRET.encode()]).template == "change"


@pytest.mark.parametrize("lifetime", [0, MAX_WRAPPING_LIFETIME + 1])
def test_issue_refuses_unbounded_lifetime(lifetime: int) -> None:
    with pytest.raises(ValueError):
        issue(lifetime=lifetime)


def test_issue_refuses_unknown_template() -> None:
    with pytest.raises(ValueError):
        issue(template="resetkey")


def test_expiry_follows_the_clock() -> None:
    with time_machine.travel(1_800_000_000, tick=False):
        token = issue()
    with time_machine.travel(1_800_000_000 + 299, tick=False):
        verify_wrapping_token(token, [KEY])
    with time_machine.travel(1_800_000_000 + 301, tick=False), pytest.raises(ExpiredToken):
        verify_wrapping_token(token, [KEY])
    with time_machine.travel(1_800_000_000 + 320, tick=False):
        verify_wrapping_token(token, [KEY], leeway=30)


def test_a_link_token_is_not_a_wrapping_token() -> None:
    with pytest.raises(InvalidToken) as info:
        verify_wrapping_token(link_token("a@example.com", secret=MAILER_SECRET), [KEY])
    assert info.value.reason == "wrong_kind"


def test_a_wrapping_token_is_not_a_legacy_token() -> None:
    with pytest.raises(InvalidToken):
        verify_legacy_token(issue(), [KEY])


def test_extra_values_with_control_characters_are_refused() -> None:
    with pytest.raises(InvalidToken):
        clean_extra({"user_name": "Ann\r\nBcc: x@evil.tld"})
    with pytest.raises(InvalidToken):
        clean_extra({"app_name": "x" * 201})


def test_legacy_payload_of_the_original_client() -> None:
    payload = verify_legacy_token(original_token("bob@example.com"), [KEY])
    assert payload.recipient == "bob@example.com"
    assert payload.extra["access_key"] == "Kx7-Q2pL9m"
    assert payload.link_url == LINK_PREFIX + original_link_token("bob@example.com")
    assert payload.replay_key.startswith("legacy:") and payload.expires_at is None


def test_legacy_early_version_key() -> None:
    token = original_token("bob@example.com", user_aut_key_or_otp=None, user_aut_key="k1")
    assert verify_legacy_token(token, [KEY]).extra["access_key"] == "k1"


def test_issue_legacy_token_writes_the_original_payload() -> None:
    token = issue_legacy_token(
        KEY,
        user_email="bob@example.com",
        access_key="AK",
        link_prefix=LINK_PREFIX,
        link_token="tok",
    )
    claims = jwt.decode(token, MAILER_SECRET, algorithms=["HS256"])
    assert claims["user_email"] == "bob@example.com"
    assert claims["user_aut_key_or_otp"] == claims["user_aut_key"] == "AK"
    assert claims["email_link_url"] == LINK_PREFIX
    assert claims["email_link_token"] == "tok"
    assert claims["exp"] - claims["iat"] <= MAX_WRAPPING_LIFETIME
    payload = verify_legacy_token(token, [KEY])
    assert payload.replay_key == claims["jti"]


@pytest.mark.parametrize(
    "overrides",
    [
        {"user_email": 5},
        {"email_link_url": ""},
        {"user_aut_key_or_otp": {"nested": 1}},
        {"user_aut_key_or_otp": "a\nb"},
        {"jti": 123},
        {"iat": int(time.time()), "exp": int(time.time()) + 900},
    ],
)
def test_legacy_bad_claims(overrides: dict[str, object]) -> None:
    with pytest.raises(InvalidToken):
        verify_legacy_token(original_token("bob@example.com", **overrides), [KEY])


def test_legacy_short_key_token_signed_by_tests_is_refused() -> None:
    with warnings.catch_warnings():  # newer PyJWT warns about the short key
        warnings.simplefilter("ignore")
        token = jwt.encode({"user_email": "a@example.com"}, "secret", algorithm="HS256")
    with pytest.raises(InvalidToken):
        verify_legacy_token(token, [KEY])


def test_peek_link_token() -> None:
    peeked = peek_link_token(link_token("ann@example.com", lifetime=7200))
    assert peeked is not None
    assert peeked.email == "ann@example.com"
    assert peeked.lifetime == 7200
    original = peek_link_token(original_link_token("bob@example.com"))
    assert original is not None
    assert original.email == "bob@example.com"
    assert original.lifetime is None
    assert peek_link_token("not a token") is None
    wrong_aud = jwt.encode(
        {"email": "a@example.com", "aud": WRAPPING_AUDIENCE},
        LINK_SECRET,
        algorithm="HS256",
        headers={"typ": "cm-link+jwt"},
    )
    assert peek_link_token(wrong_aud) is None
