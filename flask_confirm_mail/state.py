"""Per-app state: what ``init_app`` builds, kept in ``app.extensions["confirm_mail"]``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from flask import Flask, Response, current_app, g, has_request_context
from flask_sqlalchemy import SQLAlchemy

from .errors import NotInitializedError
from .link_token import LinkTokenSigner
from .settings import Settings
from .transport import Transport
from .user_model import UserColumns
from .worker import BackgroundSender, new_worker_id

if TYPE_CHECKING:
    from .extension import ConfirmMail

EXTENSION_KEY = "confirm_mail"
_SYNC_QUEUE = "_confirm_mail_sync_ids"

logger = logging.getLogger("flask_confirm_mail")


class ConfirmMailState:
    """Everything one app's confirmation flow needs, built once by ``init_app``."""

    def __init__(
        self,
        extension: ConfirmMail,
        settings: Settings,
        columns: UserColumns,
        transport: Transport,
    ) -> None:
        self.extension = extension
        self.settings = settings
        self.columns = columns
        self.transport = transport
        self.db: SQLAlchemy = extension.db
        self.outbox_model: type[Any] = extension.outbox_model
        self.signer = LinkTokenSigner(
            settings.secret,
            settings.previous_secrets,
            lifetime=settings.lifetime,
            leeway=settings.leeway,
        )
        self.sender = BackgroundSender()
        #: The domain of Message-IDs: the site's host name, as links use it.
        self.message_id_domain = urlsplit(settings.link_prefix).hostname or "localhost"

    @property
    def outbox_table(self) -> sa.Table:
        table: sa.Table = self.outbox_model.__table__
        return table

    @property
    def user_getter(self) -> Callable[[], Any] | None:
        return self.extension._user_getter

    def engine(self) -> sa.Engine:
        return self.db.engine

    def dispatch(self, ids: list[int]) -> None:
        """Hand messages just committed to the outbox to the delivery mode."""
        mode = self.settings.delivery
        if mode == "thread":
            self.sender.wake(current_app._get_current_object(), self)  # type: ignore[attr-defined]
        elif mode == "sync":
            if has_request_context():
                g.setdefault(_SYNC_QUEUE, []).extend(ids)
            else:
                self.deliver_now(ids)

    def deliver_now(self, ids: list[int]) -> None:
        """Deliver these messages in this thread (``sync`` mode and the CLI)."""
        from .delivery import deliver_batch

        worker_id = new_worker_id()
        remaining = list(ids)
        try:
            while remaining:
                batch, remaining = (
                    remaining[: self.settings.batch_size],
                    remaining[self.settings.batch_size :],
                )
                deliver_batch(self, worker_id=worker_id, ids=batch)
        except Exception:
            logger.exception("Delivery after commit failed; the messages stay in the outbox")

    def after_request(self, response: Response) -> Response:
        """``sync`` mode: deliver what this request committed to the outbox."""
        ids = g.pop(_SYNC_QUEUE, None)
        if ids:
            self.deliver_now(ids)
        return response

    def before_request(self) -> None:
        """``thread`` mode: make sure this process's sender runs (it drains older rows too)."""
        self.sender.ensure_started(current_app._get_current_object(), self)  # type: ignore[attr-defined]


def get_state(app: Flask | None = None) -> ConfirmMailState:
    """The confirm-mail state of ``app`` (default: the current app).

    :raises NotInitializedError: ``init_app`` was not called on that app.
    """
    target = app if app is not None else current_app
    try:
        state: ConfirmMailState = target.extensions[EXTENSION_KEY]
    except KeyError:
        raise NotInitializedError(
            "flask-confirm-mail is not registered on this app. "
            "Did you forget to call ConfirmMail.init_app(app)?"
        ) from None
    return state
