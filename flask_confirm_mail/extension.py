"""The :class:`ConfirmMail` extension object.

``init_app`` adds the blueprint, CLI, session events and a teardown, and nothing else: SQLite
tuning, log redaction, bounces and the resend limit's ``Limiter`` are the app's to turn on."""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

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
P = ParamSpec("P")
T = TypeVar("T")
logger = logging.getLogger("flask_confirm_mail")


def _collect(errors: list[str], check: Callable[P, T], *a: P.args, **k: P.kwargs) -> T | None:
    """``check(*a, **k)``, or ``None`` with the messages of its ConfigurationError in ``errors``."""
    try:
        return check(*a, **k)
    except ConfigurationError as exc:
        errors += exc.errors
        return None


class ConfirmMail:
    """The email-confirmation flow for a Flask app with a Flask-SQLAlchemy user model.

    :param app: an app to initialize now; or call :meth:`init_app` later.
    :param db: the app's ``SQLAlchemy``, holding the outbox table (:attr:`outbox_model`).
    :param user_model: the user model class.
    :param email_attribute: its attribute holding the address.
    :param confirmed_attribute: its DateTime or Boolean attribute recording confirmation.
    :param pending_email_attribute: its attribute holding a new address waiting for
        confirmation, or ``None``.
    :param transport: a :class:`~flask_confirm_mail.Transport` instead of SMTP via ``MAIL_*``.
    :param options: settings by lower-case name without ``CONFIRM_MAIL_``
        (``lifetime=timedelta(hours=2)``), over ``app.config``; ``TypeError`` if unknown.
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
        if unknown := sorted(name for name in options if name.upper() not in OPTION_NAMES):
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

        :param transport: this app's transport, over the constructor's.
        :raises ConfigurationError: unsafe or missing settings, all of them in one error, or a
            second call for this app."""
        if EXTENSION_KEY in app.extensions:
            raise ConfigurationError(
                "ConfirmMail.init_app was already called for this app; call it once per app."
            )
        errors: list[str] = []
        transport = transport or self.transport
        settings = _collect(errors, Settings.load, app, self.options, need_sender=not transport)
        columns = _collect(
            errors, UserColumns, self.user_model, email=self.email_attribute,
            confirmed=self.confirmed_attribute, pending_email=self.pending_email_attribute,
        )  # fmt: skip
        if "mail" not in app.extensions:
            Mail().init_app(app)
        if settings is not None:  # the transport's checks (MAIL_PORT=abc...) read the settings
            transport = transport or SMTPTransport(settings)
            _collect(errors, transport.init_app, app)
        if errors or settings is None or columns is None or transport is None:
            raise ConfigurationError(*errors)
        flow = ConfirmationFlow(
            db=self.db, outbox_model=self.outbox_model, settings=settings, columns=columns,
            transport=transport,
        )  # fmt: skip
        flow.user_getter = self._user_getter
        flow.handoff = self._handoff
        self._flows.add(flow)
        app.extensions[EXTENSION_KEY] = flow
        listen_to_session(self.db)
        if app.extensions.get("sqlalchemy") is self.db:
            # Teardowns run in reverse order: added after db.init_app, this one runs first.
            app.teardown_appcontext(self._close_session)
        app.register_blueprint(blueprint, url_prefix=settings.url_prefix)
        if settings.resend_limit:
            limit_resend(app, settings.resend_limit)
        app.cli.add_command(cli_group)
        if settings.delivery == "sync":
            app.after_request(deliver_after_request)
        # Like app.logger: failed deliveries show unless the app configured logging.
        if not has_level_handler(logger):
            logger.addHandler(default_handler)
        # Flask's exception log names the path, token included, of a route that failed.
        install_log_redaction([logger.name, app.logger.name], [settings.url_prefix])

    def handoff(self, function: H) -> H:
        """Register the function that hands each commit's outbox ids to the app's task queue
        (``CONFIRM_MAIL_DELIVERY = "queue"``); its job calls :func:`~flask_confirm_mail.deliver`,
        a periodic one :func:`~flask_confirm_mail.deliver_due`."""
        self._handoff = function
        for flow in self._flows:
            flow.handoff = function
        return function

    def user_getter(self, getter: G) -> G:
        """Register the function that returns the logged-in user (or ``None``), for an
        app without Flask-Login."""
        self._user_getter = getter
        for flow in self._flows:
            flow.user_getter = getter
        return getter

    def _close_session(self, error: BaseException | None) -> None:
        """Close the request's session. If the database went away after the answer was
        made, the rollback fails: logged here, not raised to turn that answer into a 500."""
        try:
            self.db.session.remove()
        except SQLAlchemyError as exc:
            logger.warning(
                "The database connection was lost while closing a request's session (%s); "
                "the pool drops it",
                type(exc).__name__,
            )
            self.db.session.registry.clear()  # a new session next time
