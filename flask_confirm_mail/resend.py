"""The resend route's work: a new link for an address waiting for confirmation, saying
nothing about whether it exists."""

from __future__ import annotations

import logging
import time

import sqlalchemy as sa
from flask import Response, after_this_request, current_app, g, has_request_context

from .addresses import normalize_address
from .confirmation import ConfirmationFlow
from .outbox import Purpose
from .signup import AFTER_RESPONSE

#: Tries of a resend that fails after its response was sent.
RESEND_ATTEMPTS = 3

logger = logging.getLogger("flask_confirm_mail")


def request_resend(flow: ConfirmationFlow, email: object, *, requester: str | None = None) -> None:
    """Queue a new link for ``email`` if it waits for confirmation, returning the same way
    whether or not it does (unknown, confirmed, cooling down, undeliverable).

    ``requester`` is the logged-in user's id or ``None``. A logged-in user gets only their
    own link and a pending new address only its account's, so a squatter's link never
    reaches a victim. In a request the work runs after the response (the same answer time
    for every address), logged and retried if it fails. Raises :class:`AddressError` for
    an invalid ``email``.
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
                        "A resend could not be queued (attempt %d of %d): %s%s", attempt,
                        RESEND_ATTEMPTS, type(exc).__name__,
                        "; the user has to ask again" if final else "; retrying", exc_info=final,
                    )  # fmt: skip
            if attempt < RESEND_ATTEMPTS:
                time.sleep(0.1 * attempt)

    @after_this_request
    def _after_response(response: Response) -> Response:
        if flow.settings.delivery == "thread":  # off this connection's thread: its next
            flow.sender.submit(app, resend_after_response)  # request waits for nothing
        else:
            response.call_on_close(resend_after_response)
        return response


def resend_now(flow: ConfirmationFlow, address: str, *, requester: str | None = None) -> None:
    """:func:`request_resend`'s work for a normalized ``address``, at once, in one small
    transaction that locks the user rows (SQLite: the database): concurrent resends for one
    address check the cooldown in turn."""
    session, columns = flow.db.session, flow.columns
    try:
        begin_immediate(session.connection())
        user, purpose = columns.find(session, address, lock=True)
        if user is None or purpose is None:
            return
        if purpose == Purpose.SIGNUP and columns.is_confirmed(user):
            return
        owner = columns.id_of(user)
        if (purpose == Purpose.CHANGE or requester is not None) and requester != owner:
            return  # a link goes only to the account that asked for it
        if not flow.cooling(address) and flow.blocked(address) is None:  # e.g. a bounce
            flow.enqueue(user, purpose)
            session.commit()
    finally:
        session.rollback()


def begin_immediate(connection: sa.Connection) -> None:
    """On SQLite, which has no row locks, start the transaction holding the write lock
    (others wait up to the driver's busy timeout)."""
    sqlite = connection.dialect.name == "sqlite"
    if sqlite and not getattr(connection.connection.dbapi_connection, "in_transaction", True):
        connection.exec_driver_sql("BEGIN IMMEDIATE")
