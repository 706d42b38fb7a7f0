"""The apps the scenarios measure: this extension's, and the floor without any mail.

Both have the same user table and the same sign-up view; only the extension's app
decorates it with :func:`~flask_confirm_mail.signup_view`. Each kind has its own
Flask-SQLAlchemy object, so the floor carries none of the extension's session hooks.
The factories ending in ``_from_env`` are for child processes (workers, gunicorn):
they read ``BENCH_DATABASE_URL`` and ``BENCH_SMTP_PORT``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from flask import Flask, abort, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import Mapped, mapped_column

from flask_confirm_mail import ConfirmableMixin, ConfirmMail, signup_view
from flask_confirm_mail.outbox import utcnow

SECRET_KEY = "benchmark-app-secret-key-0123456789abcdef"
LINK_SECRET = "benchmark-link-secret-0123456789abcdefgh"
MAILER_SECRET = "benchmark-mailer-secret-0123456789abcdef"
EXTERNAL_URL = "https://app.example.com"
SENDER = ("CatLoader", "noreply@app.example.com")

ours_db = SQLAlchemy()
floor_db = SQLAlchemy()


class User(ConfirmableMixin, ours_db.Model):  # type: ignore[name-defined,misc]
    """The extension's user: the mixin's columns and a name."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(80), default="")


class FloorUser(floor_db.Model):  # type: ignore[name-defined,misc]
    """The same table for the floor app."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(sa.String(254), unique=True, index=True)
    email_confirmed_at: Mapped[datetime | None] = mapped_column(nullable=True)
    pending_email: Mapped[str | None] = mapped_column(sa.String(254), nullable=True)
    name: Mapped[str] = mapped_column(sa.String(80), default="")


def _signup(db: SQLAlchemy, model: type[Any]) -> Any:
    """The sign-up view both apps share: create the user, commit, answer 201."""
    user = model(email=request.form["email"], name=request.form.get("name", ""))
    db.session.add(user)
    db.session.commit()
    return "Welcome! Check your inbox.", 201


def _base_app(name: str, database_url: str) -> Flask:
    app = Flask(name)
    app.config.update(
        SECRET_KEY=SECRET_KEY,
        SQLALCHEMY_DATABASE_URI=database_url,
        MAIL_DEFAULT_SENDER=SENDER,
    )
    return app


def create_ours(
    database_url: str,
    *,
    delivery: str = "thread",
    smtp_port: int | None = None,
    transport: str = "flask_mail",
    mailer_url: str | None = None,
    mailer_wire: str = "v1",
    poll_interval: float = 1.0,
    create_tables: bool = True,
    concurrency: int = 8,
    prepare: Callable[[Flask], object] | None = None,
) -> Flask:
    """The extension's app: ``POST /signup`` (a :func:`signup_view`) and ``/confirm/...``.

    ``prepare`` is called before ``init_app`` (``celery`` delivery: the app's Celery).
    """
    app = _base_app("bench_ours", database_url)
    app.config.update(
        MAIL_SERVER="127.0.0.1",
        MAIL_PORT=smtp_port or 25,
        MAIL_SUPPRESS_SEND=smtp_port is None,
        CONFIRM_MAIL_SECRET=LINK_SECRET,
        CONFIRM_MAIL_EXTERNAL_URL=EXTERNAL_URL,
        CONFIRM_MAIL_DELIVERY=delivery,
        CONFIRM_MAIL_TRANSPORT=transport,
        CONFIRM_MAIL_POLL_INTERVAL=poll_interval,
        CONFIRM_MAIL_CONCURRENCY=concurrency,
    )
    if transport == "remote":
        app.config.update(
            CONFIRM_MAIL_MAILER_URL=mailer_url,
            CONFIRM_MAIL_MAILER_SECRET=MAILER_SECRET,
            CONFIRM_MAIL_MAILER_WIRE=mailer_wire,
        )
    ours_db.init_app(app)
    if prepare is not None:
        prepare(app)
    ConfirmMail(db=ours_db, user_model=User).init_app(app)

    @app.post("/signup")
    @signup_view
    def signup() -> Any:
        return _signup(ours_db, User)

    if create_tables:
        with app.app_context():
            ours_db.create_all()
    return app


def create_floor(database_url: str) -> Flask:
    """The floor: the same sign-up view with no mail, a bare confirm, a bare page."""
    app = _base_app("bench_floor", database_url)
    floor_db.init_app(app)

    @app.post("/signup")
    def signup() -> Any:
        return _signup(floor_db, FloorUser)

    @app.post("/confirm/<int:user_id>")
    def confirm(user_id: int) -> Any:
        """The one-row UPDATE the extension's confirm route makes, and nothing else."""
        table = FloorUser.__table__
        result = floor_db.session.execute(
            sa.update(table)
            .where(table.c.id == user_id, table.c.email_confirmed_at.is_(None))
            .values(email_confirmed_at=utcnow())
        )
        floor_db.session.commit()
        if result.rowcount != 1:  # type: ignore[attr-defined]
            abort(400)
        return "Your email address is confirmed.", 200

    page_template = app.jinja_env.from_string(PAGE)

    @app.get("/page/<int:user_id>")
    def page(user_id: int) -> Any:
        """A one-row read and a small template: the floor of a served confirm page."""
        user = floor_db.session.get(FloorUser, user_id)
        if user is None:
            abort(404)
        return page_template.render(email=user.email)

    with app.app_context():
        floor_db.create_all()
    return app


PAGE = """<!doctype html><html><head><title>Confirm</title></head><body>
<form method="post"><p>Confirm {{ email }}?</p><button>Confirm</button></form>
</body></html>"""


def _env_port() -> int | None:
    value = os.environ.get("BENCH_SMTP_PORT")
    return int(value) if value else None


def create_ours_from_env() -> Flask:
    """The extension's app in ``worker`` delivery mode, for ``flask confirm-mail worker``."""
    return create_ours(
        os.environ["BENCH_DATABASE_URL"],
        delivery="worker",
        smtp_port=_env_port(),
        create_tables=False,
        concurrency=int(os.environ.get("BENCH_CONCURRENCY", "8")),
    )


def create_floor_from_env() -> Flask:
    """The floor app, for gunicorn."""
    return create_floor(os.environ["BENCH_DATABASE_URL"])
