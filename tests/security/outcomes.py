"""Checking the safe outcome of an attack: a clear 4xx, nothing changed, nothing leaked."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from werkzeug.test import TestResponse

from tests.apps import LINK_SECRET, SECRET_KEY, db
from tests.support.smtp_server import SMTPSink

#: Values that must never appear in an answer, a log line or a stored error.
SECRETS = (LINK_SECRET, SECRET_KEY)
JSON = {"Accept": "application/json"}
#: For attacks refused before the database is touched (asserted where it matters): one
#: backend suffices, which keeps the suite fast on two cores.
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
#: Loggers of the receiving side (the test's SMTP server logs every line it is sent).
RECEIVER_LOGGERS = ("mail.log",)
_FORMATTER = logging.Formatter("%(name)s %(levelname)s %(message)s")


def snapshot(app: Flask) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the user and outbox tables, in primary-key order."""
    state = app.extensions["confirm_mail"]
    tables = (state.columns.model.__table__, state.outbox_table)
    with app.app_context(), db.engine.connect() as conn:
        return {
            table.name: [
                tuple(row)
                for row in conn.execute(sa.select(table).order_by(*table.primary_key.columns))
            ]
            for table in tables
        }


@contextmanager
def unchanged(app: Flask, sink: SMTPSink) -> Iterator[None]:
    """Assert that the block changed no row and made the SMTP server receive nothing.

    Delivery in the test apps is synchronous, so looking right after the block is enough.
    """
    before = snapshot(app)
    mails = len(sink.messages)
    yield
    assert len(sink.messages) == mails, "an email was sent"
    assert snapshot(app) == before, "a row changed"


def answer_text(response: TestResponse) -> str:
    """Status line, headers and body of ``response``, for leak checks."""
    headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
    return f"{response.status}\n{headers}\n\n{response.get_data(as_text=True)}"


def assert_no_leak(text: str, *values: str) -> None:
    """None of ``values``, nor the test app's secrets, occurs in ``text``."""
    for value in (*SECRETS, *values):
        if value:
            assert value not in text, f"{value[:16]!r}... leaked"


def assert_refused(
    response: TestResponse, *leaks: str, status: int | tuple[int, ...] | None = None
) -> None:
    """A clear 4xx (``status`` when given) repeating none of ``leaks`` or the secrets."""
    code = response.status_code
    assert 400 <= code < 500, f"expected a 4xx, got {code}"
    if status is not None:
        assert code in ((status,) if isinstance(status, int) else status), code
    assert_no_leak(answer_text(response), *leaks)


@contextmanager
def count_queries(app: Flask) -> Iterator[list[str]]:
    """Collect every SQL statement the app's engine runs inside the block."""
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    with app.app_context():
        engine = db.engine
    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)


def app_log_texts(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Each captured record of the process, formatted with its traceback and raw args.

    Records of :data:`RECEIVER_LOGGERS` are left out: they are the SMTP server's, which
    is meant to see the email.
    """
    texts = []
    for record in caplog.records:
        if record.name.startswith(RECEIVER_LOGGERS):
            continue
        texts += [_FORMATTER.format(record), repr(record.args), repr(record.__dict__)]
    return texts
