"""The confirmation flow on the database: queue an email, check a link, confirm.

Every function here works in the caller's Flask-SQLAlchemy session and transaction,
except :func:`confirm_link` and :func:`request_resend`, which commit their own small
transaction (they are what the blueprint's views call).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.attributes import flag_modified

from . import outbox, signals
from .addresses import normalize_address
from .clock import utcnow
from .errors import TokenError
from .link_token import LinkClaims
from .outbox_model import PENDING
from .state import get_state

if TYPE_CHECKING:
    from .state import ConfirmMailState

SIGNUP = "signup"
CHANGE = "change"


class Outcome(str, Enum):
    """What a link does; the ``status`` field of the JSON answers."""

    #: Valid and waiting: the GET page offers the confirm button.
    PENDING = "pending"
    CONFIRMED = "confirmed"
    ALREADY_CONFIRMED = "already_confirmed"
    EXPIRED = "expired"
    INVALID = "invalid"


@dataclass(frozen=True)
class LinkResult:
    """The outcome of checking or using a link."""

    outcome: Outcome
    user: Any = None


def _app() -> Any:
    return current_app._get_current_object()  # type: ignore[attr-defined]


def new_message_id(domain: str) -> str:
    """A Message-ID for one outbox message, kept across its retries."""
    return f"<{secrets.token_hex(16)}@{domain}>"


def enqueue_confirmation(
    state: ConfirmMailState, user: Any, purpose: str = SIGNUP, context: dict[str, Any] | None = None
) -> Any:
    """Add an outbox message for ``user`` to the current session; it goes out after commit.

    ``purpose`` ``signup`` mails the user's address; ``change`` mails the pending one.

    :raises AddressError: the address to mail is not a single valid address.
    """
    columns = state.columns
    session = state.db.session
    recipient = columns.pending_of(user) if purpose == CHANGE else None
    recipient = recipient or columns.email_of(user)
    normalize_address(recipient)
    if getattr(user, columns.id_attribute) is None:
        session.flush()
    now = utcnow()
    row = state.outbox_model(
        user_id=columns.id_of(user),
        recipient=recipient,
        purpose=purpose,
        context=context or None,
        status=PENDING,
        attempts=0,
        due_at=now,
        created_at=now,
        message_id=new_message_id(state.message_id_domain),
    )
    session.add(row)
    signals.confirmation_requested.send(
        _app(), user=user, email=recipient, purpose=purpose, outbox=row
    )
    return row


def request_email_change(state: ConfirmMailState, user: Any, new_email: str) -> bool:
    """Ask to change ``user``'s address to ``new_email``; mail a link to the new address.

    With a pending-address column, the old address stays the login until the link is
    used. Without one, the address is replaced at once and marked unconfirmed (the
    original's behaviour). Returns ``False`` when ``new_email`` is the current address.

    :raises AddressError: ``new_email`` is not a single valid address.
    """
    columns = state.columns
    new = normalize_address(new_email)
    old = columns.email_of(user)
    if new == old:
        if columns.pending_attribute is not None:
            setattr(user, columns.pending_attribute, None)
        return False
    if columns.pending_attribute is not None:
        setattr(user, columns.pending_attribute, new)
    else:
        setattr(user, columns.email_attribute, new)
        setattr(user, columns.confirmed_attribute, columns.unconfirmed_value())
        # Written even when the loaded row already said "unconfirmed": a link to the old
        # address used since the row was loaded must not leave the new one confirmed.
        flag_modified(user, columns.confirmed_attribute)
    enqueue_confirmation(state, user, CHANGE)
    signals.email_change_requested.send(_app(), user=user, old_email=old, new_email=new)
    return True


def _verified(state: ConfirmMailState, token: str) -> tuple[LinkClaims, Any] | LinkResult:
    """The token's claims and the user id they name, or the outcome of a bad token."""
    try:
        claims = state.signer.verify(token)
        return claims, state.columns.parse_id(claims.user_id)
    except TokenError as exc:
        return LinkResult(Outcome.EXPIRED if exc.reason == "expired" else Outcome.INVALID)


def check_link(state: ConfirmMailState, token: str) -> LinkResult:
    """What ``token`` would do, changing nothing (the GET page)."""
    verified = _verified(state, token)
    if isinstance(verified, LinkResult):
        return verified
    claims, user_id = verified
    columns = state.columns
    user = state.db.session.get(columns.model, user_id)
    if user is None:
        return LinkResult(Outcome.INVALID)
    if columns.email_of(user) == claims.email:
        confirmed = columns.is_confirmed(user)
        return LinkResult(Outcome.ALREADY_CONFIRMED if confirmed else Outcome.PENDING, user)
    if columns.pending_of(user) == claims.email:
        return LinkResult(Outcome.PENDING, user)
    return LinkResult(Outcome.INVALID)


def confirm_link(state: ConfirmMailState, token: str) -> LinkResult:
    """Use ``token``: one conditional UPDATE confirms the address it was mailed to.

    Concurrent calls with one link confirm once and send ``email_confirmed`` once.
    Commits on success, rolls back otherwise.
    """
    verified = _verified(state, token)
    if isinstance(verified, LinkResult):
        return verified
    claims, user_id = verified
    columns = state.columns
    session = state.db.session
    params = {
        "uid": user_id,
        "address": claims.email,
        "confirmed": columns.confirmed_value(utcnow()),
    }
    purpose = SIGNUP
    changed = session.execute(columns.confirm_address_statement, params).rowcount == 1  # type: ignore[attr-defined]
    if not changed and columns.confirm_pending_statement is not None:
        purpose = CHANGE
        try:
            result = session.execute(columns.confirm_pending_statement, params)
        except IntegrityError:
            session.rollback()
            return LinkResult(Outcome.INVALID)
        changed = result.rowcount == 1  # type: ignore[attr-defined]
    if changed:
        session.commit()
        user = None
        if signals.email_confirmed.receivers:  # load the row only for someone who wants it
            user = session.get(columns.model, user_id)
            signals.email_confirmed.send(_app(), user=user, email=claims.email, purpose=purpose)
        return LinkResult(Outcome.CONFIRMED, user)
    session.rollback()
    user = session.get(columns.model, user_id)
    if user is not None and columns.email_of(user) == claims.email and columns.is_confirmed(user):
        return LinkResult(Outcome.ALREADY_CONFIRMED, user)
    return LinkResult(Outcome.INVALID)


def confirm_user(state: ConfirmMailState, user: Any) -> bool:
    """Mark ``user``'s address (or pending address) confirmed by hand, in the session."""
    columns = state.columns
    pending = columns.pending_of(user)
    if pending is not None:
        setattr(user, columns.email_attribute, pending)
        setattr(user, columns.pending_attribute or "", None)
    elif columns.is_confirmed(user):
        return False
    setattr(user, columns.confirmed_attribute, columns.confirmed_value(utcnow()))
    return True


def find_user(state: ConfirmMailState, address: str, *, lock: bool = False) -> tuple[Any, str]:
    """The user whose address or pending address is ``address``, and which it is.

    Returns ``(None, "")`` when there is none.
    """
    columns = state.columns
    query = sa.select(columns.model).where(columns.email_column == address)
    if lock:
        query = query.with_for_update()
    user = state.db.session.execute(query).scalar_one_or_none()
    if user is not None:
        return user, SIGNUP
    if columns.pending_column is not None:
        query = sa.select(columns.model).where(columns.pending_column == address).limit(1)
        if lock:
            query = query.with_for_update()
        user = state.db.session.execute(query).scalar_one_or_none()
        if user is not None:
            return user, CHANGE
    return None, ""


def _take_write_lock(connection: sa.Connection) -> None:
    """On SQLite, which has no row locks, start the transaction holding the write lock.

    Concurrent resends for one address then check the cooldown one after the other
    (they wait up to the driver's busy timeout); on other databases the rows that
    :func:`find_user` locks do this.
    """
    if connection.dialect.name != "sqlite":
        return
    driver_connection = connection.connection.dbapi_connection
    if not getattr(driver_connection, "in_transaction", True):
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def request_resend(state: ConfirmMailState, email: object) -> None:
    """Queue a new link for ``email`` when it is waiting for confirmation.

    Says nothing about whether the address exists: unknown, confirmed and cooling-down
    addresses return the same way. At most one email per ``RESEND_COOLDOWN`` per address.

    :raises AddressError: ``email`` is not a single valid address.
    """
    address = normalize_address(email)
    session = state.db.session
    try:
        _take_write_lock(session.connection())
        user, purpose = find_user(state, address, lock=True)
        if user is None or (purpose == SIGNUP and state.columns.is_confirmed(user)):
            return
        last = outbox.last_queued_at(session.connection(), state.outbox_table, address)
        if last is not None and utcnow() - last < state.settings.resend_cooldown:
            return
        enqueue_confirmation(state, user, purpose)
        session.commit()
    finally:
        session.rollback()


# --- the public functions: they act on the current app -------------------------------------


def send_confirmation(user: Any, *, context: dict[str, Any] | None = None) -> Any:
    """Queue a confirmation email for ``user`` in the current session (also to resend).

    It goes out once the session commits. With a pending address (after
    :func:`change_email`) the link goes to that address, otherwise to the user's address.
    ``context`` values (JSON-safe) are passed to the email templates as ``context``.
    Returns the outbox message.

    :raises AddressError: the address is not a single valid address.
    """
    state = get_state()
    purpose = CHANGE if state.columns.pending_of(user) else SIGNUP
    return enqueue_confirmation(state, user, purpose, context)


def change_email(user: Any, new_email: str) -> bool:
    """Record ``new_email`` as ``user``'s unconfirmed new address and mail it a link.

    The old address stays the login until the link is used (when the model has a
    pending-address column). Commit the session to send. Returns ``False`` when
    ``new_email`` is already the user's address.

    :raises AddressError: ``new_email`` is not a single valid address.
    """
    return request_email_change(get_state(), user, new_email)


def is_confirmed(user: Any) -> bool:
    """Whether ``user``'s current address is confirmed."""
    return get_state().columns.is_confirmed(user)
