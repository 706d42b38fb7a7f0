"""The confirmation code on both wires, and in the email the real mailer process sends."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from flask import Flask

from flask_confirm_mail.errors import InvalidToken
from flask_confirm_mail.mailer.wire import (
    issue_legacy_token,
    issue_wrapping_token,
    verify_legacy_token,
    verify_wrapping_token,
)
from tests.support.smtp_server import SMTPSink

from .conftest import messages_to
from .process import MailerProcess
from .tokens import LINK_PREFIX, MAILER_SECRET, link_token, original_token, sign, v1_claims

KEY = MAILER_SECRET.encode()
CODE_LINE = re.compile(r"^ {4}(\S+)\r?$", re.MULTILINE)


def test_v1_carries_the_code_in_its_own_claim() -> None:
    token = link_token("ann@example.com")
    wrapping = issue_wrapping_token(
        KEY,
        recipient="ann@example.com",
        template="signup",
        link_url=LINK_PREFIX + token,
        link_token=token,
        code="482916",
    )
    assert jwt.decode(wrapping, options={"verify_signature": False})["code"] == "482916"
    request = verify_wrapping_token(wrapping, [KEY])
    assert request.code == "482916"
    assert "482916" not in repr(request)


@pytest.mark.parametrize("code", ["12 34", "<b>1</b>", "1" * 33, 123456, ["1"], "１２３４"])
def test_v1_refuses_a_code_that_is_not_letters_and_digits(code: object) -> None:
    with pytest.raises(InvalidToken):
        verify_wrapping_token(sign(v1_claims(code=code)), [KEY])


def test_variance_carries_the_code_in_user_aut_key_or_otp() -> None:
    wrapping = issue_legacy_token(
        KEY,
        user_email="bob@example.com",
        access_key="AK-1",
        link_prefix=LINK_PREFIX,
        link_token="tok",
        code="551203",
    )
    claims = jwt.decode(wrapping, MAILER_SECRET, algorithms=["HS256"])
    assert (claims["user_aut_key_or_otp"], claims["user_aut_key"]) == ("551203", "AK-1")
    request = verify_legacy_token(wrapping, [KEY])
    assert (request.code, dict(request.extra)) == ("551203", {"access_key": "AK-1"})
    no_key = issue_legacy_token(
        KEY, user_email="b@example.com", access_key="", link_prefix=LINK_PREFIX,
        link_token="tok", code="551203",
    )  # fmt: skip
    assert verify_legacy_token(no_key, [KEY]).code == "551203"


def test_the_original_clients_key_stays_an_access_key() -> None:
    request = verify_legacy_token(original_token("cy@example.com"), [KEY])
    assert (request.code, request.extra["access_key"]) == ("", "Kx7-Q2pL9m")
    both = original_token("cy@example.com", user_aut_key="other key")
    assert verify_legacy_token(both, [KEY]).code == ""  # not a code's shape: as before


@pytest.mark.parametrize("wire", ["v1", "variance"])
def test_the_mailer_shows_the_code_and_it_confirms(
    remote_app: Callable[[str], Flask],
    tmp_path: Any,
    mailer: MailerProcess,
    mailer_sink: SMTPSink,
    wire: str,
) -> None:
    app = remote_app(wire)
    address = f"code-{wire}-{tmp_path.name[-8:]}@example.org"
    client = app.test_client()
    assert client.post("/signup", data={"email": address}).status_code == 201
    mailer_sink.wait_for(1)
    [mail] = messages_to(mailer_sink, address)
    text = mail.message.get_body(("plain",)).get_content()
    [code] = CODE_LINE.findall(text)
    assert re.fullmatch(r"[0-9]{6}", code)
    assert "Your access key" not in text
    assert f">{code}</p>" in mail.message.get_body(("html",)).get_content()
    answer = client.post("/confirm/code", json={"email": address, "code": code})
    assert answer.json["status"] == "confirmed"
    assert mailer.log().count(code) == 0, "the mailer never logs the code"
