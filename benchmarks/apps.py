"""The apps measured: the extension's, and the floor, the same views with no extension.

Both have the same ``users`` table and the same ``POST /signup`` view; the extension's
decorates it with :func:`~flask_confirm_mail.signup_view`. Each has its own
Flask-SQLAlchemy object, so the floor carries none of the extension's session hooks.
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from flask import Flask, abort, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import Mapped, mapped_column

from flask_confirm_mail import ConfirmableMixin, ConfirmMail, send_confirmation, signup_view

SECRET_KEY = "benchmark-secret-key-0123456789abcdefghijklmnop"
EXTERNAL_URL = "https://app.example.com"
SENDER = ("Bench", "noreply@app.example.com")
#: When each sign-up's commit began (``time.monotonic``), by address: the start of a handoff.
COMMITTED: dict[str, float] = {}

ours_db = SQLAlchemy()
floor_db = SQLAlchemy()


class User(ConfirmableMixin, ours_db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(80), default="")


#: One extension object for every app of the benchmarks (``init_app`` per app).
confirm_mail = ConfirmMail(db=ours_db, user_model=User)


class FloorUser(floor_db.Model):  # type: ignore[name-defined,misc]
    """The same columns as :class:`User`."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(sa.String(254), unique=True, index=True)
    email_confirmed_at: Mapped[datetime | None] = mapped_column(nullable=True)
    pending_email: Mapped[str | None] = mapped_column(sa.String(254), index=True)
    name: Mapped[str] = mapped_column(sa.String(80), default="")


def sign_up(db: SQLAlchemy, model: type[Any]) -> Any:
    """The sign-up view every app shares: create the user, commit, answer 201."""
    address = request.form["email"]
    db.session.add(model(email=address, name=request.form.get("name", "")))
    COMMITTED[address] = time.monotonic()
    db.session.commit()
    return "Welcome! Check your inbox.", 201


def same_sqlite_settings(app: Flask, db: SQLAlchemy) -> None:
    """On SQLite, every app of the run uses WAL and ``synchronous=NORMAL`` (what a served
    SQLite app sets), so no ratio measures a difference of journal settings."""
    with app.app_context():
        if db.engine.dialect.name == "sqlite":
            sa.event.listen(db.engine, "connect", _sqlite_pragmas)
            db.engine.dispose()


def _sqlite_pragmas(connection: Any, record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def base_app(name: str, database_url: str, smtp_port: int | None) -> Flask:
    app = Flask(name)
    app.config.update(
        SECRET_KEY=SECRET_KEY,
        SQLALCHEMY_DATABASE_URI=database_url,
        MAIL_SERVER="127.0.0.1",
        MAIL_PORT=smtp_port or 25,
        MAIL_DEFAULT_SENDER=SENDER,
    )
    return app


def create_ours(
    database_url: str,
    *,
    delivery: str = "thread",
    smtp_port: int | None = None,
    concurrency: int | None = None,
) -> Flask:
    """The extension's app: ``POST /signup`` (a :func:`signup_view`) and ``/confirm/...``."""
    app = base_app("bench_ours", database_url, smtp_port)
    app.config.update(CONFIRM_MAIL_EXTERNAL_URL=EXTERNAL_URL, CONFIRM_MAIL_DELIVERY=delivery)
    if concurrency is not None:
        app.config["CONFIRM_MAIL_CONCURRENCY"] = concurrency
    ours_db.init_app(app)
    confirm_mail.init_app(app)
    same_sqlite_settings(app, ours_db)

    @app.post("/signup")
    @signup_view
    def signup() -> Any:
        return sign_up(ours_db, User)

    with app.app_context():
        ours_db.create_all()
    return app


def create_floor(database_url: str) -> Flask:
    """The floor: the same sign-up view with no mail, and the bare confirming UPDATE."""
    app = base_app("bench_floor", database_url, None)
    floor_db.init_app(app)
    same_sqlite_settings(app, floor_db)

    @app.post("/signup")
    def signup() -> Any:
        return sign_up(floor_db, FloorUser)

    @app.post("/confirm/<int:user_id>")
    def confirm(user_id: int) -> Any:
        table = FloorUser.__table__
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        result = floor_db.session.execute(
            sa.update(table)
            .where(table.c.id == user_id, table.c.email_confirmed_at.is_(None))
            .values(email_confirmed_at=now)
        )
        floor_db.session.commit()
        if result.rowcount != 1:  # type: ignore[attr-defined]
            abort(400)
        return "Your email address is confirmed.", 200

    with app.app_context():
        floor_db.create_all()
    return app


def enqueue(app: Flask, addresses: list[str]) -> list[int]:
    """Create users for ``addresses`` and queue their emails, in one commit; their ids."""
    with app.app_context():
        users = [User(email=address) for address in addresses]
        ours_db.session.add_all(users)
        ours_db.session.flush()
        for user in users:
            send_confirmation(user)
        ours_db.session.commit()
        return [user.id for user in users]


def dispose(app: Flask) -> None:
    """Stop the app's sender (if any) and close its connections."""
    from flask_confirm_mail import stop_delivery

    with app.app_context():
        db = app.extensions["sqlalchemy"]
        if "confirm_mail" in app.extensions:
            stop_delivery(app, timeout=10)
        db.session.remove()
        db.engine.dispose()


def worker_app() -> Flask:
    """The app ``flask confirm-mail worker`` runs in the benchmarks' worker processes."""
    return create_ours(
        os.environ["BENCH_DATABASE_URL"],
        delivery="worker",
        smtp_port=int(os.environ["BENCH_SMTP_PORT"]),
        concurrency=int(os.environ["BENCH_CONCURRENCY"]),
    )
