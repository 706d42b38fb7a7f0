"""``flask confirm-mail confirm --all-existing``: accounts from before the extension was added
are marked confirmed in one step; accounts that signed up through it are not."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import sqlalchemy as sa
from flask import Flask

from flask_confirm_mail import send_confirmation
from tests.apps import db, user_model
from tests.support.smtp_server import SMTPSink


def _confirmed(app: Flask, shape: str) -> dict[str, bool]:
    columns = app.extensions["confirm_mail"].columns
    with app.app_context():
        users = db.session.scalars(sa.select(user_model(shape)))
        return {columns.email_of(u): columns.is_confirmed(u) for u in users}


def test_confirm_all_existing_confirms_only_accounts_from_before(
    make_app: Callable[..., Flask], shape: str, smtp_server: SMTPSink
) -> None:
    app = make_app(shape=shape)
    flow = app.extensions["confirm_mail"]
    columns, model = flow.columns, user_model(shape)
    with app.app_context():  # rows the app wrote before the extension was added
        for email, confirmed in [("old@example.org", False), ("done@example.org", True)]:
            user = model(**{columns.email_attribute: email})
            if confirmed:
                value = columns.confirmed_value(datetime(2020, 1, 1))
                setattr(user, columns.confirmed_attribute, value)
            db.session.add(user)
        db.session.commit()
        old = sa.select(model).where(columns.email_column == "old@example.org")
        old_id = columns.id_of(db.session.scalars(old).one())
    client = app.test_client()
    assert client.post("/signup", data={"email": "new@example.org"}).status_code == 201
    assert client.post("/signup", data={"email": "pruned@example.org"}).status_code == 201
    with app.app_context():
        # Sent emails deleted by the outbox's retention: the sign-up date stays.
        outbox = flow.outbox_table
        db.session.execute(outbox.delete().where(outbox.c.recipient == "pruned@example.org"))
        queued = model(**{columns.email_attribute: "queued@example.org"})
        db.session.add(queued)
        send_confirmation(queued)  # the app's own sign-up view, without signup_view
        db.session.commit()
    smtp_server.wait_for(2)
    runner = app.test_cli_runner()
    before = _confirmed(app, shape)

    dry = runner.invoke(args=["confirm-mail", "confirm", "--all-existing"])
    assert dry.exit_code == 0, dry.output
    assert dry.output.splitlines() == [
        f"Would confirm user {old_id}",
        "1 user(s) would be confirmed; run again with --yes.",
    ]
    assert _confirmed(app, shape) == before, "a dry run changes nothing"

    done = runner.invoke(args=["confirm-mail", "confirm", "--all-existing", "--yes"])
    assert done.exit_code == 0, done.output
    assert done.output.splitlines() == [
        f"Confirming user {old_id}",
        "Confirmed 1 existing user(s).",
    ]
    assert _confirmed(app, shape) == {
        "old@example.org": True,
        "done@example.org": True,
        "new@example.org": False,  # signed up through the extension: must confirm
        "pruned@example.org": False,
        "queued@example.org": False,
    }
    again = runner.invoke(args=["confirm-mail", "confirm", "--all-existing", "--yes"])
    assert "Confirmed 0 existing user(s)." in again.output


def test_confirm_takes_one_email_or_all_existing(make_app: Callable[..., Flask]) -> None:
    app = make_app()
    runner = app.test_cli_runner()
    for args in ([], ["cat@example.org", "--all-existing"]):
        result = runner.invoke(args=["confirm-mail", "confirm", *args])
        assert result.exit_code == 2, result.output
        assert "Give one EMAIL or --all-existing." in result.output
    assert runner.invoke(args=["confirm-mail", "confirm", "--all-existing"]).exit_code == 0
