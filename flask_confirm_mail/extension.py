"""The :class:`ConfirmMail` extension object: ``init_app`` checks the settings and wires
the flow into the app (blueprint, CLI, session events, request hooks, logging)."""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask
from flask.logging import default_handler, has_level_handler
from flask_mail import Mail
from flask_sqlalchemy import SQLAlchemy

from .cli import cli_group
from .confirmation import EXTENSION_KEY, ConfirmationFlow, listen_to_session
from .errors import ConfigurationError
from .outbox import outbox_model_for
from .remote import RemoteTransport
from .settings import OPTION_NAMES, Settings
from .transport import SMTPTransport, Transport
from .users import UserColumns
from .views import blueprint

G = TypeVar("G", bound=Callable[[], Any])

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
        flow.user_getter = self._user_getter
        self._flows.add(flow)
        app.extensions[EXTENSION_KEY] = flow
        listen_to_session(self.db)
        app.register_blueprint(blueprint, url_prefix=settings.url_prefix)
        app.cli.add_command(cli_group)
        if settings.delivery == "sync":
            app.after_request(flow.after_request)
        elif settings.delivery == "thread":
            app.before_request(flow.before_request)
        # Like Flask's app.logger: a failed delivery shows in the console unless the app
        # configured logging itself.
        if not has_level_handler(logger):
            logger.addHandler(default_handler)

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
        )
    if not settings.sender:  # CONFIRM_MAIL_SENDER, else MAIL_DEFAULT_SENDER
        raise ConfigurationError(
            "Set CONFIRM_MAIL_SENDER or MAIL_DEFAULT_SENDER: the confirmation email needs "
            "a From address."
        )
    return SMTPTransport(settings)
