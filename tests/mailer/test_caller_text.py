"""What a caller may write into an email: plain short names, a fixed app name, exact links."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from flask_confirm_mail.mailer.caller_text import MAX_LENGTHS, TextRefused, check_extra
from flask_confirm_mail.mailer.wire import ErrorCode
from tests.support.smtp_server import SMTPSink

from .tokens import LINK_PREFIX, link_token, sign, unique_address, v1_claims, v1_token

OTHER_SECRET = "second-caller-secret-0123456789-abcdefghijkl"


def post(client: FlaskClient, token: str) -> Any:
    return client.post("/v1/messages", headers={"Authorization": f"Bearer {token}"})


def signup(recipient: str, *, secret: str | None = None, **extra: str) -> str:
    link = link_token(recipient)
    fields = {"link_url": LINK_PREFIX + link, "link_token": link, "extra": extra}
    if secret is None:
        return v1_token(recipient, **fields)
    return sign(v1_claims(recipient, **fields), secret=secret)


REFUSED = {
    "url in the user name": ("user_name", "Ann https://evil.example/login"),
    "bare domain": ("user_name", "visit evil.example now"),
    "domain in the app name": ("app_name", "Paypal.com support"),
    "address": ("user_name", "ann@evil.example"),
    "markup": ("user_name", "<b>Ann</b>"),
    "markdown link": ("app_name", "[Cats](x)"),
    "bidi override": ("user_name", "Ann\u202egnp.exe"),
    "zero-width space": ("app_name", "Ca\u200bts"),
    "two spaces": ("user_name", "Ann  Lee"),
    "leading space": ("app_name", " Cats"),
    "colon": ("app_name", "Urgent: call us"),
    "too long a name": ("user_name", "A" * (MAX_LENGTHS["user_name"] + 1)),
    "too long an app name": ("app_name", "A" * (MAX_LENGTHS["app_name"] + 1)),
    "access key with a space": ("access_key", "AK 12"),
    "access key with a slash": ("access_key", "evil.example/x"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_caller_text_is_refused_with_a_clear_400(
    make_mailer_app: Callable[..., Flask], smtp_server: SMTPSink, case: str
) -> None:
    field, value = REFUSED[case]
    recipient = unique_address()
    answer = post(make_mailer_app().test_client(), signup(recipient, **{field: value}))

    assert answer.status_code == 400
    assert answer.json["error"] == ErrorCode.TEXT_REFUSED
    assert answer.json["msg"].startswith(f"extra.{field} ")
    assert value.strip() not in answer.json["msg"]
    assert smtp_server.messages == []


def test_a_line_break_is_refused_with_the_token(
    make_mailer_app: Callable[..., Flask], smtp_server: SMTPSink
) -> None:
    answer = post(make_mailer_app().test_client(), signup(unique_address(), user_name="A\nB"))
    assert (answer.status_code, answer.json["msg"]) == (400, "Problem with token (bad_claims)")
    assert smtp_server.messages == []


@pytest.mark.parametrize(
    "extra",
    [
        {"user_name": "Anne-Marie O'Neil"},
        {"user_name": "Zoë (Chat), Jr."},
        {"user_name": "李小龍"},
        {"app_name": "CatLoader"},
        {"access_key": "Kx7-Q2pL9m_0"},
    ],
)
def test_plain_names_pass(extra: dict[str, str]) -> None:
    check_extra(extra)


def test_an_app_name_equal_to_the_link_host_passes() -> None:
    check_extra({"app_name": "app.example"}, link_host="app.example")
    with pytest.raises(TextRefused):
        check_extra({"app_name": "app.example.evil"}, link_host="app.example")


def test_the_app_name_is_fixed_per_caller_secret(
    make_mailer_app: Callable[..., Flask], smtp_server: SMTPSink
) -> None:
    client = make_mailer_app(
        MAILER_APP_NAME="Main App",
        MAILER_APP_NAME_FIXED="1",
        MAILER_CALLERS=json.dumps({"Second App": OTHER_SECRET}),
    ).test_client()
    main, second = unique_address("main"), unique_address("second")

    # A fixed app name is not the caller's to choose, not even with text that is refused.
    assert post(client, signup(main, app_name="Evil.example")).status_code == 200
    assert post(client, signup(second, secret=OTHER_SECRET, app_name="Other")).status_code == 200

    subjects = {mail.rcpt_tos[0]: mail.message["Subject"] for mail in smtp_server.messages}
    assert subjects == {
        main: "Confirm and access Main App",
        second: "Confirm and access Second App",
    }


def test_a_token_of_no_caller_is_refused(make_mailer_app: Callable[..., Flask]) -> None:
    client = make_mailer_app(MAILER_CALLERS=json.dumps({"Second App": OTHER_SECRET})).test_client()
    forged = signup(unique_address(), secret="x" * 40)
    answer = post(client, forged)
    assert (answer.status_code, answer.json["error"]) == (401, ErrorCode.BAD_TOKEN)


@pytest.mark.parametrize(
    "value",
    ['{"A": "short"}', '["x"]', "not json", json.dumps({"Evil\r\nBcc": OTHER_SECRET})],
)
def test_bad_callers_are_refused_at_start(
    make_mailer_app: Callable[..., Flask], value: str
) -> None:
    from flask_confirm_mail.errors import ConfigurationError

    with pytest.raises(ConfigurationError) as info:
        make_mailer_app(MAILER_CALLERS=value)
    assert "MAILER_CALLERS" in str(info.value)
    assert OTHER_SECRET not in str(info.value)


@pytest.mark.parametrize(
    "link",
    [
        "{prefix}phish/{token}",
        "{prefix}{token}?next=https://evil.example",
        "{prefix}?token={token}",
    ],
)
def test_a_link_is_exactly_a_prefix_plus_the_token(
    make_mailer_app: Callable[..., Flask], smtp_server: SMTPSink, link: str
) -> None:
    recipient = unique_address()
    token = link_token(recipient)
    url = link.format(prefix=LINK_PREFIX, token=token)
    answer = post(
        make_mailer_app().test_client(), v1_token(recipient, link_url=url, link_token=token)
    )
    assert (answer.status_code, answer.json["error"]) == (403, ErrorCode.LINK_REFUSED)
    assert smtp_server.messages == []
