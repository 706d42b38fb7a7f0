"""The transactional outbox: rollback, outage, retries, dead rows, workers, leases."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
import sqlalchemy as sa
from flask import Flask

from flask_confirm_mail import (
    delivery_failed,
    message_delivered,
    outbox,
    send_confirmation,
)
from flask_confirm_mail.confirmation import get_flow
from flask_confirm_mail.delivery import DeliveryLoop
from flask_confirm_mail.outbox import DEAD, PENDING, SENT
from tests.apps import LINK_SECRET, db, user_model
from tests.conftest import link_from
from tests.support.smtp_server import SMTPSink

ROOT = Path(__file__).resolve().parent.parent


def _rows(app: Flask) -> list[Any]:
    with app.app_context():
        model = get_flow(app).outbox_model
        return list(db.session.scalars(sa.select(model).order_by(model.id)))


def _drain(app: Flask) -> Any:
    """Deliver everything due now, in this thread (a worker's loop, until idle)."""
    return DeliveryLoop(app, get_flow(app).deliverer).run(until_idle=True)


def test_rollback_sends_nothing(make_app: Any, smtp_server: SMTPSink) -> None:
    app = make_app()
    app.config["PROPAGATE_EXCEPTIONS"] = False
    response = app.test_client().post("/signup-then-fail", data={"email": "gone@example.org"})
    assert response.status_code == 500  # the app's own view failed, not the extension
    _drain(app)
    assert _rows(app) == []
    with app.app_context():
        assert db.session.scalars(sa.select(user_model("mixin"))).all() == []
    assert smtp_server.messages == []


def test_outage_then_every_user_gets_exactly_one_email(
    make_app: Any, smtp_server: SMTPSink, clock: Any
) -> None:
    app = make_app(config={"CONFIRM_MAIL_DELIVERY": "worker"})
    smtp_server.stop()
    client = app.test_client()
    addresses = [f"cat{i}@example.org" for i in range(50)]
    for address in addresses:
        assert client.post("/signup", data={"email": address}).status_code == 201
    report = _drain(app)
    assert report.sent == 0 and report.retried == 50
    assert {row.status for row in _rows(app)} == {PENDING}
    errors = [row.last_error or "" for row in _rows(app)]
    assert all("SMTP connection to 127.0.0.1:" in error for error in errors)

    smtp_server.start()
    clock.shift(60)  # past the first retry delay (RETRY_BASE=10 s, jitter 0.5-1x)
    assert _drain(app).sent == 50
    mails = smtp_server.wait_for(50)
    assert Counter(r for m in mails for r in m.rcpt_tos) == Counter(addresses)
    assert {row.status for row in _rows(app)} == {SENT}
    assert _drain(app).claimed == 0
    for mail in mails[:5]:
        path = link_from(mail).removeprefix("https://app.example.com")
        answer = client.post(path, headers={"Accept": "application/json"})
        assert answer.json["status"] == "confirmed"


def test_retries_back_off_then_dead_then_requeued(
    make_app: Any, smtp_server: SMTPSink, clock: Any
) -> None:
    app = make_app(config={"CONFIRM_MAIL_DELIVERY": "worker", "CONFIRM_MAIL_MAX_ATTEMPTS": 3})
    failures: list[tuple[int, bool]] = []

    def on_failed(sender: Flask, **kwargs: Any) -> None:
        failures.append((kwargs["attempt"], kwargs["dead"]))

    smtp_server.fail_next(3, code=451)
    app.test_client().post("/signup", data={"email": "retry@example.org"})
    with delivery_failed.connected_to(on_failed, app):
        _drain(app)
        [row] = _rows(app)
        assert (row.status, row.attempts) == (PENDING, 1)
        delay = (row.due_at - row.created_at).total_seconds()
        assert 5 <= delay <= 10, "first retry after RETRY_BASE (10 s) with jitter"
        assert _drain(app).claimed == 0, "not due yet"
        clock.shift(10)
        _drain(app)
        [row] = _rows(app)
        assert row.attempts == 2
        assert 10 <= (row.due_at - row.created_at).total_seconds() - 10 <= 20, "doubled"
        clock.shift(20)
        _drain(app)
    [row] = _rows(app)
    assert (row.status, row.attempts, row.due_at) == (DEAD, 3, None)
    assert failures == [(1, False), (2, False), (3, True)]
    assert "451" in row.last_error

    runner = app.test_cli_runner()
    listing = runner.invoke(args=["confirm-mail", "outbox"]).output
    assert "dead     1" in listing and f"dead {row.id}: to retry@example.org" in listing
    status = runner.invoke(args=["confirm-mail", "status", "retry@example.org"]).output
    assert f"email {row.id} to retry@example.org (signup): dead" in status
    assert "last error: SMTP server answered 451" in status
    smtp_server.clear()
    assert "Requeued 1" in runner.invoke(args=["confirm-mail", "retry", str(row.id)]).output
    assert _drain(app).sent == 1
    assert smtp_server.wait_for(1)[0].rcpt_tos == ["retry@example.org"]


def test_permanent_refusal_is_dead_at_once(make_app: Any, smtp_server: SMTPSink) -> None:
    app = make_app(config={"CONFIRM_MAIL_DELIVERY": "worker"})
    smtp_server.fail_next(1, code=550)
    app.test_client().post("/signup", data={"email": "nobody@example.org"})
    _drain(app)
    [row] = _rows(app)
    assert (row.status, row.attempts) == (DEAD, 1)


def test_link_lifetime_counts_from_delivery(
    make_app: Any, smtp_server: SMTPSink, clock: Any
) -> None:
    app = make_app(config={"CONFIRM_MAIL_DELIVERY": "worker"})
    client = app.test_client()
    client.post("/signup", data={"email": "late@example.org"})
    queued_at = int(time.time())
    clock.shift(10 * 3600)
    _drain(app)
    link = link_from(smtp_server.wait_for(1)[0])
    token = link.rsplit("/", 1)[1]
    claims = jwt.decode(
        token, LINK_SECRET, algorithms=["HS256"], audience="flask-confirm-mail:link"
    )
    assert claims["iat"] == queued_at + 10 * 3600
    assert claims["exp"] - claims["iat"] == 48 * 3600
    clock.shift(47 * 3600)
    answer = client.post(
        link.removeprefix("https://app.example.com"), headers={"Accept": "application/json"}
    )
    assert answer.json["status"] == "confirmed"


def test_no_token_is_stored(make_app: Any, smtp_server: SMTPSink) -> None:
    app = make_app()
    app.test_client().post("/signup", data={"email": "stored@example.org"})
    token = link_from(smtp_server.wait_for(1)[0]).rsplit("/", 1)[1]
    with app.app_context():
        dump = "\n".join(map(str, db.session.execute(sa.text("SELECT * FROM confirm_mail_outbox"))))
    assert token not in dump and token.split(".")[2] not in dump


def test_thread_mode_delivers_in_the_background(make_app: Any, smtp_server: SMTPSink) -> None:
    app = make_app(config={"CONFIRM_MAIL_DELIVERY": "thread"})
    delivered: list[int] = []

    def on_delivered(sender: Flask, **kwargs: Any) -> None:
        delivered.append(kwargs["outbox_id"])

    with message_delivered.connected_to(on_delivered, app):
        smtp_server.delay = 0.3
        response = app.test_client().post("/signup", data={"email": "bg@example.org"})
        assert response.status_code == 201
        assert smtp_server.wait_for(1)[0].rcpt_tos == ["bg@example.org"]
        deadline = time.monotonic() + 5
        while not delivered and time.monotonic() < deadline:
            time.sleep(0.01)
    assert delivered == [_rows(app)[0].id]


def _enqueue_many(app: Flask, count: int) -> list[str]:
    model = user_model("mixin")
    addresses = [f"bulk{i}@example.org" for i in range(count)]
    with app.app_context():
        users = [model(email=address) for address in addresses]
        db.session.add_all(users)
        db.session.flush()
        for user in users:
            send_confirmation(user)
        db.session.commit()
    return addresses


def _worker(
    database_url: str, smtp: SMTPSink, *args: str, **config: str
) -> subprocess.Popen[bytes]:
    env = dict(os.environ, TEST_DATABASE_URL=database_url, TEST_SMTP_PORT=str(smtp.port))
    env.update({f"FLASK_{key}": value for key, value in config.items()})
    command = [
        sys.executable,
        "-m",
        "flask",
        "--app",
        "tests.worker_app",
        "confirm-mail",
        "worker",
        *args,
    ]
    return subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


@pytest.mark.slow
def test_four_worker_processes_deliver_each_message_once(
    build_app: Any, smtp_server: SMTPSink, postgres_url: str
) -> None:
    database_url = postgres_url
    app = build_app(database_url, config={"CONFIRM_MAIL_DELIVERY": "worker"})
    addresses = _enqueue_many(app, 2000)
    workers = [_worker(database_url, smtp_server, "--once") for _ in range(4)]
    outputs = [w.communicate(timeout=240)[0].decode() for w in workers]
    assert all(w.returncode == 0 for w in workers), outputs
    sent_counts = [int(out.rsplit("stopped: ", 1)[1].split(" sent")[0]) for out in outputs]
    assert sum(sent_counts) == 2000
    assert sum(1 for n in sent_counts if n > 0) >= 2, f"work was shared: {sent_counts}"
    mails = smtp_server.wait_for(2000)
    assert Counter(r for m in mails for r in m.rcpt_tos) == Counter(addresses)
    assert {row.status for row in _rows(app)} == {SENT}


@pytest.mark.slow
def test_killed_worker_leaves_messages_for_the_next(
    make_app: Any, smtp_server: SMTPSink, database_url: str
) -> None:
    app = make_app(config={"CONFIRM_MAIL_DELIVERY": "worker"})
    addresses = _enqueue_many(app, 60)
    smtp_server.delay = 0.02
    config = {"CONFIRM_MAIL_CONCURRENCY": "5", "TEST_LEASE": "1"}
    victim = _worker(database_url, smtp_server, **config)
    deadline = time.monotonic() + 60
    while len(smtp_server.messages) < 15 and time.monotonic() < deadline:
        time.sleep(0.005)
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=30)
    delivered_before_kill = len(smtp_server.messages)
    assert delivered_before_kill < 60, "the worker was killed mid-way"

    survivor = _worker(database_url, smtp_server, "--poll-interval", "0.1", **config)
    try:
        smtp_server.wait_for(60, timeout=120)
        deadline = time.monotonic() + 60
        while {row.status for row in _rows(app)} != {SENT} and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        survivor.send_signal(signal.SIGTERM)
        output = survivor.communicate(timeout=60)[0].decode()
    assert survivor.returncode == 0, output
    counts = Counter(r for m in smtp_server.messages for r in m.rcpt_tos)
    assert set(counts) == set(addresses), "every message was delivered"
    duplicated = [address for address, n in counts.items() if n > 1]
    assert all(n <= 2 for n in counts.values())
    # A worker holds one batch (CONCURRENCY, 5) at a time: at most 5 sent and unrecorded.
    assert len(duplicated) <= 5, "only what was claimed and unrecorded at the kill is resent"
    assert {row.status for row in _rows(app)} == {SENT}


def test_a_stopped_loop_holds_no_batch(make_app: Any, smtp_server: SMTPSink) -> None:
    app = make_app(
        config={
            "CONFIRM_MAIL_DELIVERY": "worker",
            "CONFIRM_MAIL_CONCURRENCY": 10,
        }
    )
    _enqueue_many(app, 30)
    loop = DeliveryLoop(app, get_flow(app).deliverer)
    first = loop.run_once()
    assert (first.claimed, first.sent) == (10, 10)
    held = [row for row in _rows(app) if row.status != SENT]
    assert not any(row.claimed_by for row in held), "nothing claimed beyond the batch sent"
    loop.stop()
    loop.run()
    rows = _rows(app)
    assert sum(row.status == SENT for row in rows) == 10
    waiting = [row for row in rows if row.status != SENT]
    assert {(row.status, row.attempts, row.claimed_by) for row in waiting} == {(PENDING, 0, None)}
    assert _drain(app).sent == 20
    assert len(smtp_server.wait_for(30)) == 30


def test_signals_carry_the_recipient_and_whether_a_refusal_is_permanent(
    make_app: Any, smtp_server: SMTPSink
) -> None:
    app = make_app(config={"CONFIRM_MAIL_DELIVERY": "worker"})
    seen: list[tuple[str, dict[str, Any]]] = []

    def on_delivered(sender: Flask, **kwargs: Any) -> None:
        seen.append(("delivered", kwargs))

    def on_failed(sender: Flask, **kwargs: Any) -> None:
        seen.append(("failed", kwargs))

    client = app.test_client()
    with message_delivered.connected_to(on_delivered, app):
        with delivery_failed.connected_to(on_failed, app):
            smtp_server.fail_next(1, code=550)
            client.post("/signup", data={"email": "bounce@example.org"})
            _drain(app)
            smtp_server.fail_next(1, code=451)
            client.post("/signup", data={"email": "later@example.org"})
            _drain(app)
            client.post("/signup", data={"email": "fine@example.org"})
            _drain(app)
    summary = [(kind, kw["recipient"], kw.get("permanent")) for kind, kw in seen]
    assert summary == [
        ("failed", "bounce@example.org", True),
        ("failed", "later@example.org", False),
        ("delivered", "fine@example.org", None),
    ]


def test_the_mixin_indexes_pending_email_for_voiding_claims(
    build_app: Any, smtp_server: SMTPSink, tmp_path: Path
) -> None:
    """Each sign-up clears its address from other accounts' pending column: with the index
    that UPDATE looks the address up instead of reading the whole table."""
    app = build_app(f"sqlite:///{tmp_path / 'plan.db'}")
    columns = get_flow(app).columns
    with app.app_context():
        statement = columns._void_claims("a@example.org", 1).compile(db.engine)
        parameters = statement.construct_params()
        values = tuple(parameters[name] for name in statement.positiontup)
        plan = [
            str(step[-1])
            for step in db.session.connection().exec_driver_sql(
                f"EXPLAIN QUERY PLAN {statement}", values
            )
        ]
    assert any("USING INDEX" in step and "pending_email" in step for step in plan), plan


def test_a_claim_takes_concurrency_messages(
    build_app: Any, smtp_server: SMTPSink, tmp_path: Path
) -> None:
    """One batch is what the senders can have in flight: no more of the due rows."""
    config = {"CONFIRM_MAIL_DELIVERY": "worker", "CONFIRM_MAIL_CONCURRENCY": 4}
    app = build_app(f"sqlite:///{tmp_path / 'claim.db'}", config=config)
    _enqueue_many(app, 7)
    with app.app_context():
        assert len(get_flow(app).deliverer.claim("test-worker")) == 4


def test_the_expiry_check_of_each_claim_reads_the_due_index_on_sqlite(
    build_app: Any, smtp_server: SMTPSink, tmp_path: Path
) -> None:
    """Run before every claim: it must not read the whole outbox (sent rows included)."""
    app = build_app(f"sqlite:///{tmp_path / 'expiry.db'}")
    flow = get_flow(app)
    seen: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        seen.append((statement, parameters))

    with app.app_context():
        sa.event.listen(db.engine, "before_cursor_execute", capture)
        try:
            with db.engine.begin() as conn:
                outbox.expire_exhausted(conn, flow.outbox_table, 5)
        finally:
            sa.event.remove(db.engine, "before_cursor_execute", capture)
        [(statement, parameters)] = [(s, p) for s, p in seen if s.lstrip().startswith("UPDATE")]
        with db.engine.connect() as conn:
            plan = [
                str(step[-1])
                for step in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
            ]
    assert any("USING INDEX ix_confirm_mail_outbox_due" in step for step in plan), plan


def test_each_claim_and_record_runs_with_its_own_values(make_app: Any) -> None:
    """Every value of a claim or a record comes from its call (limit, ids, worker, lease,
    attempt limit), none from an earlier one."""
    app = make_app(config={"CONFIRM_MAIL_DELIVERY": "worker"})
    _enqueue_many(app, 5)
    table = get_flow(app).outbox_table
    ids = [row.id for row in _rows(app)]
    lease = timedelta(minutes=2)
    with app.app_context(), db.engine.begin() as conn:
        first = outbox.claim(conn, table, worker_id="a", limit=1, lease=lease, max_attempts=5)
        among = outbox.claim(conn, table, worker_id="b", limit=9, lease=lease * 2, ids=ids[3:])
        exhausted = outbox.claim(conn, table, worker_id="c", limit=9, lease=lease, max_attempts=0)
        rest = outbox.claim(conn, table, worker_id="d", limit=2, lease=lease, max_attempts=5)
        outbox.mark_sent(conn, table, [first[0].id], "a")
        outbox.mark_sent(conn, table, [among[1].id], "b")
        retry_at = outbox.utcnow() + timedelta(minutes=5)
        unknown, temporary = outbox.UNKNOWN, outbox.TEMPORARY
        outbox.mark_failed(conn, table, ids[1], "d", error="e1", retry_at=None, failure=unknown)
        outbox.mark_failed(
            conn, table, ids[2], "d", error="e2", retry_at=retry_at, failure=temporary
        )

    assert [r.id for r in first] == ids[:1] and [r.id for r in among] == ids[3:]
    assert exhausted == [] and [r.id for r in rest] == ids[1:3]
    rows = {row.id: row for row in _rows(app)}
    assert [rows[i].claimed_by for i in ids] == ["a", "d", "d", "b", "b"]
    assert [rows[i].status for i in ids] == [SENT, DEAD, PENDING, "sending", SENT]
    assert rows[ids[3]].due_at > outbox.utcnow() + timedelta(minutes=3)  # its 4-minute lease
    assert rows[ids[0]].sent_at is not None and rows[ids[0]].due_at is None
    assert [rows[i].last_error for i in ids[1:3]] == ["e1", "e2"]
    assert [rows[i].unknown_outcomes for i in ids[1:3]] == [1, 0]
    assert rows[ids[1]].due_at is None and rows[ids[2]].due_at == retry_at
