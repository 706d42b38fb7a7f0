"""The resend route's work: a new link for an address waiting for confirmation, saying
nothing about whether it exists."""

from __future__ import annotations

import logging
import time

import sqlalchemy as sa
from flask import Response, after_this_request, current_app, g, has_request_context

from . import outbox
from .addresses import normalize_address
from .confirmation import ConfirmationFlow
from .outbox import Purpose
from .signup import AFTER_RESPONSE

#: Tries of a resend that fails after its response was sent.
RESEND_ATTEMPTS = 3

logger = logging.getLogger("flask_confirm_mail")


def request_resend(flow: ConfirmationFlow, email: object, *, requester: str | None = None) -> None:
    """Queue a new link for ``email`` when it is waiting for confirmation.

    Unknown, confirmed, cooling-down (``RESEND_COOLDOWN``) and undeliverable addresses
    return the same way. ``requester`` is the logged-in user's id (a string) or ``None``.
    Anyone may ask for a sign-up's link, but a logged-in user gets only their own, and a
    pending new address is mailed only when its account asks: a squatter's link never
    reaches a victim who asked for "their" link again.

    In a request only the address and the database are checked before the answer; the
    lookup and queueing run once the response is sent, so every answer takes the same
    work, and a failure there is logged and retried. Outside a request all runs at once.

    :raises AddressError: ``email`` is not a single valid address.
    """
    address = normalize_address(email)
    if not has_request_context():
        resend_now(flow, address, requester=requester)
        return
    # The same round trip for every address: an outage is answered (503), not hidden.
    flow.db.session.execute(sa.text("SELECT 1"))
    flow.db.session.rollback()
    app = current_app._get_current_object()  # type: ignore[attr-defined]

    def resend_after_response() -> None:
        for attempt in range(1, RESEND_ATTEMPTS + 1):
            with app.app_context():
                g.setdefault(AFTER_RESPONSE, True)
                try:
                    resend_now(flow, address, requester=requester)
                    return
                except Exception as exc:  # after the response: no one else would see it
                    final = attempt == RESEND_ATTEMPTS
                    logger.log(
                        logging.ERROR if final else logging.WARNING,
                        "A resend could not be queued (attempt %d of %d): %s%s",
                        attempt,
                        RESEND_ATTEMPTS,
                        type(exc).__name__,
                        "; the user has to ask again" if final else "; retrying",
                        exc_info=final,
                    )
            if attempt < RESEND_ATTEMPTS:
                time.sleep(0.1 * attempt)

    @after_this_request
    def _after_response(response: Response) -> Response:
        response.call_on_close(resend_after_response)
        return response


def resend_now(flow: ConfirmationFlow, address: str, *, requester: str | None = None) -> None:
    """The work of :func:`request_resend` for a normalized ``address``, at once.

    One small transaction, committed when a message is queued. It locks the user rows
    (SQLite: the whole database), so concurrent resends check the cooldown in turn.
    """
    session, columns = flow.db.session, flow.columns
    try:
        connection = session.connection()
        if connection.dialect.name == "sqlite":
            begin_immediate(connection)
        user, purpose = columns.find(session, address, lock=True)
        if user is None or purpose is None:
            return
        if purpose == Purpose.SIGNUP and columns.is_confirmed(user):
            return
        owner = columns.id_of(user)
        if (purpose == Purpose.CHANGE or requester is not None) and requester != owner:
            return  # a link goes only to the account that asked for it
        last = outbox.last_queued_at(session.connection(), flow.outbox_table, address)
        if last is not None and outbox.utcnow() - last < flow.settings.resend_cooldown:
            return
        if flow.blocked(address) is not None:  # e.g. known to bounce
            return
        flow.enqueue(user, purpose)
        session.commit()
    finally:
        session.rollback()


def begin_immediate(connection: sa.Connection) -> None:
    """On SQLite, which has no row locks, start the transaction holding the write lock
    (others wait up to the driver's busy timeout)."""
    if not getattr(connection.connection.dbapi_connection, "in_transaction", True):
        connection.exec_driver_sql("BEGIN IMMEDIATE")
