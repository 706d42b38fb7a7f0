"""The whole remote flow: app sign-up -> remote transport -> mailer process -> SMTP -> confirm."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask

from tests.support.smtp_server import SMTPSink

from .conftest import messages_to
from .process import MailerProcess
from .tokens import LINK_PREFIX, MAILER_SECRET


@pytest.mark.parametrize("wire", ["v1", "variance"])
def test_signup_through_the_mailer_service_then_confirm(
    build_app: Callable[..., Flask],
    tmp_path: Any,
    mailer: MailerProcess,
    mailer_sink: SMTPSink,
    wire: str,
) -> None:
    app = build_app(
        f"sqlite:///{tmp_path / 'remote.db'}",
        config={
            "CONFIRM_MAIL_EXTERNAL_URL": LINK_PREFIX.removesuffix("/confirm/"),
            "CONFIRM_MAIL_TRANSPORT": "remote",
            "CONFIRM_MAIL_MAILER_URL": mailer.base_url,
            "CONFIRM_MAIL_MAILER_SECRET": MAILER_SECRET,
            "CONFIRM_MAIL_MAILER_WIRE": wire,
            "CONFIRM_MAIL_APP_NAME": "CatLoader",
        },
    )
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
