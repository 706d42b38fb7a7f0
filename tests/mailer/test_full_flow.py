"""The whole remote flow: app sign-up -> remote transport -> mailer process -> SMTP -> confirm."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask

from tests.support.smtp_server import SMTPSink

from .conftest import messages_to
from .tokens import LINK_PREFIX


@pytest.mark.parametrize("wire", ["v1", "variance"])
def test_signup_through_the_mailer_service_then_confirm(
    remote_app: Callable[..., Flask], mailer_sink: SMTPSink, wire: str
) -> None:
    app = remote_app(wire)
    address = f"remote-{wire}@example.org"
    client = app.test_client()
    assert client.post("/signup", data={"email": address}).status_code == 201
    mailer_sink.wait_for(1)
    [mail] = messages_to(mailer_sink, address)
    assert mail.message["Subject"] == "Confirm and access CatLoader"
    text = mail.message.get_body(("plain",)).get_content()
    link = next(word for word in text.split() if word.startswith(LINK_PREFIX))
    assert link in mail.message.get_body(("html",)).get_content()
    path = link.removeprefix(LINK_PREFIX.removesuffix("/confirm/"))
    answer = client.post(path, headers={"Accept": "application/json"})
    assert answer.json["status"] == "confirmed"
    with app.app_context():
        rows = app.extensions["confirm_mail"].outbox_model.query.all()
        assert [row.status for row in rows] == ["sent"]


@pytest.mark.parametrize("wire", ["v1", "variance"])
def test_a_german_signup_gets_a_german_email(
    remote_app: Callable[..., Flask], mailer_sink: SMTPSink, wire: str
) -> None:
    app = remote_app(wire, TEST_BABEL=True)  # Flask-Babel, the locale from Accept-Language
    address = f"remote-de-{wire}@example.org"
    answer = app.test_client().post(
        "/signup", data={"email": address}, headers={"Accept-Language": "de"}
    )
    assert answer.status_code == 201
    [mail] = messages_to(mailer_sink, address)
    assert mail.message["Subject"] == "Bestätigen Sie Ihre E-Mail-Adresse"
    text = mail.message.get_body(("plain",)).get_content()
    assert text.splitlines()[0] == "Hallo,"
    assert (
        "Bitte bestätigen Sie Ihre E-Mail-Adresse für CatLoader, indem Sie diesen Link öffnen:"
        in text
    )
    assert "Der Link ist 48 Stunden lang gültig." in text
    html = mail.message.get_body(("html",)).get_content()
    assert '<html lang="de">' in html and "Meine E-Mail-Adresse bestätigen" in html
