"""The resend route's work: a new link for an address waiting for confirmation, saying
nothing about whether it exists."""

from __future__ import annotations

import logging
import time

import sqlalchemy as sa
from flask import Flask, Response, after_this_request, current_app, g, has_request_context

from . import outbox
from .addresses import normalize_address
from .confirmation import ConfirmationFlow
from .outbox import Purpose
from .signup import AFTER_RESPONSE

#: Tries of a resend that fails after its response was sent, and the pause before the next.
RESEND_ATTEMPTS = 3
RESEND_RETRY_DELAY = 0.1

logger = logging.getLogger("flask_confirm_mail")


def request_resend(flow: ConfirmationFlow, email: object, *, requester: str | None = None) -> None:
    """Queue a new link for ``email`` when it is waiting for confirmation.

    Says nothing about whether the address exists: unknown, confirmed and cooling-down
    addresses return the same way. At most one email per ``RESEND_COOLDOWN`` per address,
    and none to an address marked undeliverable (:mod:`~flask_confirm_mail.bounces`).
    ``requester`` is the id (as a string) of the logged-in user, ``None`` for an
    anonymous request. A logged-in user is sent their own link only, and an address
    pending after an email change is mailed only when its account asks: a link never
    goes out because another account asked, so a squatter's link cannot reach a
    victim who asked for "their" link again. Anyone may ask for a sign-up's link.

    In a request, only the address and the database's presence are checked before the
    answer; the lookup and the queueing run once the response is sent
    (``response.call_on_close``), so the answer takes the same work for every kind of
    address. A failure there is logged and retried a few times. Outside a request, all
    of it runs at once.

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

    @after_this_request
    def _after_response(response: Response) -> Response:
        response.call_on_close(lambda: _resend_after_response(flow, app, address, requester))
        return response


def _resend_after_response(
    flow: ConfirmationFlow, app: Flask, address: str, requester: str | None
) -> None:
    """Run :meth:`resend_now` in an app context of its own; log what fails."""
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
            time.sleep(RESEND_RETRY_DELAY * attempt)


def resend_now(flow: ConfirmationFlow, address: str, *, requester: str | None = None) -> None:
    """The work of :meth:`request_resend` for a normalized ``address``, at once.

    One small transaction, committed when a message is queued: on SQLite it holds the
    write lock from the start, elsewhere the user rows are locked, so concurrent
    resends for one address check the cooldown one after the other.
    """
    session = flow.db.session
    try:
        connection = session.connection()
        if connection.dialect.name == "sqlite":
            begin_immediate(connection)
        user, purpose = flow.columns.find(session, address, lock=True)
        if user is None or purpose is None:
            return
        if purpose == Purpose.SIGNUP and flow.columns.is_confirmed(user):
            return
        owner = flow.columns.id_of(user)
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
    """On SQLite, which has no row locks, start the transaction holding the write lock.

    Concurrent resends for one address then check the cooldown one after the other (they
    wait up to the driver's busy timeout); on other databases the rows that
    :meth:`UserColumns.find` locks do this.
    """
    driver_connection = connection.connection.dbapi_connection
    if not getattr(driver_connection, "in_transaction", True):
        connection.exec_driver_sql("BEGIN IMMEDIATE")
