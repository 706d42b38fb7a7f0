"""Fixtures for the bounce tests: an SMTP server that refuses chosen recipients at RCPT,
captured ``confirmation_bounced`` signals, and helpers to read marks and outbox rows."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from flask import Flask

from flask_confirm_mail import confirmation_bounced
from flask_confirm_mail.bounces import BounceMark, records_of


class RefusingHandler:
    """Answers ``550 5.1.1`` to RCPT for the addresses in :attr:`refused`; keeps the rest.
    With :attr:`refuse_sender`, answers ``550 5.7.1`` to MAIL FROM instead."""

    def __init__(self) -> None:
        self.refused: set[str] = set()
        self.refuse_sender = False
        self.received: list[list[str]] = []
        self._lock = threading.Lock()

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if self.refuse_sender:
            return "550 5.7.1 Sender not allowed"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if address.lower() in self.refused:
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self._lock:
            self.received.append(list(envelope.rcpt_tos))
        return "250 2.0.0 OK: queued"


@pytest.fixture
def refusing_server() -> Iterator[tuple[RefusingHandler, int]]:
    """A real aiosmtpd server on 127.0.0.1 refusing :attr:`RefusingHandler.refused` at RCPT."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    handler = RefusingHandler()
    controller = Controller(handler, hostname="127.0.0.1", port=port, ready_timeout=10.0)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


@pytest.fixture
def bounced_signals() -> Iterator[list[dict[str, Any]]]:
    """Every ``confirmation_bounced`` sent during the test, as its keyword arguments."""
    sent: list[dict[str, Any]] = []

    def receive(app: Flask, **kwargs: Any) -> None:
        sent.append(kwargs)

    confirmation_bounced.connect(receive)
    yield sent
    confirmation_bounced.disconnect(receive)


def mark_of(app: Flask, address: str) -> BounceMark | None:
    records = records_of(app)
    assert records is not None
    with app.app_context(), records.db.engine.connect() as conn:
        return records.find(conn, address)


def outbox_rows(app: Flask) -> list[Any]:
    flow = app.extensions["confirm_mail"]
    table = flow.outbox_table
    with app.app_context(), flow.db.engine.connect() as conn:
        return list(conn.execute(sa.select(table).order_by(table.c.id)).all())
