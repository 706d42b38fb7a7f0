"""Small Flask apps used by the tests: one per user-model shape.

``mixin``: a new model with :class:`ConfirmableMixin`. ``legacy``: the original's
``tbl_auth`` table with its own column names and a boolean ``aut_confirmed``.
:func:`add_flask_login` gives an app Flask-Login's session and token logins.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from flask import Flask, abort, jsonify, request, session
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import Mapped, mapped_column

from flask_confirm_mail import (
    ConfirmableMixin,
    ConfirmMail,
    confirmed_required,
    find_user,
    redact_request_logs,
    signup_view,
)
from flask_confirm_mail.bounces import Bounces
from flask_confirm_mail.i18n import LANGUAGES
from flask_confirm_mail.sqlite import tune_sqlite
from flask_confirm_mail.views import client_network

db = SQLAlchemy()

LINK_SECRET = "link-secret-for-tests-0123456789abcdef"
SECRET_KEY = "app-secret-key-for-tests-0123456789abcdef"
EXTERNAL_URL = "https://app.example.com"


class User(ConfirmableMixin, db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(80), default="")


class Auth(db.Model):  # type: ignore[name-defined,misc]
    """The original's user table, column names kept."""

    __tablename__ = "tbl_auth"
    aut_id: Mapped[int] = mapped_column(primary_key=True)
    aut_email: Mapped[str] = mapped_column(sa.String(254), unique=True)
    aut_key: Mapped[str] = mapped_column(sa.String(200), default="")
    aut_isvalid: Mapped[bool] = mapped_column(default=True)
    aut_confirmed: Mapped[bool] = mapped_column(default=False)
    aut_timestamp: Mapped[datetime] = mapped_column(default=datetime.utcnow)


SHAPES: dict[str, dict[str, Any]] = {
    "mixin": {"user_model": User},
    "legacy": {
        "user_model": Auth,
        "email_attribute": "aut_email",
        "confirmed_attribute": "aut_confirmed",
        "pending_email_attribute": None,
    },
}


def user_model(shape: str) -> type[Any]:
    model: type[Any] = SHAPES[shape]["user_model"]
    return model


def base_config(database_url: str, smtp: Any = None, **overrides: Any) -> dict[str, Any]:
    """The settings every test app starts from: the test keys, ``database_url``, ``sync``
    delivery and, when given, the SMTP server ``smtp`` (a ``SMTPSink``)."""
    config: dict[str, Any] = {
        "TESTING": True,
        "SECRET_KEY": SECRET_KEY,
        "SQLALCHEMY_DATABASE_URI": database_url,
        "MAIL_SUPPRESS_SEND": False,
        "MAIL_DEFAULT_SENDER": ("CatLoader", "noreply@app.example.com"),
        "CONFIRM_MAIL_SECRET": LINK_SECRET,
        "CONFIRM_MAIL_EXTERNAL_URL": EXTERNAL_URL,
        "CONFIRM_MAIL_DELIVERY": "sync",
        "TEST_RETRY_BASE": 10,
    }
    if smtp is not None:
        config.update(MAIL_SERVER=smtp.host, MAIL_PORT=smtp.port)
    return {**config, **overrides}


def shorten_delivery(app: Flask) -> None:
    """Apply the delivery timings a test sets as ``TEST_LEASE``, ``TEST_RETRY_BASE`` and
    ``TEST_RETRY_MAX`` (seconds) to ``app``'s deliverer: they are constants, not settings."""
    deliverer = app.extensions["confirm_mail"].deliverer
    for name in ("lease", "retry_base", "retry_max"):
        if f"TEST_{name.upper()}" in app.config:
            setattr(deliverer, name, float(app.config[f"TEST_{name.upper()}"]))


def create_app(
    database_url: str,
    *,
    shape: str = "mixin",
    config: dict[str, Any] | None = None,
    redact_server_logs: bool = True,
    bounces: bool = True,
    **options: Any,
) -> Flask:
    """An app with sign-up (``/register`` checks the address first, as an app's form does),
    login and a members-only page, using ``shape``'s user model.

    ``redact_server_logs``: call ``redact_request_logs(app)`` (gunicorn's loggers too).
    ``bounces``: turn the bounces part on. ``TEST_SQLITE_TUNING`` in ``config``: call
    ``tune_sqlite`` on the app's engine.
    """
    app = Flask(__name__)
    app.config.update(base_config(database_url, **(config or {})))
    db.init_app(app)
    if app.config.get("CONFIRM_MAIL_RESEND_LIMIT"):  # the limit needs the app's Limiter
        from flask_limiter import Limiter

        app.config.setdefault("RATELIMIT_STORAGE_URI", "memory://")
        Limiter(client_network, app=app, swallow_errors=True, in_memory_fallback_enabled=True)
    confirm_mail = ConfirmMail(db=db, **SHAPES[shape], **options)
    confirm_mail.init_app(app)
    if bounces:
        Bounces(confirm_mail, app)
    if app.config.get("TEST_SQLITE_TUNING"):
        with app.app_context():
            tune_sqlite(db.engine)
    shorten_delivery(app)
    if app.config.get("TEST_BABEL"):  # Flask-Babel, the locale from Accept-Language
        from flask_babel import Babel

        def select() -> str | None:  # X-Locale: a locale as an app may compute it
            return request.headers.get("X-Locale") or request.accept_languages.best_match(LANGUAGES)

        Babel(app, locale_selector=select)
    if redact_server_logs:
        redact_request_logs(app)
    model = user_model(shape)
    columns = app.extensions["confirm_mail"].columns

    @confirm_mail.user_getter
    def current_account() -> Any:
        uid = session.get("uid")
        return None if uid is None else db.session.get(model, uid)

    @app.post("/signup")
    @signup_view
    def signup() -> Any:
        user = model(**{columns.email_attribute: request.form["email"]})
        db.session.add(user)
        db.session.commit()
        session["uid"] = columns.id_of(user)
        return jsonify(id=columns.id_of(user)), 201

    @app.post("/register")
    @signup_view
    def register() -> Any:
        """An app's own form check, before it adds the user."""
        if find_user(request.form["email"]) is not None:
            return jsonify(error="That address has an account already."), 409
        user = model(**{columns.email_attribute: request.form["email"]})
        db.session.add(user)
        db.session.commit()
        return jsonify(id=columns.id_of(user)), 201

    @app.route("/signup-async", methods=["POST", "OPTIONS"])
    @signup_view
    async def signup_async() -> Any:
        user = model(**{columns.email_attribute: request.form.get("email", "")})
        if request.method == "OPTIONS":
            return "", 204
        db.session.add(user)
        db.session.commit()
        return jsonify(id=columns.id_of(user)), 201

    @app.post("/signup-then-fail")
    @signup_view
    def signup_then_fail() -> Any:
        user = model(**{columns.email_attribute: request.form["email"]})
        db.session.add(user)
        db.session.flush()
        raise RuntimeError("the view failed after creating the user")

    @app.post("/signup-then-outage")
    @signup_view
    def signup_then_outage() -> Any:
        user = model(**{columns.email_attribute: request.form["email"]})
        db.session.add(user)
        db.session.commit()
        # The app's own next statement meets a database fault (OperationalError from the
        # driver): the sign-up is saved and its email queued.
        if db.engine.dialect.name == "postgresql":
            db.session.execute(sa.text("SET LOCAL statement_timeout = 1"))
            db.session.execute(sa.text("SELECT pg_sleep(1)"))
        db.session.execute(sa.text("SELECT * FROM a_table_that_went_away"))
        return "", 201

    @app.post("/login/<int:uid>")
    def login(uid: int) -> Any:
        if db.session.get(model, uid) is None:
            abort(404)
        session["uid"] = uid
        return "ok"

    @app.get("/members")
    @confirmed_required
    def members() -> Any:
        return "members only"

    @app.route("/members-async", methods=["GET", "OPTIONS"])
    @confirmed_required
    async def members_async() -> Any:
        return "members only, async"

    with app.app_context():
        db.create_all()
    return app


def add_flask_login(app: Flask) -> Any:
    """Give the mixin-shaped ``app`` Flask-Login, beside its ``user_getter``: a session login
    (``POST /flask-login/<id>``), a token login for an API (``Authorization: Bearer
    token-<id>``, read by a ``request_loader``), the ``login_view`` ``/login-page`` and
    ``GET /api/members`` under ``confirmed_required``. Returns the ``LoginManager``.

    The test sets Flask-Login's user protocol on :class:`User` (``is_authenticated``,
    ``is_active``, ``get_id``)."""
    from flask_login import LoginManager, login_user

    manager = LoginManager(app)
    manager.login_view = "login_page"

    @manager.user_loader
    def load_from_session(uid: str) -> Any:
        return db.session.get(User, int(uid))

    @manager.request_loader
    def load_from_token(request: Any) -> Any:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        uid = token.removeprefix("token-")
        if scheme != "Bearer" or uid == token or not uid.isdigit():
            return None
        return db.session.get(User, int(uid))

    @app.get("/login-page")
    def login_page() -> Any:
        return "log in here"

    @app.post("/flask-login/<int:uid>")
    def flask_login(uid: int) -> Any:
        login_user(db.session.get(User, uid))
        return "ok"

    @app.get("/api/members")
    @confirmed_required
    def api_members() -> Any:
        return jsonify(members="only")

    return manager
