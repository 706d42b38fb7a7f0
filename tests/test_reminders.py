"""Reminders to sign-ups that never confirmed: once each, by workers and ``remind``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask, jsonify, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import Mapped, mapped_column

from flask_confirm_mail import (
    ConfirmableMixin,
    ConfirmMail,
    change_email,
    outbox,
    signup_view,
)
from flask_confirm_mail.errors import ConfigurationError
from flask_confirm_mail.mailer.remote import RemoteTransport
from flask_confirm_mail.mailer.wire import verify_wrapping_token
from flask_confirm_mail.settings import Settings
from flask_confirm_mail.transport import ConfirmationEmail
from tests.apps import EXTERNAL_URL, LINK_SECRET, SECRET_KEY, db, user_model
from tests.conftest import link_from
from tests.support.smtp_server import ReceivedMail, SMTPSink
from tests.test_confirm_code import code_from

ROOT = Path(__file__).resolve().parent.parent
DAY = 86_400
SUBJECT = "Reminder: confirm your email address"
REMINDERS = {"CONFIRM_MAIL_REMINDERS": "1d, 3d"}


@pytest.mark.parametrize(
    ("value", "delays"),
    [
        ("1d, 3d", (timedelta(days=1), timedelta(days=3))),
        ([90, "2h", timedelta(days=1)], (timedelta(seconds=90), timedelta(hours=2),
                                         timedelta(days=1))),
        ("", ()),
        ((), ()),
    ],
)  # fmt: skip
def test_reminders_setting_reads_delays(value: Any, delays: tuple[timedelta, ...]) -> None:
    key = Settings.reminders.key
    assert Settings.reminders.parse(value, key, Flask(__name__)) == delays


@pytest.mark.parametrize("value", ["3d, 1d", "1d, 1d", "soon", "1d,,x", [0], [True], [None]])
def test_reminders_setting_refuses_unreadable_or_unordered_delays(value: Any) -> None:
    with pytest.raises(ConfigurationError, match="CONFIRM_MAIL_REMINDERS"):
        Settings.reminders.parse(value, Settings.reminders.key, Flask(__name__))


def _sign_up(app: Flask, email: str) -> int:
    answer = app.test_client().post("/signup", data={"email": email})
    assert answer.status_code == 201
    return int(answer.json["id"])


def _reminder_rows(app: Flask) -> list[Any]:
    table = app.extensions["confirm_mail"].outbox_table
    with app.app_context(), db.engine.connect() as conn:
        query = sa.select(table).where(table.c.purpose == "reminder").order_by(table.c.id)
        return list(conn.execute(query).all())


def _reminders_received(sink: SMTPSink) -> list[ReceivedMail]:
    return [m for m in sink.messages if m.message["Subject"] == SUBJECT]


def _use_link(app: Flask, mail: ReceivedMail) -> str:
    """POST the link in ``mail``; the JSON status of the answer."""
    path = link_from(mail).removeprefix("https://app.example.com")
    answer = app.test_client().post(path, headers={"Accept": "application/json"})
    return str(answer.json["status"])


def _remind(app: Flask, *args: str) -> str:
    result = app.test_cli_runner().invoke(args=["confirm-mail", "remind", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_remind_sends_each_due_reminder_once_to_never_confirmed_sign_ups_only(
    make_app: Any, smtp_server: SMTPSink, clock: Any
) -> None:
    # No cooldown: changed@ gets its change notice though its sign-up email went out just now.
    app = make_app(config={**REMINDERS, "CONFIRM_MAIL_RESEND_COOLDOWN": 0})
    waiting = _sign_up(app, "waiting@example.org")
    _sign_up(app, "confirmed@example.org")
    _sign_up(app, "changed@example.org")
    smtp_server.fail_next(1, 550)  # its sign-up email bounces: the address is marked
    _sign_up(app, "bounced@example.org")
    mails = smtp_server.wait_for(3)
    for mail in mails[1:3]:  # confirmed@ and changed@ confirm; changed@ then asks for a change
        path = link_from(mail).removeprefix("https://app.example.com")
        assert app.test_client().post(path).status_code == 200
    with app.app_context():
        user = db.session.query(user_model("mixin")).filter_by(email="changed@example.org").one()
        change_email(user, "elsewhere@example.org")
        user.email_confirmed_at = None  # even unconfirmed again, it is no never-confirmed sign-up
        db.session.commit()
    before = len(smtp_server.wait_for(5))

    clock.shift(DAY - 10)
    assert "0 reminder(s) due" in _remind(app)
    clock.shift(20)
    dry = _remind(app)
    assert f"Would remind user {waiting} <waiting@example.org> (reminder 1)" in dry
    assert "1 reminder(s) due; run again with --yes" in dry
    assert _reminder_rows(app) == [] and len(smtp_server.messages) == before

    sent = _remind(app, "--yes")
    assert f"Reminded user {waiting} <waiting@example.org> (reminder 1)" in sent
    assert "Queued 1 reminder(s)." in sent
    [reminder] = _reminders_received(smtp_server)
    assert reminder.rcpt_tos == ["waiting@example.org"]
    text = reminder.message.get_body(("plain",)).get_content()
    assert "not confirmed your email address yet" in text
    assert code_from(reminder) in text, "the text part shows the code its HTML part shows"
    assert "Queued 0 reminder(s)." in _remind(app, "--yes"), "a rerun sends nothing again"

    clock.shift(2 * DAY)
    assert "(reminder 2)" in _remind(app, "--yes")
    first, second = _reminders_received(smtp_server)
    assert link_from(first) != link_from(second), "each reminder carries a fresh link"
    assert [(r.reminder, r.status) for r in _reminder_rows(app)] == [(1, "sent"), (2, "sent")]

    assert _use_link(app, second) == "confirmed"
    clock.shift(30 * DAY)
    assert "Queued 0 reminder(s)." in _remind(app, "--yes")


def test_an_address_no_email_can_go_to_is_skipped_not_the_end_of_every_reminder(
    make_app: Any, smtp_server: SMTPSink, clock: Any, caplog: Any
) -> None:
    app = make_app(config=REMINDERS)
    broken = _sign_up(app, "first@example.org")
    _sign_up(app, "second@example.org")
    with app.app_context():  # as an admin's script or an older app may have stored it
        db.session.execute(
            sa.update(user_model("mixin")).where(user_model("mixin").id == broken)
            .values(email="admin@localhost")
        )  # fmt: skip
        db.session.commit()
    clock.shift(DAY + 10)
    assert "Queued 1 reminder(s)." in _remind(app, "--yes")
    assert [m.rcpt_tos for m in _reminders_received(smtp_server)] == [["second@example.org"]]
    assert any(f"User {broken} has an address" in r.getMessage() for r in caplog.records)


def test_only_the_latest_due_reminder_is_sent(
    make_app: Any, smtp_server: SMTPSink, clock: Any
) -> None:
    app = make_app(config=REMINDERS)
    _sign_up(app, "late@example.org")
    clock.shift(4 * DAY)
    assert "(reminder 2)" in _remind(app, "--yes")
    assert "Queued 0 reminder(s)." in _remind(app, "--yes")
    assert [r.reminder for r in _reminder_rows(app)] == [2]
    assert len(_reminders_received(smtp_server)) == 1


def test_remind_without_reminders_configured_says_so(make_app: Any) -> None:
    result = make_app().test_cli_runner().invoke(args=["confirm-mail", "remind"])
    assert result.exit_code == 1 and "CONFIRM_MAIL_REMINDERS" in result.output


# --- real worker processes ---------------------------------------------------------------------


def _worker(database_url: str, smtp: SMTPSink, *args: str, **config: str) -> subprocess.Popen[str]:
    env = dict(os.environ, TEST_DATABASE_URL=database_url, TEST_SMTP_PORT=str(smtp.port))
    env["FLASK_CONFIRM_MAIL_REMINDERS"] = '"1d, 3d"'  # JSON, as from_prefixed_env reads it
    env.update({f"FLASK_{key}": value for key, value in config.items()})
    command = [sys.executable, "-m", "flask", "--app", "tests.worker_app", "confirm-mail",
               "worker", *args]  # fmt: skip
    return subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _backdate(app: Flask, seconds: int) -> None:
    """Make every sign-up ``seconds`` older (the workers run on the real clock): its emails,
    and its sign-up time on the state table."""
    flow = app.extensions["confirm_mail"]
    table, state = flow.outbox_table, flow.state_table
    with app.app_context(), db.engine.begin() as conn:
        rows = conn.execute(sa.select(table.c.id, table.c.created_at)).all()
        for row in rows:
            older = row.created_at - timedelta(seconds=seconds)
            conn.execute(sa.update(table).where(table.c.id == row.id).values(created_at=older))
        key = (state.c.user_id, state.c.address)
        for user_id, address, at in conn.execute(sa.select(*key, state.c.signed_up_at)).all():
            if at is not None:
                earlier = at - timedelta(seconds=seconds)
                where = (state.c.user_id == user_id, state.c.address == address)
                conn.execute(sa.update(state).where(*where).values(signed_up_at=earlier))


def test_two_worker_processes_never_send_one_reminder_twice(
    make_app: Any, smtp_server: SMTPSink, database_url: str
) -> None:
    app = make_app(config={"CONFIRM_MAIL_DELIVERY": "worker"})
    addresses = [f"sleepy{i}@example.org" for i in range(12)]
    for address in addresses:
        _sign_up(app, address)
    _backdate(app, 2 * DAY)

    workers = [_worker(database_url, smtp_server, "--once") for _ in range(2)]
    for worker in workers:
        _, err = worker.communicate(timeout=60)
        assert worker.returncode == 0, err

    reminded = Counter(m.rcpt_tos[0] for m in _reminders_received(smtp_server))
    assert reminded == Counter(addresses), "each sign-up got its first reminder exactly once"
    rows = _reminder_rows(app)
    assert sorted((r.recipient, r.reminder) for r in rows) == [(a, 1) for a in sorted(addresses)]
    assert {r.status for r in rows} == {"sent"}


def test_a_running_worker_sends_reminders_as_they_come_due(
    make_app: Any, smtp_server: SMTPSink, database_url: str
) -> None:
    app = make_app(config={"CONFIRM_MAIL_DELIVERY": "worker"})
    worker = _worker(database_url, smtp_server, "--poll-interval", "0.1",
                     "--remind-every", "0.2")  # fmt: skip
    try:
        _sign_up(app, "slow@example.org")
        [signup] = smtp_server.wait_for(1, timeout=30)
        assert signup.message["Subject"] != SUBJECT
        _backdate(app, DAY)  # a day has passed, as far as the outbox knows
        reminder = smtp_server.wait_for(2, timeout=30)[1]
        assert reminder.message["Subject"] == SUBJECT
        assert reminder.rcpt_tos == ["slow@example.org"]
        link_from(reminder)
    finally:
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err
    assert [r.reminder for r in _reminder_rows(app)] == [1]


def test_a_reminder_another_worker_queued_meanwhile_is_skipped_the_others_sent(
    make_app: Any, smtp_server: SMTPSink, clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(config={"CONFIRM_MAIL_REMINDERS": "1d"})
    early = [_sign_up(app, f"early{i}@example.org") for i in range(2)]
    clock.shift(3600)
    late = _sign_up(app, "late@example.org")
    clock.shift(DAY - 1800)
    assert "Queued 2 reminder(s)." in _remind(app, "--yes")
    clock.shift(3600)

    # A scan that read the outbox before another worker's reminders were committed: it
    # still lists the early sign-ups, after the one really due.
    real = outbox.signed_up_before

    def stale(*args: Any, **kwargs: Any) -> list[str]:
        return [str(uid) for uid in [late, *early]] + [
            uid for uid in real(*args, **kwargs) if int(uid) not in (late, *early)
        ]

    monkeypatch.setattr(outbox, "signed_up_before", stale)
    output = _remind(app, "--yes")
    assert "Queued 1 reminder(s)." in output and "late@example.org" in output
    reminded = Counter(m.rcpt_tos[0] for m in _reminders_received(smtp_server))
    assert reminded == Counter(["early0@example.org", "early1@example.org", "late@example.org"])
    assert {r.status for r in _reminder_rows(app)} == {"sent"}


def test_the_original_table_with_a_boolean_column_is_reminded_until_it_confirms(
    make_app: Any, smtp_server: SMTPSink, clock: Any
) -> None:
    app = make_app(shape="legacy", config=REMINDERS)
    _sign_up(app, "aut@example.org")
    _sign_up(app, "done@example.org")
    path = link_from(smtp_server.wait_for(2)[1]).removeprefix("https://app.example.com")
    assert app.test_client().post(path).status_code == 200
    clock.shift(DAY + 1)
    output = _remind(app, "--yes")
    assert "<aut@example.org> (reminder 1)" in output and "done@" not in output
    [reminder] = _reminders_received(smtp_server)
    assert _use_link(app, reminder) == "confirmed"
    clock.shift(3 * DAY)
    assert "Queued 0 reminder(s)." in _remind(app, "--yes")


@pytest.mark.parametrize("wire", ["v1", "variance"])
def test_the_remote_mailer_writes_a_reminder_with_its_signup_template(wire: str) -> None:
    secret = b"mailer-secret-for-tests-0123456789abcdef"
    remote = RemoteTransport(mailer_url="http://127.0.0.1:9/", mailer_secret=secret, wire=wire)
    email = ConfirmationEmail(
        outbox_id=1, user_id="7", recipient="sleepy@example.org", purpose="reminder",
        message_id="<1@app.example.com>", link_prefix="https://app.example.com/confirm/",
        link_token="token", expires_at=None, lifetime=timedelta(days=2),
    )  # fmt: skip
    method, path, headers = remote.build_request(email)
    if wire == "v1":
        token = headers["Authorization"].removeprefix("Bearer ")
        assert verify_wrapping_token(token, [secret]).template == "signup"
    else:
        assert method == "GET" and path.startswith("/emailservice-cat/signup/")


uuid_db = SQLAlchemy()


class UuidUser(ConfirmableMixin, uuid_db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "uuid_users"
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)


@pytest.fixture
def uuid_app(database_url: str, smtp_server: SMTPSink) -> Iterator[Flask]:
    """An app whose users have UUID keys (SQLite stores them as 32 hex digits)."""
    app = Flask(__name__)
    app.config.update(
        TESTING=True, SECRET_KEY=SECRET_KEY, SQLALCHEMY_DATABASE_URI=database_url,
        MAIL_SERVER=smtp_server.host, MAIL_PORT=smtp_server.port,
        MAIL_SUPPRESS_SEND=False, MAIL_DEFAULT_SENDER="noreply@app.example.com",
        CONFIRM_MAIL_SECRET=LINK_SECRET,
        CONFIRM_MAIL_EXTERNAL_URL=EXTERNAL_URL, CONFIRM_MAIL_DELIVERY="sync",
        CONFIRM_MAIL_REMINDERS="1d",
    )  # fmt: skip
    uuid_db.init_app(app)
    ConfirmMail(db=uuid_db, user_model=UuidUser).init_app(app)
    with app.app_context():
        uuid_db.create_all()
    yield app
    with app.app_context():
        uuid_db.session.remove()
        uuid_db.drop_all()
        uuid_db.engine.dispose()


def test_users_with_uuid_keys_are_reminded(
    uuid_app: Flask, smtp_server: SMTPSink, clock: Any
) -> None:
    @uuid_app.post("/signup")  # reminders go to sign-ups: accounts made by a signup_view
    @signup_view
    def signup() -> Any:
        user = UuidUser(email=request.form["email"])
        uuid_db.session.add(user)
        uuid_db.session.commit()
        return jsonify(id=str(user.id)), 201

    client = uuid_app.test_client()
    waiting_id = client.post("/signup", data={"email": "uuid-waiting@example.org"}).json["id"]
    done_id = client.post("/signup", data={"email": "uuid-done@example.org"}).json["id"]
    with uuid_app.app_context():
        flow = uuid_app.extensions["confirm_mail"]
        assert flow.confirm_user(uuid_db.session.get(UuidUser, uuid.UUID(done_id)))
        uuid_db.session.commit()
    assert len(smtp_server.wait_for(2)) == 2
    clock.shift(DAY + 1)
    output = _remind(uuid_app, "--yes")
    assert f"Reminded user {waiting_id} <uuid-waiting@example.org> (reminder 1)" in output
    assert "Queued 1 reminder(s)." in output
    assert [m.rcpt_tos for m in _reminders_received(smtp_server)] == [["uuid-waiting@example.org"]]
