"""Delivery against SMTP servers that answer the final "." late, drop the connection after
it, cap connections or cap the rate (issue 35): each test counts emails requested,
delivered, duplicated and lost, and the attempts the outbox recorded."""

from __future__ import annotations

from typing import Any

import pytest

from flask_confirm_mail.outbox import DEAD, SENT
from tests.conftest import link_from
from tests.delivery.test_faults import tally
from tests.support.smtp_server import SMTPSink
from tests.test_confirm_code import code_from
from tests.test_outbox import _drain, _enqueue_many, _rows

WORKER = {"CONFIRM_MAIL_DELIVERY": "worker"}


def _all_once(sink: SMTPSink, requested: list[str]) -> dict[str, int]:
    return {"requested": len(requested), "delivered": len(requested), "duplicated": 0, "lost": 0}


def test_a_final_reply_slower_than_the_socket_timeout_is_waited_for(
    make_app: Any, smtp_server: SMTPSink
) -> None:
    app = make_app(config={**WORKER, "CONFIRM_MAIL_SMTP_TIMEOUT": 0.3})
    smtp_server.delay = 1.0  # before answering the final "."
    requested = _enqueue_many(app, 2)
    _drain(app)
    assert tally(smtp_server, requested) == _all_once(smtp_server, requested)
    assert [(row.status, row.attempts) for row in _rows(app)] == [(SENT, 1)] * 2


def test_a_server_that_always_drops_after_data_gets_one_copy_more_at_most(
    make_app: Any, smtp_server: SMTPSink, clock: Any
) -> None:
    app = make_app(config=WORKER)  # 8 attempts
    smtp_server.drop_after_data_next(100)
    requested = _enqueue_many(app, 1)
    for _ in range(10):
        _drain(app)
        clock.shift(7200)  # past any retry delay
    [row] = _rows(app)
    assert (row.status, row.attempts, row.unknown_outcomes) == (DEAD, 2, 2)
    assert tally(smtp_server, requested)["duplicated"] == 1
    copies = smtp_server.messages
    # A copy is the same email: one Message-ID, one link, one code.
    assert len({m.message["Message-ID"] for m in copies}) == 1
    assert len({link_from(m) for m in copies}) == 1
    assert len({code_from(m) for m in copies}) == 1


def test_a_connection_limit_shrinks_the_pool_and_costs_no_message_an_attempt(
    make_app: Any, smtp_server: SMTPSink
) -> None:
    app = make_app(config={**WORKER, "CONFIRM_MAIL_CONCURRENCY": 8})
    smtp_server.max_connections = 2
    requested = _enqueue_many(app, 24)
    _drain(app)
    assert smtp_server.refused_connections > 0
    assert tally(smtp_server, requested) == _all_once(smtp_server, requested)
    assert {(row.status, row.attempts) for row in _rows(app)} == {(SENT, 1)}


@pytest.mark.slow
def test_max_rate_paces_evenly_within_a_providers_window(
    make_app: Any, smtp_server: SMTPSink
) -> None:
    # 1.5 a second is 3 in any 2 s; a burst of the per-second quota would break 4 per 2 s.
    app = make_app(config={**WORKER, "CONFIRM_MAIL_MAX_RATE": 1.5})
    smtp_server.rate_limit = (4, 2.0)
    requested = _enqueue_many(app, 6)
    _drain(app)
    assert smtp_server.rate_refusals == 0
    assert tally(smtp_server, requested) == _all_once(smtp_server, requested)
    assert {(row.status, row.attempts) for row in _rows(app)} == {(SENT, 1)}


def test_the_providers_id_in_the_final_reply_is_kept_on_the_row(
    make_app: Any, smtp_server: SMTPSink
) -> None:
    app = make_app(config=WORKER)
    smtp_server.reply_with_id = True  # "250 Ok <id>", as SES, SendGrid and Postmark answer
    _enqueue_many(app, 3)
    _drain(app)
    given = {str(mail.message["Message-ID"]): mail.reply_id for mail in smtp_server.messages}
    assert len(set(given.values())) == 3 and all(given.values())
    assert {row.message_id: row.provider_message_id for row in _rows(app)} == given


def test_a_final_reply_without_an_id_keeps_none(make_app: Any, smtp_server: SMTPSink) -> None:
    app = make_app(config=WORKER)  # the server answers "250 2.0.0 OK: queued"
    _enqueue_many(app, 2)
    _drain(app)
    assert [(row.status, row.provider_message_id) for row in _rows(app)] == [(SENT, None)] * 2
