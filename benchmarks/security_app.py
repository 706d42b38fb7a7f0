"""The Flask peer: Flask-Security (formerly Flask-Security-Too) with ``confirmable`` on.

Two configurations:

- ``default``: Flask-Security's defaults: passwords hashed with argon2, and the
  confirmation token carrying the email address hashed with ``sha256_crypt``
  (``SECURITY_HASHING_SCHEMES``), which register and confirm both pay for.
- ``cheap``: the cheapest hashing it allows: ``pbkdf2_sha256`` at 1 round for passwords
  (``SECURITY_PASSWORD_HASH_PASSLIB_OPTIONS``; ``plaintext`` is refused as a
  ``SECURITY_PASSWORD_HASH``) and ``hex_md5`` for the token's hash of the address. What
  is left is the peer's own cost: its forms, its datastore and its synchronous mail.

In both, ``SECURITY_EMAIL_VALIDATOR_ARGS`` turns off the DNS lookup of the address's
domain that Flask-Security makes by default on register (a network round trip).

Flask-Security sends mail through Flask-Mail in the request, one connection per message;
``MAIL_SERVER``/``MAIL_PORT`` point it at the benchmark's SMTP server.
"""

from __future__ import annotations

from typing import Any

from flask import Flask
from flask_mail import Mail
from flask_sqlalchemy import SQLAlchemy

CONFIGURATIONS = ("default", "cheap")

security_db = SQLAlchemy()
_models: dict[str, type[Any]] = {}


def available() -> str | None:
    """``None`` when Flask-Security can be used, else why not."""
    try:
        import flask_security  # noqa: F401
    except ImportError as exc:
        return f"Flask-Security is not installed: pip install -e '.[bench]' ({exc.name})"
    return None


def _user_model() -> type[Any]:
    if not _models:
        from flask_security.models import fsqla_v3 as fsqla

        fsqla.FsModels.set_db_info(security_db)

        class Role(security_db.Model, fsqla.FsRoleMixin):  # type: ignore[name-defined,misc]
            pass

        class SecurityUser(security_db.Model, fsqla.FsUserMixin):  # type: ignore[name-defined,misc]
            __tablename__ = "user"

        _models["role"] = Role
        _models["user"] = SecurityUser
    return _models["user"]


def create_security_app(database_url: str, *, configuration: str, smtp_port: int) -> Flask:
    """Flask-Security with ``SECURITY_REGISTERABLE`` and ``SECURITY_CONFIRMABLE`` on."""
    if configuration not in CONFIGURATIONS:
        raise ValueError(configuration)
    from flask_security import Security, SQLAlchemyUserDatastore

    user_model = _user_model()
    app = Flask("bench_security")
    app.config.update(
        SECRET_KEY="benchmark-security-secret-key-0123456789",
        SQLALCHEMY_DATABASE_URI=database_url,
        SECURITY_PASSWORD_SALT="benchmark-password-salt",
        SECURITY_REGISTERABLE=True,
        SECURITY_CONFIRMABLE=True,
        SECURITY_EMAIL_SENDER="noreply@app.example.com",
        # Its default validation looks the domain up in DNS: off, so the run does not
        # depend on the network (and example.org would be refused).
        SECURITY_EMAIL_VALIDATOR_ARGS={"check_deliverability": False},
        WTF_CSRF_ENABLED=False,
        MAIL_SERVER="127.0.0.1",
        MAIL_PORT=smtp_port,
        MAIL_DEFAULT_SENDER=("CatLoader", "noreply@app.example.com"),
    )
    if configuration == "cheap":
        app.config.update(
            SECURITY_PASSWORD_HASH="pbkdf2_sha256",
            SECURITY_PASSWORD_HASH_PASSLIB_OPTIONS={"pbkdf2_sha256__rounds": 1},
            SECURITY_HASHING_SCHEMES=["hex_md5"],
            SECURITY_DEPRECATED_HASHING_SCHEMES=[],
        )
    Mail(app)
    security_db.init_app(app)
    datastore = SQLAlchemyUserDatastore(security_db, user_model, _models["role"])
    Security(app, datastore)
    with app.app_context():
        security_db.create_all()
    return app


def confirmation_tokens(app: Flask, emails: list[str]) -> list[str]:
    """Create unconfirmed users for ``emails`` (no mail) and their confirmation tokens."""
    from flask_security.confirmable import generate_confirmation_token
    from flask_security.utils import hash_password

    user_model = _user_model()
    tokens = []
    with app.test_request_context():
        datastore = app.extensions["security"].datastore
        password = hash_password("correct horse battery")
        users = [datastore.create_user(email=email, password=password) for email in emails]
        security_db.session.commit()
        for user in users:
            tokens.append(generate_confirmation_token(user))
        assert security_db.session.query(user_model).count() >= len(emails)
    return tokens


def dispose(app: Flask) -> None:
    with app.app_context():
        security_db.session.remove()
        security_db.engine.dispose()
