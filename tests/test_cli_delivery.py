"""CLI commands deliver what they queue before they exit, whatever the delivery mode."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from flask import Flask

from tests.apps import db, user_model
from tests.support.smtp_server import SMTPSink

ROOT = Path(__file__).resolve().parent.parent


def _cli(database_url: str, smtp: SMTPSink, *args: str, **config: str) -> str:
    env = dict(os.environ, TEST_DATABASE_URL=database_url, TEST_SMTP_PORT=str(smtp.port))
    env.update({f"FLASK_{key}": value for key, value in config.items()})
    command = [sys.executable, "-m", "flask", "--app", "tests.worker_app", "confirm-mail", *args]
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _statuses(app: Flask) -> list[str]:
    with app.app_context():
        rows = db.session.execute(db.text("SELECT status FROM confirm_mail_outbox")).all()
    return [row[0] for row in rows]


def test_send_in_thread_mode_has_sent_the_email_when_it_exits(
    make_app: Any, smtp_server: SMTPSink, database_url: str
) -> None:
    app = make_app(config={"CONFIRM_MAIL_DELIVERY": "worker"})
    with app.app_context():
        db.session.add(user_model("mixin")(email="cli-thread@example.org"))
        db.session.commit()  # a worker-mode app: nothing is queued or sent yet
    smtp_server.delay = 0.5  # a slow provider: a sender thread would still be busy at exit

    output = _cli(
        database_url, smtp_server, "send", "cli-thread@example.org", CONFIRM_MAIL_DELIVERY="thread"
    )

    assert ": sent." in output
    assert [m.rcpt_tos for m in smtp_server.messages] == [["cli-thread@example.org"]]
    assert _statuses(app) == ["sent"]
