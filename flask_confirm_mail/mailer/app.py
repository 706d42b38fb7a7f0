"""The mailer service's app factory.

Run it with ``flask --app flask_confirm_mail.mailer run`` in development or
``gunicorn 'flask_confirm_mail.mailer:create_app()'`` in production. Without
``MAILER_REDIS_URL`` the replay store and the rate limit are per process: run one
gunicorn worker process (use ``--threads`` for concurrency), or set it to share them
between any number of workers and hosts.
"""

from __future__ import annotations

import atexit
import logging
import time

from flask import Flask, Response, g, request
from flask.logging import default_handler, has_level_handler
from werkzeug.exceptions import HTTPException

from ..redaction import SERVER_LOGGERS, install_log_redaction, redact
from ..smtp import SMTPSender
from .rate_limit import RateLimiter
from .redis_replay import RedisReplayStore, connect
from .replay import MemoryReplayStore, ReplayStore
from .service import Answer, MailerService
from .settings import MailerSettings
from .views import EXTENSION_KEY, LEGACY_PATH_PREFIXES, legacy, v1
from .wire import ErrorCode

__all__ = ["create_app"]

_PACKAGE = __name__.rpartition(".")[0]


def create_app(
    settings: MailerSettings | None = None,
    *,
    replay_store: ReplayStore | None = None,
    rate_limiter: RateLimiter | None = None,
) -> Flask:
    """Build the mailer app.

    :param settings: defaults to :meth:`MailerSettings.from_env`, which refuses to start
        (:class:`~flask_confirm_mail.errors.ConfigurationError`) without a secret of at
        least 32 bytes, an SMTP host, a sender domain or a link allowlist.
    :param replay_store: where used token ids are remembered; default in Redis with
        ``MAILER_REDIS_URL``, else in memory.
    :param rate_limiter: the per-recipient limit, from ``settings``; default in Redis
        with ``MAILER_REDIS_URL``, else in memory.
    """
    settings = settings or MailerSettings.from_env()
    app = Flask(_PACKAGE)
    app.config["MAX_CONTENT_LENGTH"] = 16 * 1024
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.logger.setLevel(settings.log_level)
    if not has_level_handler(app.logger):
        app.logger.addHandler(default_handler)
    install_log_redaction((*SERVER_LOGGERS, app.logger.name), LEGACY_PATH_PREFIXES)
    smtp = SMTPSender(settings.smtp)
    atexit.register(smtp.close)
    if settings.redis_url is not None:
        replay_store = replay_store or RedisReplayStore(connect(settings.redis_url))
        rate_limiter = rate_limiter or RateLimiter(
            settings.rate_limit,
            settings.rate_window,
            storage_uri=settings.redis_url,
            socket_connect_timeout=2.0,
            socket_timeout=2.0,
        )
    else:
        app.logger.warning(
            "MAILER_REDIS_URL is not set: the replay store and the rate limit are per "
            "process; run one worker process, or set it to share them"
        )
    app.extensions[EXTENSION_KEY] = MailerService(
        settings,
        replay_store=replay_store or MemoryReplayStore(),
        rate_limiter=rate_limiter or RateLimiter(settings.rate_limit, settings.rate_window),
        smtp=smtp,
    )
    app.register_blueprint(v1)
    if settings.legacy_endpoints:
        app.register_blueprint(legacy)
    _register_error_handlers(app)
    _register_request_log(app)
    return app


def _redacted_path() -> str:
    return redact(request.path, LEGACY_PATH_PREFIXES)


def _register_error_handlers(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        return Answer(exc.code or 400, ErrorCode.BAD_REQUEST, exc.name).to_response()

    @app.errorhandler(Exception)
    def unexpected_error(exc: Exception) -> Response:
        app.logger.error(
            "Unexpected error on %s %s", request.method, _redacted_path(), exc_info=exc
        )
        return Answer(503, ErrorCode.INTERNAL, "Internal error; retry later").to_response()


def _register_request_log(app: Flask) -> None:
    """One line per request, with the token-bearing path segment redacted."""

    @app.before_request
    def start_timer() -> None:
        g.mailer_started = time.perf_counter()

    @app.after_request
    def log_request(response: Response) -> Response:
        elapsed = time.perf_counter() - g.get("mailer_started", time.perf_counter())
        body = response.get_json(silent=True) if response.is_json else None
        error = body.get("error") if isinstance(body, dict) else None
        message_id = body.get("id") if isinstance(body, dict) else None
        level = logging.INFO if response.status_code < 500 else logging.WARNING
        app.logger.log(
            level,
            "%s %s %s error=%s id=%s %.0fms",
            request.method,
            _redacted_path(),
            response.status_code,
            error,
            message_id,
            elapsed * 1000,
        )
        return response
