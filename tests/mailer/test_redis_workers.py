"""The mailer under ``gunicorn -w 4`` with its stores in a real redis-server.

Each test starts its own mailer process, so the worker ids in its access log are those
that answered the test's requests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_confirm_mail.confirmation import get_flow
from flask_confirm_mail.delivery import DeliveryLoop
from flask_confirm_mail.mailer import RemoteTransport
from flask_confirm_mail.mailer.wire import ErrorCode
from flask_confirm_mail.outbox import PENDING, SENT
from tests.apps import db
from tests.support.redis_server import RedisServer
from tests.support.smtp_server import SMTPSink

from .conftest import mailer_env, messages_to
from .process import MailerAnswer, MailerProcess
from .tokens import LINK_PREFIX, MAILER_SECRET, link_token, unique_address, v1_token

WORKERS = 4
#: Bursts of concurrent requests sent until every worker has answered one.
MAX_BURSTS = 50


@pytest.fixture
def start_mailer(mailer_sink: SMTPSink, tmp_path: Path) -> Iterator[Callable[..., MailerProcess]]:
    """Start ``gunicorn -w 4`` (sync workers) on Redis at ``redis_url``."""
    started: list[MailerProcess] = []

    def start(redis_url: str, **overrides: str) -> MailerProcess:
        env = mailer_env(mailer_sink, MAILER_REDIS_URL=redis_url, **overrides)
        process = MailerProcess(
            env, tmp_path / f"gunicorn-{len(started)}.log", workers=WORKERS, threads=1
        )
        started.append(process)
        process.start()
        return process

    yield start
    for process in started:
        process.stop()
        assert not process.leaked_tokens()


def signup_token(recipient: str) -> str:
    link = link_token(recipient)
    return v1_token(recipient, link_url=LINK_PREFIX + link, link_token=link)


def burst(mailer: MailerProcess, tokens: list[str]) -> list[MailerAnswer]:
    """``POST /v1/messages`` with each token, all at once, each on its own connection."""
    with ThreadPoolExecutor(len(tokens)) as pool:
        return list(pool.map(mailer.post, tokens))


def until_every_worker_answered(mailer: MailerProcess, token: Callable[[], str]) -> list[Any]:
    """Bursts of 2 x WORKERS requests until all workers answered one; their answers."""
    answers: list[MailerAnswer] = []
    for _ in range(MAX_BURSTS):
        answers += burst(mailer, [token() for _ in range(2 * WORKERS)])
        if len(mailer.worker_pids()) == WORKERS:
            return answers
    pytest.fail(f"only workers {mailer.worker_pids()} answered {len(answers)} requests")


def test_one_token_sent_to_every_worker_sends_one_email(
    start_mailer: Callable[..., MailerProcess], redis_url: str, mailer_sink: SMTPSink
) -> None:
    mailer = start_mailer(redis_url)
    health = mailer.request("GET", "/v1/health")
    assert (health.status, health.json["msg"]) == (200, "ok; stores shared (redis)")
    recipient = unique_address("replay")
    token = signup_token(recipient)

    answers = until_every_worker_answered(mailer, lambda: token)

    [mail] = messages_to(mailer_sink, recipient)
    sent = [a for a in answers if a.status == 200 and a.json["msg"] == "All ok"]
    assert len(sent) == 1
    assert sent[0].json["id"] == mail.message["Message-ID"]
    for answer in answers:
        assert (answer.status, answer.json["id"]) in {(200, sent[0].json["id"]), (409, None)}


def test_the_rate_limit_holds_across_workers(
    start_mailer: Callable[..., MailerProcess], redis_url: str, mailer_sink: SMTPSink
) -> None:
    mailer = start_mailer(redis_url, MAILER_RATE_LIMIT="3")
    recipient = unique_address("limit")

    answers = until_every_worker_answered(mailer, lambda: signup_token(recipient))

    assert [a.status for a in answers].count(200) == 3
    assert {a.status for a in answers} == {200, 429}
    assert all(int(a.headers["Retry-After"]) > 0 for a in answers if a.status == 429)
    assert len(messages_to(mailer_sink, recipient)) == 3


def test_redis_down_is_a_retryable_503_then_recovers(
    start_mailer: Callable[..., MailerProcess],
    private_redis: RedisServer,
    mailer_sink: SMTPSink,
) -> None:
    mailer = start_mailer(private_redis.url)
    recipient = unique_address("outage")
    token = signup_token(recipient)
    private_redis.stop()

    answers = burst(mailer, [token] * WORKERS)
    health = mailer.request("GET", "/v1/health")

    for answer in answers:
        assert answer.status == 503
        assert answer.json["error"] == ErrorCode.UNAVAILABLE
        assert int(answer.headers["Retry-After"]) > 0
    assert health.status == 503
    assert messages_to(mailer_sink, recipient) == []
    assert "Nothing sent: the replay store cannot be reached" in mailer.log()

    private_redis.start()
    answer = mailer.post(token)

    assert (answer.status, answer.json["msg"]) == (200, "All ok")
    assert mailer.request("GET", "/v1/health").status == 200
    [mail] = messages_to(mailer_sink, recipient)
    assert mail.message["Message-ID"] == answer.json["id"]


def _deliver_once(app: Flask) -> Any:
    """One pass of a delivery worker over the messages due now."""
    return DeliveryLoop(app, get_flow(app).deliverer).run_once()


def _rows(app: Flask) -> list[Any]:
    with app.app_context():
        model = get_flow(app).outbox_model
        return list(db.session.scalars(sa.select(model).order_by(model.id)))


def test_the_outbox_retries_through_an_outage_and_the_email_goes_out_once(
    start_mailer: Callable[..., MailerProcess],
    private_redis: RedisServer,
    mailer_sink: SMTPSink,
    build_app: Callable[..., Flask],
    tmp_path: Path,
) -> None:
    mailer = start_mailer(private_redis.url)
    app = build_app(
        f"sqlite:///{tmp_path / 'outage.db'}",
        config={
            "CONFIRM_MAIL_EXTERNAL_URL": LINK_PREFIX.removesuffix("/confirm/"),
            "CONFIRM_MAIL_MAILER_URL": mailer.base_url,
            "CONFIRM_MAIL_MAILER_SECRET": MAILER_SECRET,
            "CONFIRM_MAIL_DELIVERY": "worker",
            "TEST_RETRY_BASE": 0,
        },
        transport=RemoteTransport(),
    )
    address = unique_address("outbox")
    private_redis.stop()
    assert app.test_client().post("/signup", data={"email": address}).status_code == 201

    _deliver_once(app)
    [row] = _rows(app)
    assert (row.status, row.attempts) == (PENDING, 1)
    assert "503" in row.last_error
    assert messages_to(mailer_sink, address) == []

    private_redis.start()
    assert _deliver_once(app).sent == 1
    [row] = _rows(app)
    assert row.status == SENT
    assert len(messages_to(mailer_sink, address)) == 1
