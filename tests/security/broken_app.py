"""The test app with its confirm route broken, as a gunicorn target:
``gunicorn 'tests.security.broken_app:create_app()'``.

Configured from the environment: ``TEST_DATABASE_URL``, ``TEST_REDACT_REQUEST_LOGS``
(``0``: the app does not call ``redact_request_logs``) and any ``FLASK_*`` key.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask

from tests.apps import create_app as create_test_app


def break_confirm_route(app: Flask) -> None:
    """Make every use of a link raise inside the confirm route.

    The exception's message holds the token, as a driver error quoting its input would.
    """
    signer = app.extensions["confirm_mail"].signer

    def broken(value: str, cancel: bool = False) -> Any:
        raise RuntimeError(f"the database went away while checking {value}")

    signer.verify = broken


def _encoded(text: str) -> str:
    """Every character percent-encoded: a spelling the route decodes to the same token."""
    return "".join(f"%{ord(char):02X}" for char in text)


def spellings(prefix: str, token: str) -> list[tuple[str, str, dict[str, str]]]:
    """(method, request target, headers) spelling the confirm route with ``token``."""
    json = {"Accept": "application/json"}
    return [
        ("GET", f"{prefix}/{token}", {}),
        ("HEAD", f"{prefix}/{token}", {}),
        ("POST", f"{prefix}/{token}", {}),
        ("POST", f"{prefix}/{token}", json),
        ("GET", f"{prefix}/{token}?next=/x&token={token}", {}),
        ("GET", f"{prefix}/{_encoded(token)}", {}),
        ("GET", f"{prefix}%2F{token}", {}),
        ("GET", f"{prefix}/{token.replace('.', '%2E')}", {}),
        ("GET", f"/{prefix}//{token}", {}),
        ("GET", f"{prefix}/{token}/", {}),
        ("GET", f"{prefix.upper()}/{token}", {}),
        ("GET", f"http://127.0.0.1{prefix}/{token}", {}),
    ]


def create_app() -> Flask:
    config: dict[str, object] = {
        "TESTING": False,
        "PROPAGATE_EXCEPTIONS": False,
        "MAIL_SERVER": "127.0.0.1",
        "MAIL_PORT": 2525,
    }
    probe = Flask("broken-app-config")
    probe.config.from_prefixed_env()
    config.update(probe.config)
    redact = os.environ.get("TEST_REDACT_REQUEST_LOGS", "1") != "0"
    app = create_test_app(os.environ["TEST_DATABASE_URL"], config=config, redact_server_logs=redact)
    break_confirm_route(app)
    return app
