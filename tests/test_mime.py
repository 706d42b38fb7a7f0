"""The hand-written wire form parses back to exactly what was put in."""

from __future__ import annotations

import email
import email.policy

import pytest
from flask import Flask

from flask_confirm_mail.mime import AlternativeMessage

LINK = "https://app.example.com/confirm/" + "x" * 300


def _build(**changes: object) -> bytes:
    fields: dict[str, object] = {
        "subject": "Confirm your email address",
        "recipients": ["kitty@example.org"],
        "body": f"Hello,\n\n{LINK}\n. a line starting with a dot\n",
        "html": f'<p>Hello,</p><p><a href="{LINK}">Confirm</a></p>',
        "sender": ("CatLoader", "noreply@example.com"),
        "date": 1_900_000_000.0,
        "message_id": "<id-1@example.com>",
    }
    fields.update(changes)
    with Flask(__name__).app_context():
        message = AlternativeMessage(**fields)  # type: ignore[arg-type]
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
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert all(len(line) <= 78 for line in raw.split(b"\r\n"))
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert parsed.get_content_type() == "multipart/alternative"
    assert parsed["Subject"] == subject
    assert parsed["From"].addresses[0].display_name == name
    assert parsed["To"] == "kitty@example.org"
    assert parsed["Message-ID"] == "<id-1@example.com>"
    assert parsed["Date"].datetime.timestamp() == 1_900_000_000
    text = parsed.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert text == f"Hello,\n\n{LINK}\n. a line starting with a dot\n"
    assert f'href="{LINK}"' in parsed.get_body(("html",)).get_content()
    assert [part.get_content_type() for part in parsed.iter_parts()] == ["text/plain", "text/html"]


@pytest.mark.parametrize("field", ["subject", "sender"])
def test_line_breaks_in_headers_are_refused(field: str) -> None:
    value = "Hi\r\nBcc: evil@example.net" if field == "subject" else ("A\nB", "a@example.com")
    with pytest.raises(ValueError, match="line break"):
        _build(**{field: value})
