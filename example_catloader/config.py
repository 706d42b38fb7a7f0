"""CatLoader's settings: embedded defaults, then ``FLASK_*`` environment variables.

Every key can be set from the environment with Flask's prefix, e.g.
``FLASK_SQLALCHEMY_DATABASE_URI``, ``FLASK_MAIL_SERVER``, ``FLASK_CONFIRM_MAIL_MAILER_URL``
(values are read as JSON when they parse, so ``FLASK_MAIL_PORT=2525`` is a number).
What is still unset after that is derived here: the SQLite file, the upload and
mailbox folders and the secret key all live in the instance folder.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask

#: Extra room in a request for the form fields around the picture.
FORM_OVERHEAD_BYTES = 64 * 1024
SECRET_KEY_FILE = "secret_key"

DEFAULTS: Mapping[str, Any] = {
    # The confirmation flow (flask-confirm-mail).
    "CONFIRM_MAIL_APP_NAME": "CatLoader",
    "CONFIRM_MAIL_EXTERNAL_URL": "http://127.0.0.1:5000",
    "CONFIRM_MAIL_DELIVERY": "thread",
    "CONFIRM_MAIL_CONFIRMED_ENDPOINT": "bl_backoffice.listuploads",
    "CONFIRM_MAIL_UNCONFIRMED_ENDPOINT": "bl_backoffice.listuploads",
    "CONFIRM_MAIL_CHANGE_EMAIL_ENDPOINT": "bl_auth.profile",
    # Reminders to sign-ups that never confirm, at demo delays (a real site waits days):
    # a worker sends them, or `flask --app example_catloader confirm-mail remind --yes`.
    "CONFIRM_MAIL_REMINDERS": "2m, 10m",
    # Mail: SMTP when MAIL_SERVER is set, else the local mailbox.
    "MAIL_DEFAULT_SENDER": "CatLoader <noreply@catloader.localhost>",
    # Sessions.
    "SESSION_COOKIE_SAMESITE": "Lax",
    # CatLoader's own settings.
    "CATLOADER_MAX_PICTURE_BYTES": 5 * 1024 * 1024,
    "CATLOADER_MAX_PICTURE_PIXELS": 40_000_000,
    #: ``None``: keep mail in the local mailbox when neither an SMTP server
    #: (``MAIL_SERVER``) nor the mailer (``CONFIRM_MAIL_MAILER_URL``) is configured;
    #: ``True``/``False`` force it.
    "CATLOADER_MAILBOX": None,
    #: Serve the mailbox at /dev/mailbox outside debug mode (``scripts/demo`` turns it on).
    "CATLOADER_MAILBOX_PAGE": False,
    #: A werkzeug hash method for passwords; ``None``: werkzeug's default (scrypt).
    "CATLOADER_PASSWORD_HASH_METHOD": None,
}


def configure(app: Flask, overrides: Mapping[str, Any] | None = None) -> None:
    """Load defaults, then ``FLASK_*`` variables, then ``overrides``; derive the rest."""
    app.config.from_mapping(DEFAULTS)
    app.config.from_prefixed_env()
    if overrides:
        app.config.from_mapping(overrides)

    instance = Path(app.instance_path)
    instance.mkdir(parents=True, exist_ok=True)
    config = app.config
    config.setdefault("SQLALCHEMY_DATABASE_URI", f"sqlite:///{instance / 'catloader.db'}")
    config.setdefault("CATLOADER_UPLOAD_FOLDER", str(instance / "uploads"))
    config.setdefault("CATLOADER_MAILBOX_FOLDER", str(instance / "mailbox"))
    if not config.get("SECRET_KEY"):
        config["SECRET_KEY"] = instance_secret_key(instance)
    if config.get("MAX_CONTENT_LENGTH") is None:
        config["MAX_CONTENT_LENGTH"] = int(config["CATLOADER_MAX_PICTURE_BYTES"]) + (
            FORM_OVERHEAD_BYTES
        )

    mailbox = config["CATLOADER_MAILBOX"]
    if mailbox is None:
        mailbox = not config.get("MAIL_SERVER") and not uses_mailer(config)
    config["CATLOADER_MAILBOX"] = bool(mailbox)
    if config["CATLOADER_MAILBOX"]:
        # Flask-Mail builds every message and announces it, but sends nothing.
        config["MAIL_SUPPRESS_SEND"] = True
    else:
        # Flask-Mail's own default suppresses sending whenever TESTING is on.
        config.setdefault("MAIL_SUPPRESS_SEND", False)


def uses_mailer(config: Mapping[str, Any]) -> bool:
    """Whether emails go through the remote mailer: its URL is configured."""
    return bool(config.get("CONFIRM_MAIL_MAILER_URL"))


def instance_secret_key(instance: Path) -> str:
    """The secret key kept in ``instance/secret_key``, made on first use (mode 0600).

    Several processes may start at once (the app and a worker): the key is written to
    a temporary file and linked into place, so every process reads the same whole key.
    """
    path = instance / SECRET_KEY_FILE
    for _ in range(2):
        try:
            key = path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            pass
        else:
            if key:
                return key
            raise RuntimeError(f"{path} is empty: delete it to make a new key.")
        fd, temporary = tempfile.mkstemp(dir=instance, prefix=".secret_key.")
        try:
            with os.fdopen(fd, "w", encoding="ascii") as handle:
                handle.write(secrets.token_urlsafe(48) + "\n")
            try:
                os.link(temporary, path)
            except FileExistsError:
                pass
        finally:
            os.unlink(temporary)
    raise RuntimeError(f"Could not create {path}.")  # pragma: no cover - both tries raced
