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
    remote_app: Callable[[str], Flask], mailer_sink: SMTPSink, wire: str
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
