"""The mailer service (``flask_confirm_mail.mailer``) under gunicorn, for the original design.

Configured from the environment like a deployment: the original's variable names
(``JWT_MAILER_SECRET``, ``MAILERTOGO_*``) and ``MAILER_LEGACY_ENDPOINTS=1`` for the
original's ``GET /emailservice-cat/<service>/<token>`` calls.
"""

from __future__ import annotations

import importlib.util
import sys

from benchmarks.apps import EXTERNAL_URL, MAILER_SECRET
from benchmarks.context import BenchContext
from benchmarks.processes import ChildProcess, free_port


def available() -> str | None:
    """``None`` when the mailer service can run, else why not."""
    for module in ("flask_confirm_mail.mailer", "flask_confirm_mail.mailer.remote"):
        try:
            found = importlib.util.find_spec(module) is not None
        except ImportError:
            found = False
        if not found:
            return "mailer not available"
    return None


def mailer_process(
    context: BenchContext,
    *,
    smtp_port: int,
    workers: int = 1,
    threads: int = 4,
    extra_env: dict[str, str] | None = None,
    name: str = "mailer",
) -> tuple[ChildProcess, str]:
    """The mailer in gunicorn (by default one worker, as its docs ask without Redis, with
    threads); and its URL."""
    port = free_port()
    env = {
        "JWT_MAILER_SECRET": MAILER_SECRET,
        "MAILERTOGO_SMTP_HOST": "127.0.0.1",
        "MAILERTOGO_SMTP_PORT": str(smtp_port),
        "MAILER_SMTP_SECURITY": "none",
        "MAILERTOGO_DOMAIN": "app.example.com",
        "SENDER_NAME": "CatLoader",
        "MAILER_ALLOWED_LINK_PREFIXES": f"{EXTERNAL_URL}/confirm/",
        "MAILER_LEGACY_ENDPOINTS": "1",
        "MAILER_RATE_LIMIT": "0",
        "MAILER_LOG_LEVEL": "WARNING",
        **(extra_env or {}),
    }
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "--workers",
        str(workers),
        "--threads",
        str(threads),
        "--bind",
        f"127.0.0.1:{port}",
        "--log-level",
        "warning",
        "flask_confirm_mail.mailer:create_app()",
    ]
    process = ChildProcess(command, log_path=context.log_path(name), env=env)
    return process, f"http://127.0.0.1:{port}/"
