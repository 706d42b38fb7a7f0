"""The :class:`ConfirmMail` extension object: ``init_app`` checks the settings and wires
the flow into the app (blueprint, CLI, session events, request hooks, logging)."""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa
from flask import Flask
from flask.logging import default_handler, has_level_handler
from flask_mail import Mail
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.exc import SQLAlchemyError

from .bounces import bounce_models_for, install_bounces
from .cli import cli_group
from .confirmation import EXTENSION_KEY, ConfirmationFlow, listen_to_session
from .errors import ConfigurationError
from .i18n import install_template_gettext
from .outbox import outbox_model_for
from .redaction import install_log_redaction
from .remote import RemoteTransport
from .settings import OPTION_NAMES, Settings
from .tasks import install_celery_delivery
from .transport import SMTPTransport, Transport
from .users import UserColumns
from .views import blueprint, limit_resend
from .webhooks import install_webhooks

G = TypeVar("G", bound=Callable[[], Any])

logger = logging.getLogger("flask_confirm_mail")

#: Seconds a SQLite connection waits for the write lock before "database is locked".
SQLITE_BUSY_TIMEOUT = 15
_UNUSABLE_SQLITE_CONNECTION = ("readonly database", "disk is full", "disk i/o error")


class ConfirmMail:
    """The email-confirmation flow for a Flask app with a Flask-SQLAlchemy user model.

    :param app: an app to initialize now; or call :meth:`init_app` later.
    :param db: the app's :class:`~flask_sqlalchemy.SQLAlchemy`; the outbox table is
        defined on it (:attr:`outbox_model`), so migrations see it.
    :param user_model: the user model class.
    :param email_attribute: attribute holding the address.
    :param confirmed_attribute: attribute recording confirmation, a DateTime or a Boolean
        column.
    :param pending_email_attribute: attribute holding a new address waiting for
        confirmation, or ``None`` when the table has none.
    :param transport: a :class:`~flask_confirm_mail.Transport` instance to use instead of
        the one ``CONFIRM_MAIL_TRANSPORT`` names.
    :param options: any setting, by its name without the ``CONFIRM_MAIL_`` prefix, in
        lower case (``lifetime=timedelta(hours=2)``); these win over ``app.config``.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        db: SQLAlchemy,
        user_model: type[Any],
        email_attribute: str = "email",
        confirmed_attribute: str = "email_confirmed_at",
        pending_email_attribute: str | None = "pending_email",
        transport: Transport | None = None,
        **options: Any,
    ) -> None:
        unknown = sorted(name for name in options if name.upper() not in OPTION_NAMES)
        if unknown:
            raise TypeError(f"ConfirmMail() got unknown options: {', '.join(unknown)}")
        self.db = db
        self.user_model = user_model
        self.email_attribute = email_attribute
        self.confirmed_attribute = confirmed_attribute
        self.pending_email_attribute = pending_email_attribute
        self.transport = transport
        self.options = {name.upper(): value for name, value in options.items()}
        #: The outbox model, defined on ``db`` (table ``confirm_mail_outbox``).
        self.outbox_model = outbox_model_for(db)
        bounce_models_for(db)  # the marks tables, on ``db`` beside the outbox
        self._user_getter: Callable[[], Any] | None = None
        self._flows: weakref.WeakSet[ConfirmationFlow] = weakref.WeakSet()
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Check the settings, then register the blueprint, CLI, hooks and per-app state.

        :raises ConfigurationError: an unsafe or missing setting, or a second call for
            the same app.
        """
        if EXTENSION_KEY in app.extensions:
            raise ConfigurationError(
                "ConfirmMail.init_app was already called for this app; call it once per app."
            )
        settings = Settings.load(app, self.options)
        columns = UserColumns(
            self.user_model,
            email=self.email_attribute,
            confirmed=self.confirmed_attribute,
            pending_email=self.pending_email_attribute,
        )
        if "mail" not in app.extensions:
            Mail().init_app(app)
        transport = self.transport or _configured_transport(settings)
        transport.init_app(app)  # checks its settings (MAIL_PORT=abc fails here)
        flow = ConfirmationFlow(
            db=self.db,
            outbox_model=self.outbox_model,
            settings=settings,
            columns=columns,
            transport=transport,
        )
        if settings.delivery == "celery":
            install_celery_delivery(app, flow)
        flow.user_getter = self._user_getter
        self._flows.add(flow)
        app.extensions[EXTENSION_KEY] = flow
        listen_to_session(self.db)
        if app.extensions.get("sqlalchemy") is self.db:
            app.teardown_appcontext(_session_closer(self.db))
        if settings.sqlite_tuning and app.extensions.get("sqlalchemy") is self.db:
            _tune_sqlite(app, self.db)
        install_template_gettext(app)
        app.register_blueprint(blueprint, url_prefix=settings.url_prefix)
        if settings.resend_limit:
            limit_resend(app, settings.resend_limit)
        install_webhooks(
            app, settings, install_bounces(app, self.db, flow.outbox_table, flow.deliverer)
        )
        app.cli.add_command(cli_group)
        if settings.delivery == "sync":
            app.after_request(flow.after_request)
        # Like Flask's app.logger: a failed delivery shows in the console unless the app
        # configured logging itself.
        if not has_level_handler(logger):
            logger.addHandler(default_handler)
        # Flask's exception log ("Exception on /confirm/<token> [GET]") and the development
        # server's request lines name the path. gunicorn's loggers are redacted by its
        # config file or redact_request_logs (docs/security.rst).
        install_log_redaction((app.logger.name, logger.name, "werkzeug"), [settings.url_prefix])

    def user_getter(self, getter: G) -> G:
        """Register the function that returns the logged-in user (or ``None``).

        Needed by :func:`~flask_confirm_mail.confirmed_required` when the app does not
        use Flask-Login::

            @confirm_mail.user_getter
            def current_account():
                return db.session.get(User, session.get("user_id"))
        """
        self._user_getter = getter
        for flow in self._flows:
            flow.user_getter = getter
        return getter


def _configured_transport(settings: Settings) -> Transport:
    """The transport ``CONFIRM_MAIL_TRANSPORT`` names."""
    if settings.transport == "remote":
        assert settings.mailer_url is not None and settings.mailer_secret is not None
        return RemoteTransport(
            mailer_url=settings.mailer_url,
            mailer_secret=settings.mailer_secret,
            wire=settings.mailer_wire,
            legacy_blueprint=settings.mailer_blueprint,
            connect_timeout=settings.mailer_connect_timeout,
            read_timeout=settings.mailer_read_timeout,
            extra={"app_name": settings.app_name},
            pool_size=settings.concurrency,  # one kept-alive connection per parallel send
            # The change notice has no link, which the mailer's wire needs: it goes out
            # through the app's Flask-Mail settings (docs: "Change notice").
            linkless=SMTPTransport(settings) if settings.change_notice else None,
        )
    if not settings.sender:  # CONFIRM_MAIL_SENDER, else MAIL_DEFAULT_SENDER
        raise ConfigurationError(
            "Set CONFIRM_MAIL_SENDER or MAIL_DEFAULT_SENDER: the confirmation email needs "
            "a From address."
        )
    return SMTPTransport(settings)


def _session_closer(db: SQLAlchemy) -> Callable[[BaseException | None], None]:
    """A teardown that closes the request's session before Flask-SQLAlchemy's does.

    Closing rolls back whatever the request left open; when the database went away after
    the answer was made (a cut mid-request, a restart), that rollback fails and, raised
    from Flask-SQLAlchemy's teardown, turned the finished answer into a 500 (seen in
    tests/test_database_outage.py). Here the failure is logged and the lost connection
    dropped; the answer stands, and what the request committed is saved.
    (Flask runs teardowns in reverse order, so this one, added by ``init_app`` after
    ``db.init_app``, runs first.)
    """

    def close_session(error: BaseException | None) -> None:
        try:
            db.session.remove()
        except SQLAlchemyError as exc:
            logger.warning(
                "The database connection was lost while closing a request's session (%s); "
                "the pool drops it",
                type(exc).__name__,
            )
            db.session.registry.clear()  # a new session next time; the pool drops the lost one

    return close_session


# --- SQLite under a threaded server ---------------------------------------------------
#
# The embedded default has to hold real traffic. With SQLite's default rollback journal,
# every reader blocks the writer's commit, so under `gunicorn -w 4 --threads 8` sign-ups
# queue behind each other, run out of the driver's busy timeout ("database is locked")
# and the slowest wait seconds. Write-ahead logging lets readers and one writer work at
# once; `synchronous=NORMAL` (safe with WAL: a power cut may lose the last commits, never
# corrupt the file) makes a commit one write instead of several fsyncs, so the write lock
# is held for less time; a longer busy timeout lets a writer wait its turn instead of
# failing. benchmarks/sqlite_threaded.py measures it.
#
# The write transactions are already as short as they can be: the driver issues its
# (deferred) BEGIN only before the first INSERT, so the lock is held from the user's
# INSERT to the COMMIT, rendering and SMTP happening outside it. A lock not granted within
# the busy timeout is answered 503 with Retry-After, nothing of the request saved, rather
# than retried in the process: the view (the app's code) would have to run again. Under
# 500 sign-ups at once the time goes to CPU, not to waiting on the lock: a lock serializing
# each process's commits measured no better (p99 3296 ms against 3090 ms), nor one lock
# for all the processes (flock on a side file from a transaction's first write to its
# commit, waking the next writer at once where SQLite's busy handler sleeps): 1.09 of
# the p99 without it (0.94-1.21, 6 interleaved rounds).
#
# A file that cannot be written (read-only, disk full) fails each write with an
# OperationalError; SQLite keeps a connection opened on a read-only file read-only even
# after the permissions are fixed, so such errors also drop the connection from the pool,
# and the next request opens a fresh one. A connection opened while the file could not be
# written is also dropped at its next checkout once the file can be written again, so no
# request fails on a pooled read-only connection after an operator restored the mode
# (one access(2) of the file per new connection, and per checkout of such a connection).


def _tune_sqlite(app: Flask, db: SQLAlchemy) -> None:
    """Apply the settings to every SQLite file engine of ``db`` for ``app``."""
    with app.app_context():
        engines = list(db.engines.values())
    for engine in engines:
        if engine.dialect.name != "sqlite" or engine.url.database in (None, "", ":memory:"):
            continue
        if not sa.event.contains(engine, "connect", _on_sqlite_connect):
            sa.event.listen(engine, "connect", _on_sqlite_connect)
            sa.event.listen(engine, "handle_error", _on_sqlite_error)
            _drop_read_only_connections(engine, engine.url.database)
            engine.dispose()  # connections opened before now reconnect with the settings


def _drop_read_only_connections(engine: sa.Engine, path: str) -> None:
    """Remember which connections opened while ``path`` could not be written; hand none of
    them out once it can (the pool opens a new one instead)."""

    def on_connect(dbapi_connection: Any, connection_record: Any) -> None:
        connection_record.info["read_only_file"] = not _writable(path)

    def on_checkout(dbapi_connection: Any, connection_record: Any, proxy: Any) -> None:
        if connection_record.info.get("read_only_file") and _writable(path):
            raise sa.exc.DisconnectionError("opened on a read-only file, now writable")

    sa.event.listen(engine, "connect", on_connect)
    sa.event.listen(engine, "checkout", on_checkout)


def _writable(path: str) -> bool:
    """Whether this process may write the file at ``path`` (a missing file counts as
    writable: SQLite creates it).

    Asked with access(2), never by opening the file: closing any descriptor of a file drops
    every POSIX lock the process holds on it, so an open-and-close released the locks of
    this process's other SQLite connections. Another process could then take the file
    from under them (measured: it switched a database out of WAL that this process was
    using in WAL; tests/test_sqlite_tuning.py).
    """
    if not os.path.exists(path):
        return True
    return os.access(path, os.W_OK, effective_ids=True)


def _on_sqlite_connect(dbapi_connection: Any, connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT * 1000}")
        mode = cursor.execute("PRAGMA journal_mode = WAL").fetchone()
        if mode and str(mode[0]).lower() == "wal":
            cursor.execute("PRAGMA synchronous = NORMAL")
    finally:
        cursor.close()


def _on_sqlite_error(context: Any) -> None:
    message = str(context.original_exception).lower()
    if any(text in message for text in _UNUSABLE_SQLITE_CONNECTION):
        # Roll the driver's transaction back before the pool closes the connection: after
        # "disk is full" in a WAL transaction, closing it without a rollback left the file's
        # write lock held (every later write "database is locked" until a restart;
        # tests/test_database_outage.py, the full file).
        try:
            context.connection.connection.dbapi_connection.rollback()
        except Exception:  # noqa: BLE001 - the connection is being dropped anyway
            pass
        context.is_disconnect = True  # the pool discards it; the next checkout reconnects
