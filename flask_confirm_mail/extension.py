"""The :class:`ConfirmMail` extension object: ``init_app`` checks the settings and wires
the flow into the app (blueprint, CLI, session events, a teardown).

``init_app`` changes nothing else the app owns: SQLite tuning
(:func:`~flask_confirm_mail.sqlite.tune_sqlite`), log redaction
(:func:`~flask_confirm_mail.redact_request_logs`), bounces
(:class:`~flask_confirm_mail.bounces.Bounces`) and the resend limit's ``Limiter`` are the
app's to turn on."""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask
from flask.logging import default_handler, has_level_handler
from flask_mail import Mail
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.exc import SQLAlchemyError

from .cli import cli_group
from .confirmation import EXTENSION_KEY, ConfirmationFlow
from .errors import ConfigurationError
from .outbox import outbox_model_for
from .redaction import install_log_redaction
from .settings import OPTION_NAMES, Settings
from .signup import deliver_after_request, listen_to_session
from .transport import SMTPTransport, Transport
from .users import UserColumns
from .views import blueprint, limit_resend

G = TypeVar("G", bound=Callable[[], Any])
H = TypeVar("H", bound=Callable[[list[int]], object])

logger = logging.getLogger("flask_confirm_mail")


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
    :param transport: a :class:`~flask_confirm_mail.Transport` instance to send with
        instead of SMTP through the app's ``MAIL_*`` settings (e.g. the remote mailer's
        :class:`~flask_confirm_mail.mailer.RemoteTransport`).
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
        self._user_getter: Callable[[], Any] | None = None
        self._handoff: Callable[[list[int]], object] | None = None
        self._flows: weakref.WeakSet[ConfirmationFlow] = weakref.WeakSet()
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask, *, transport: Transport | None = None) -> None:
        """Check the settings, then register the blueprint, CLI, hooks and per-app state.

        :param transport: this app's transport, over the constructor's (an app factory
            that picks SMTP or the remote mailer by its configuration).
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
        transport = transport or self.transport or _smtp_transport(settings)
        transport.init_app(app)  # checks its settings (MAIL_PORT=abc fails here)
        flow = ConfirmationFlow(
            db=self.db,
            outbox_model=self.outbox_model,
            settings=settings,
            columns=columns,
            transport=transport,
        )
        flow.user_getter = self._user_getter
        flow.handoff = self._handoff
        self._flows.add(flow)
        app.extensions[EXTENSION_KEY] = flow
        listen_to_session(self.db)
        if app.extensions.get("sqlalchemy") is self.db:
            app.teardown_appcontext(_session_closer(self.db))
        app.register_blueprint(blueprint, url_prefix=settings.url_prefix)
        if settings.resend_limit:
            limit_resend(app, settings.resend_limit)
        app.cli.add_command(cli_group)
        if settings.delivery == "sync":
            app.after_request(deliver_after_request)
        # Like Flask's app.logger: a failed delivery shows in the console unless the app
        # configured logging itself.
        if not has_level_handler(logger):
            logger.addHandler(default_handler)
        install_log_redaction([logger.name], [settings.url_prefix])

    def handoff(self, function: H) -> H:
        """Register the function that hands the outbox ids each commit saved to the app's
        own task queue (``CONFIRM_MAIL_DELIVERY = "queue"``). Its job calls
        :func:`~flask_confirm_mail.deliver` with them; a periodic job calls
        :func:`~flask_confirm_mail.deliver_due`, which also sends what a lost job left::

            @confirm_mail.handoff
            def enqueue(ids):
                queue.enqueue(deliver_confirmation_emails, ids)  # RQ
        """
        self._handoff = function
        for flow in self._flows:
            flow.handoff = function
        return function

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


def _smtp_transport(settings: Settings) -> Transport:
    """The default transport: SMTP through the app's ``MAIL_*`` settings."""
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
    from Flask-SQLAlchemy's teardown, would turn the finished answer into a 500. Here the
    failure is logged and the lost connection dropped; the answer stands, and what the
    request committed is saved.
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
