"""The confirmation email's wire form (Flask-Mail's message) parses back to what was put in."""

from __future__ import annotations

import email
import email.policy

import pytest
from flask import Flask
from flask_mail import Mail

from flask_confirm_mail.errors import DeliveryError
from flask_confirm_mail.smtp import build_message

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
    app = Flask(__name__)
    Mail(app)
    with app.app_context():
        message = build_message(**fields)  # type: ignore[arg-type]
        return message.as_bytes()


@pytest.mark.parametrize(
    ("subject", "name"),
    [
        ("Confirm your email address", "CatLoader"),
        ("Bestätigen Sie Ihre Adresse — " + "sehr lang " * 12, "Kätzchen Lader"),
    ],
)
def test_round_trip(subject: str, name: str) -> None:
    raw = _build(subject=subject, sender=(name, "noreply@example.com"))
    assert all(len(line) <= 998 for line in raw.splitlines())
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert parsed["Subject"] == subject
    assert parsed["From"].addresses[0].display_name == name
    assert parsed["To"] == "kitty@example.org"
    assert parsed["Message-ID"] == "<id-1@example.com>"
    assert parsed["Date"] is not None
    text = parsed.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert text == f"Hello,\n\n{LINK}\n. a line starting with a dot\n"
    assert f'href="{LINK}"' in parsed.get_body(("html",)).get_content()
    [alternative] = [p for p in parsed.walk() if p.get_content_type() == "multipart/alternative"]
    assert [p.get_content_type() for p in alternative.iter_parts()] == ["text/plain", "text/html"]


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
