"""CatLoader: the flask-confirm-mail demo.

People sign up, confirm their email from the link they receive, and upload cat
pictures. Run it with ``scripts/demo`` (or ``flask --app example_catloader run``);
see ``example_catloader/README.md``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from flask import Flask

from flask_confirm_mail import redact_request_logs
from flask_confirm_mail.mailer import RemoteTransport
from flask_confirm_mail.sqlite import tune_sqlite

from . import auth, backoffice, home, mailbox_views
from .config import configure, uses_mailer
from .error_pages import register_error_pages
from .extensions import babel, bounces, confirm_mail, csrf, db, login_manager, select_locale
from .mailbox import install_mailbox
from .schema import create_tables, register_init_db
from .security_headers import install_security_headers

__all__ = ["create_app"]

#: Where the instance folder is, when not next to the package (e.g. for a worker).
INSTANCE_PATH_ENV = "FLASK_CATLOADER_INSTANCE_PATH"


def create_app(
    test_config: Mapping[str, Any] | None = None, *, instance_path: str | None = None
) -> Flask:
    """Build CatLoader.

    :param test_config: settings that win over the defaults and the environment.
    :param instance_path: the instance folder (database, secret key, uploads, mailbox);
        default: ``FLASK_CATLOADER_INSTANCE_PATH``, else Flask's, ``instance/`` next to
        the package in a checkout.
    """
    instance_path = instance_path or os.environ.get(INSTANCE_PATH_ENV) or None
    if instance_path is not None:
        instance_path = os.path.abspath(instance_path)
    app = Flask(__name__, instance_path=instance_path)
    configure(app, test_config)

    db.init_app(app)
    with app.app_context():
        tune_sqlite(db.engine)  # WAL for a threaded server on the embedded SQLite file
    login_manager.init_app(app)
    csrf.init_app(app)
    install_mailbox(app)
    babel.init_app(app, locale_selector=select_locale)
    # Through the remote mailer when its URL is set (FLASK_CONFIRM_MAIL_MAILER_URL), else SMTP.
    confirm_mail.init_app(app, transport=RemoteTransport() if uses_mailer(app.config) else None)
    bounces.init_app(app)
    redact_request_logs(app)  # keep link tokens out of the app's and the server's logs

    app.register_blueprint(home.bp)
    app.register_blueprint(auth.bp)
    app.register_blueprint(backoffice.bp)
    app.register_blueprint(mailbox_views.bp)
    register_error_pages(app)
    install_security_headers(app)
    register_init_db(app)

    create_tables(app)  # several workers may boot at once on an empty database
    return app
