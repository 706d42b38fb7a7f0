"""Internationalized host and sender names, the EHLO name, and the headers as RFC 5322
recommends them (issue 35, items 4 and 5), through a real SMTP server."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask

from flask_confirm_mail.errors import ConfigurationError
from tests.support.smtp_server import SMTPSink

IDN_URL = "https://bücher.example"


def _sign_up_and_receive(app: Flask, sink: SMTPSink) -> Any:
    assert app.test_client().post("/signup", data={"email": "leser@example.org"}).status_code == 201
    return sink.wait_for(1)[0]


@pytest.mark.parametrize(
    "sender", [("Bücher", "noreply@bücher.example"), "Bücher <noreply@bücher.example>"]
)
def test_an_internationalized_site_and_sender_domain_are_mailed_in_a_labels(
    make_app: Any, smtp_server: SMTPSink, sender: Any
) -> None:
    app = make_app(config={"CONFIRM_MAIL_EXTERNAL_URL": IDN_URL, "CONFIRM_MAIL_SENDER": sender})
    mail = _sign_up_and_receive(app, smtp_server)
    assert mail.raw.isascii()
    assert mail.message["Message-ID"].endswith("@xn--bcher-kva.example>")
    assert mail.message["From"].addresses[0].addr_spec == "noreply@xn--bcher-kva.example"
    assert mail.mail_from == "noreply@xn--bcher-kva.example"
    text = mail.message.get_body(("plain",)).get_content()
    assert f"{IDN_URL}/confirm/" in text, "the link as the URL was configured"
    assert "bücher.example" in mail.message["Subject"] or "bücher.example" in text


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("CONFIRM_MAIL_EXTERNAL_URL", "https://bad_host\u00e9-.example"),
        ("CONFIRM_MAIL_SENDER", ("Shop", "noreply@exa\u00dfmple-.example")),
        ("CONFIRM_MAIL_SENDER", ("Shop", "n\u00f6reply@example.com")),
        ("CONFIRM_MAIL_SENDER", "n\u00f6reply@example.com"),
        ("CONFIRM_MAIL_EHLO_NAME", "not a host"),
    ],
)
def test_a_name_that_cannot_be_mailed_is_refused_at_init_naming_its_key(
    make_app: Any, key: str, value: Any
) -> None:
    with pytest.raises(ConfigurationError, match=key):
        make_app(config={key: value})


def test_the_ehlo_name_is_the_configured_one(make_app: Any, smtp_server: SMTPSink) -> None:
    app = make_app(config={"CONFIRM_MAIL_EHLO_NAME": "mail.bücher.example"})
    assert _sign_up_and_receive(app, smtp_server).helo == "mail.xn--bcher-kva.example"


def test_the_date_is_numeric_utc_and_every_line_fits_78_characters(
    make_app: Any, smtp_server: SMTPSink
) -> None:
    mail = _sign_up_and_receive(make_app(), smtp_server)
    assert re.fullmatch(r"\w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} \+0000", mail.message["Date"])
    long = [line for line in mail.raw.split(b"\r\n") if len(line) > 78]
    assert long == []
