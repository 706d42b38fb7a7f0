"""An app for worker subprocesses: ``flask --app tests.worker_app confirm-mail worker``.

Configured from the environment: ``TEST_DATABASE_URL``, ``TEST_SMTP_PORT`` and any
``FLASK_*`` key (``FLASK_TEST_LEASE=2``: see ``tests.apps.shorten_delivery``).
"""

from __future__ import annotations

import os

from flask import Flask

from tests.apps import create_app as create_test_app


def create_app() -> Flask:
    config: dict[str, object] = {
        "MAIL_SERVER": "127.0.0.1",
        "MAIL_PORT": int(os.environ["TEST_SMTP_PORT"]),
        "CONFIRM_MAIL_DELIVERY": "worker",
    }
    app = Flask("worker-config")
    app.config.from_prefixed_env()
    config.update(app.config)
    return create_test_app(os.environ["TEST_DATABASE_URL"], config=config)
