"""The confirmation email as the standard library writes it, read back through the stdlib
parser; its subject templates; and what Flask-Mail's ``record_messages`` records."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from jinja2 import ChoiceLoader, DictLoader

from flask_confirm_mail.errors import DeliveryError
from flask_confirm_mail.smtp import build_message, message_texts
from tests.support.smtp_server import SMTPSink

LINK = "https://app.example.com/confirm/" + "x" * 300


def _build(**changes: object) -> bytes:
    fields: dict[str, object] = {
        "subject": "Confirm your email address",
        "recipient": "kitty@example.org",
        "text": f"Hello,\n\n{LINK}\n. a line starting with a dot\n",
        "html": f'<p>Hello,</p><p><a href="{LINK}">Confirm</a></p>',
        "sender": ("CatLoader", "noreply@example.com"),
        "message_id": "<id-1@example.com>",
    }
    fields.update(changes)
    return build_message(**fields).as_bytes()  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("subject", "name"),
    [
        ("Confirm your email address", "CatLoader"),
        ("Bestätigen Sie Ihre Adresse — " + "sehr lang " * 12 + "Ende", "Kätzchen Lader"),
        ("Confirm", 'Cat "Loader" <admin@evil.example>, Inc.'),
    ],
)
def test_round_trip(subject: str, name: str) -> None:
    raw = _build(subject=subject, sender=(name, "noreply@example.com"))
    assert raw.isascii() and b"\r\n" in raw
    assert all(len(line) <= 998 for line in raw.splitlines())
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert parsed.defects == []
    assert parsed["Subject"] == subject
    [sender] = parsed["From"].addresses
    assert (sender.display_name, sender.addr_spec) == (name, "noreply@example.com")
    assert parsed["To"] == "kitty@example.org"
    assert parsed["Message-ID"] == "<id-1@example.com>"
    assert parsed["Date"].datetime is not None
    assert parsed.get_content_type() == "multipart/alternative"
    parts = list(parsed.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert {p["Content-Transfer-Encoding"] for p in parts} == {"quoted-printable"}
    text = parsed.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert text == f"Hello,\n\n{LINK}\n. a line starting with a dot\n"
    assert f'href="{LINK}"' in parsed.get_body(("html",)).get_content()
    assert message_texts(parsed)[0].replace("\r\n", "\n") == text


def test_non_ascii_bodies_are_encoded() -> None:
    raw = _build(text="Grüße, 猫\n", html="<p>Grüße, 猫</p>")
    assert raw.isascii()
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert parsed.get_body(("plain",)).get_content() == "Grüße, 猫\r\n"
    assert "Grüße, 猫" in parsed.get_body(("html",)).get_content()


@pytest.mark.parametrize("field", ["subject", "sender", "recipient"])
def test_line_breaks_in_headers_are_refused(field: str) -> None:
    value: object = {
        "subject": "Hi\r\nBcc: evil@example.net",
        "sender": ("A\nB", "a@example.com"),
        "recipient": "a@example.com\r\nBcc: evil@example.net",
    }[field]
    with pytest.raises(DeliveryError, match="line") as info:
        _build(**{field: value})
    assert info.value.permanent


@pytest.mark.parametrize(
    ("field", "value"),
    [("recipient", "a@example.com, b@example.com"), ("sender", ("Cat", "not an address"))],
)
def test_more_or_less_than_one_address_is_refused(field: str, value: object) -> None:
    with pytest.raises(DeliveryError) as info:
        _build(**{field: value})
    assert info.value.permanent and not info.value.bounced


# --- subjects are templates ---------------------------------------------------------------


def _sign_up(app: Flask, address: str = "kitty@example.org") -> None:
    answer = app.test_client().post("/signup", data={"email": address})
    assert answer.status_code == 201, answer.data


def test_an_app_overrides_a_subject_with_a_template_of_the_same_name(
    make_app: Callable[..., Flask], smtp_server: SMTPSink
) -> None:
    """Rendered like the bodies (same values, same ``_``), then joined into one line."""
    app = make_app(config={"CONFIRM_MAIL_APP_NAME": "CatLoader"})
    override = "{% if purpose %}\n  {{ _('Welcome to') }}\n  {{ app_name }}!\n{% endif %}\n"
    app.jinja_env.loader = ChoiceLoader(
        [DictLoader({"confirm_mail/email/signup_subject.txt": override}), app.jinja_env.loader]
    )
    _sign_up(app)
    [mail] = smtp_server.wait_for(1)
    assert mail.message["Subject"] == "Welcome to   CatLoader!"


# --- Flask-Mail's record_messages ---------------------------------------------------------


@pytest.mark.parametrize("suppress", [False, True])
def test_record_messages_records_each_email(
    make_app: Callable[..., Flask], smtp_server: SMTPSink, suppress: bool
) -> None:
    app = make_app(config={"MAIL_SUPPRESS_SEND": suppress})
    with app.extensions["mail"].record_messages() as outbox:
        _sign_up(app)
    [message] = outbox
    assert message["Subject"] == "Confirm your email address"
    assert message["To"] == "kitty@example.org"
    assert message["From"].addresses[0].addr_spec == "noreply@app.example.com"
    text, html = message_texts(message)
    assert "/confirm/" in text and "/confirm/" in html
    assert message.get_body(("plain",)).get_content() == text
    sent: list[Any] = [] if suppress else smtp_server.wait_for(1)
    assert [m.message["Message-ID"] for m in sent] == ([] if suppress else [message["Message-ID"]])
