"""``flask confirm-mail prune``: removes only sign-ups that never confirmed, after a dry run."""

from __future__ import annotations

from typing import Any

from flask import Flask

from flask_confirm_mail import signals
from tests.apps import db, user_model
from tests.conftest import link_from
from tests.support.smtp_server import SMTPSink

DAY = 86_400


def _sign_up(app: Flask, email: str) -> None:
    assert app.test_client().post("/signup", data={"email": email}).status_code == 201


def _emails(app: Flask, shape: str) -> list[str]:
    model = user_model(shape)
    attribute = "email" if shape == "mixin" else "aut_email"
    with app.app_context():
        found = sorted(getattr(user, attribute) for user in db.session.query(model).all())
        db.session.remove()
        return found


def _outbox_recipients(app: Flask) -> list[str]:
    with app.app_context():
        rows = db.session.execute(db.text("SELECT recipient FROM confirm_mail_outbox")).all()
        db.session.remove()
    return sorted(row[0] for row in rows)


def test_prune_deletes_only_old_never_confirmed_accounts(
    make_app: Any, shape: str, smtp_server: SMTPSink, clock: Any
) -> None:
    app = make_app(shape=shape)
    _sign_up(app, "old-unconfirmed@example.org")
    _sign_up(app, "old-confirmed@example.org")
    link = link_from(smtp_server.wait_for(2)[1]).removeprefix("https://app.example.com")
    assert app.test_client().post(link).status_code == 200
    clock.shift(15 * DAY)
    _sign_up(app, "new-unconfirmed@example.org")
    everyone = ["new-unconfirmed@example.org", "old-confirmed@example.org",
                "old-unconfirmed@example.org"]  # fmt: skip
    runner = app.test_cli_runner()

    dry = runner.invoke(args=["confirm-mail", "prune", "--older-than", "14d"])
    assert dry.exit_code == 0, dry.output
    assert "Would delete user" in dry.output and "old-unconfirmed@example.org" in dry.output
    assert "1 account(s) would be deleted" in dry.output
    assert _emails(app, shape) == everyone

    pruned: list[str] = []
    with signals.unconfirmed_account_pruned.connected_to(
        lambda sender, **kw: pruned.append(kw["email"]), app
    ):
        done = runner.invoke(args=["confirm-mail", "prune", "--older-than", "14d", "--yes"])
    assert done.exit_code == 0, done.output
    assert "Deleted 1 never-confirmed account(s)." in done.output
    assert pruned == ["old-unconfirmed@example.org"]
    assert _emails(app, shape) == everyone[:2]
    assert "old-unconfirmed@example.org" not in _outbox_recipients(app)


def test_prune_refuses_an_unreadable_age(make_app: Any) -> None:
    result = (
        make_app()
        .test_cli_runner()
        .invoke(args=["confirm-mail", "prune", "--older-than", "two weeks"])
    )
    assert result.exit_code == 2 and "14d" in result.output
