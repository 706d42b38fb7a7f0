"""The confirmation flow of one app (queue an email, confirm by link or code), in the
caller's session except the confirmations, which commit; and the public functions on it."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import sqlalchemy as sa
from flask import Flask, current_app
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.attributes import flag_modified

from . import outbox, signals
from .addresses import canonical_or_none, mask_address, normalize_address
from .delivery import BackgroundSender, Deliverer, DeliveryLoop
from .errors import ExpiredToken, NotInitializedError, TokenError
from .i18n import current_locale
from .outbox import Purpose
from .redaction import SERVER_LOGGERS, install_log_redaction
from .settings import Settings
from .tokens import CodeHasher, LinkClaims, LinkTokenSigner
from .transport import Transport
from .users import UserColumns

EXTENSION_KEY = "confirm_mail"
#: The digits of a confirmation code (6 of them, each code as likely).
CODE_ALPHABET = "0123456789"
#: Code tries per (account, address), and per address across accounts, in a link lifetime.
CODE_MAX_TRIES, ADDRESS_CODE_TRIES = 5, 15
#: Seconds of clock skew allowed on a link token's ``iat`` and ``exp``.
LINK_LEEWAY = 30


class Outcome(str, Enum):
    """What a link does; the ``status`` field of the JSON answers."""

    PENDING = "pending"  #: Valid and waiting: the GET page offers the confirm button.
    CONFIRMED = "confirmed"
    ALREADY_CONFIRMED = "already_confirmed"
    EXPIRED = "expired"
    INVALID = "invalid"
    CANCEL = "cancel"  #: A cancel link, valid and its change pending: the GET page's button.
    CANCELLED = "cancelled"
    NOTHING_PENDING = "nothing_pending"  #: Cancelled, confirmed, replaced, or no such account.


@dataclass(frozen=True)
class LinkResult:
    """The outcome of checking or using a link, and the user it names when known."""

    outcome: Outcome
    user: Any = None


def _app() -> Any:
    return current_app._get_current_object()  # type: ignore[attr-defined]


@dataclass(kw_only=True, eq=False, repr=False)
class ConfirmationFlow:
    """Everything one app's confirmation flow needs, built once by ``init_app``."""

    db: SQLAlchemy
    outbox_model: type[Any]
    settings: Settings
    columns: UserColumns
    transport: Transport
    #: Returns the logged-in user or ``None``; set by ``ConfirmMail.user_getter``.
    user_getter: Callable[[], Any] | None = None
    #: ``check(conn, address)``: why not to mail ``address`` (a mark: ``kind``, ``marked_at``).
    mail_blockers: list[Callable[[sa.Connection, str], Any]] = field(default_factory=list)
    #: ``queue`` mode: hands committed outbox ids to the app's job queue.
    handoff: Callable[[list[int]], object] | None = None

    def __post_init__(self) -> None:
        self.outbox_table: sa.Table = self.outbox_model.__table__
        self.state_table = self.db.metadata.tables[outbox.STATE_TABLE_NAME]
        settings, (key, *old_keys) = self.settings, self.settings.secret
        self.signer = LinkTokenSigner(key, old_keys, lifetime=settings.lifetime, leeway=LINK_LEEWAY)
        self.codes = CodeHasher(key, old_keys, length=6, alphabet=CODE_ALPHABET)
        self.deliverer = Deliverer(
            db=self.db, table=self.outbox_table, settings=settings, transport=self.transport,
            signer=self.signer, codes=self.codes,
        )  # fmt: skip
        self.sender, self._next_reminder_scan = BackgroundSender(self.deliverer), 0.0

    def enqueue(
        self, user: Any, purpose: Purpose, context: dict[str, Any] | None = None,
        recipient: str | None = None, reminder: int | None = None, locale: str | None = None,
    ) -> Any:  # fmt: skip
        """Add a message for ``user`` to the session, sent after commit, to its address
        (``signup``), its pending one (``change``) or ``recipient``. Raises :class:`AddressError`
        for an invalid address, ``IntegrityError`` for a ``reminder`` number queued before."""
        columns, session = self.columns, self.db.session
        if recipient is None:
            pending = columns.pending_of(user) if purpose == Purpose.CHANGE else None
            recipient = pending or columns.email_of(user)
        normalize_address(recipient)
        if getattr(user, columns.id_attribute) is None:
            session.flush()
        now = outbox.utcnow()
        row = self.outbox_model(
            user_id=columns.id_of(user), recipient=recipient, purpose=purpose.value,
            context=context or None, status=outbox.PENDING, attempts=0, due_at=now,
            created_at=now, message_id=outbox.new_message_id(self.settings.host),
            reminder=reminder, locale=locale or current_locale(),
        )  # fmt: skip
        if reminder is None:
            session.add(row)  # saved by the caller's next flush, with its other changes
        else:
            with session.begin_nested():  # a unique index: one reminder of each number
                session.add(row)
        signals.confirmation_requested.send(
            _app(), user=user, email=recipient, purpose=purpose, outbox=row
        )
        return row

    def cooling(self, address: str, purpose: Purpose | None = None) -> bool:
        """Whether ``address`` got an email (of ``purpose``) less than RESEND_COOLDOWN ago."""
        connection = self.db.session.connection()
        last = outbox.last_queued_at(connection, self.outbox_table, address, purpose)
        return last is not None and outbox.utcnow() - last < self.settings.resend_cooldown

    def blocked(self, address: str) -> Any:
        """Why ``address`` must not be mailed (:attr:`mail_blockers`), or ``None``."""
        connection = self.db.session.connection()
        marks = (check(connection, address) for check in self.mail_blockers)
        return next((mark for mark in marks if mark is not None), None)

    def confirm_user(self, user: Any) -> bool:
        """Mark ``user``'s address (or pending address) confirmed by hand, in the session."""
        columns = self.columns
        if (pending := columns.pending_of(user)) is not None:
            setattr(user, columns.email_attribute, pending)
            columns.set_pending(user, None)
        elif columns.is_confirmed(user):
            return False
        setattr(user, columns.confirmed_attribute, columns.confirmed_value(outbox.utcnow()))
        return True

    def _verified(self, token: str, cancel: bool = False) -> tuple[LinkClaims, Any] | LinkResult:
        try:
            claims = self.signer.verify(token, cancel)
            return claims, self.columns.parse_id(claims.user_id)
        except ExpiredToken:
            return LinkResult(Outcome.EXPIRED)
        except TokenError:
            return LinkResult(Outcome.INVALID)

    def check_link(self, token: str) -> LinkResult:
        """What ``token`` would do, changing nothing (the GET page)."""
        if isinstance(verified := self._verified(token), LinkResult):
            return verified
        claims, user_id = verified
        columns = self.columns
        user = self.db.session.get(columns.model, user_id)
        if user is None or claims.email not in (columns.email_of(user), columns.pending_of(user)):
            return LinkResult(Outcome.INVALID)
        confirmed = columns.email_of(user) == claims.email and columns.is_confirmed(user)
        return LinkResult(Outcome.ALREADY_CONFIRMED if confirmed else Outcome.PENDING, user)

    def confirm_link(self, token: str) -> LinkResult:
        """Use ``token``: one conditional UPDATE confirms its address, so concurrent uses
        confirm and signal once. Commits on success, rolls back otherwise."""
        if isinstance(verified := self._verified(token), LinkResult):
            return verified
        claims, user_id = verified
        columns, session = self.columns, self.db.session
        try:
            purpose = columns.confirm(session, user_id, claims.email, outbox.utcnow())
        except IntegrityError:  # the new address was taken by another account meanwhile
            session.rollback()
            return LinkResult(Outcome.INVALID)
        if purpose is not None:
            session.commit()
            user = session.get(columns.model, user_id)
            signals.email_confirmed.send(_app(), user=user, email=claims.email, purpose=purpose)
            return LinkResult(Outcome.CONFIRMED, user)
        session.rollback()
        user = session.get(columns.model, user_id)
        if user is not None and columns.email_of(user) == claims.email:
            if columns.is_confirmed(user):
                return LinkResult(Outcome.ALREADY_CONFIRMED, user)
        return LinkResult(Outcome.INVALID)

    def cancel_change(self, token: str, use: bool) -> LinkResult:
        """What a change notice's link does (``use``: does it): clear the pending address while
        the notified address is the login, with one conditional UPDATE so concurrent uses
        signal once; commits. A genuine link of no pending change (whoever's) is as one used."""
        if isinstance(verified := self._verified(token, cancel=True), LinkResult):
            return verified
        (claims, user_id), columns, session = verified, self.columns, self.db.session
        user = session.get(columns.model, user_id)  # its address still the one notified:
        new = columns.pending_of(user) if user and columns.email_of(user) == claims.email else None
        if new is None:
            return LinkResult(Outcome.NOTHING_PENDING)
        if not use:
            return LinkResult(Outcome.CANCEL, user)
        if not columns.cancel_pending(session, user_id, claims.email, new):
            session.rollback()
            return LinkResult(Outcome.NOTHING_PENDING)
        session.commit()
        signals.email_change_cancelled.send(
            _app(), user=user, old_email=claims.email, new_email=new
        )
        return LinkResult(Outcome.CANCELLED, user)

    def confirm_code(self, email: object, code: object) -> LinkResult:
        """Use the code of the newest email with one to ``email`` as its link would be; commits.
        Each try counts against the (account, address) and the address budgets, which new
        emails do not reset; an unknown address or a wrong, void or expired code gives
        ``INVALID`` with the same work. Raises :class:`AddressError` for an invalid ``email``."""
        address = normalize_address(email)
        columns, session = self.columns, self.db.session
        try:
            conn = session.connection()
            row = outbox.newest_code(conn, self.outbox_table, address)
            user_key = "" if row is None else row.user_id
            budget, lifetime = (CODE_MAX_TRIES, ADDRESS_CODE_TRIES), self.settings.lifetime
            left = outbox.take_try(conn, self.state_table, user_key, address, budget, lifetime)
            right = self.codes.matches(code, 0 if row is None else row.id, address)
            session.commit()  # the try counts, whatever follows
            if row is None or not (left and right and outbox.utcnow() < row.code_expires_at):
                return LinkResult(Outcome.INVALID)
            try:
                user_id = columns.parse_id(user_key)
                purpose = columns.confirm(session, user_id, address, outbox.utcnow())
            except (TokenError, IntegrityError):  # the address was taken by another account
                purpose = None
            if purpose is None:
                return LinkResult(Outcome.INVALID)
            session.commit()
            user = session.get(columns.model, user_id)
            signals.email_confirmed.send(_app(), user=user, email=address, purpose=purpose)
            return LinkResult(Outcome.CONFIRMED, user)
        finally:
            session.rollback()


def get_flow(app: Flask | None = None) -> ConfirmationFlow:
    """The confirmation flow of ``app`` (default: the current app); raises
    :class:`NotInitializedError` if ``init_app`` was not called on it."""
    flow: ConfirmationFlow | None = (app or current_app).extensions.get(EXTENSION_KEY)
    if flow is None:
        raise NotInitializedError(
            "flask-confirm-mail is not registered on this app. "
            "Did you forget to call ConfirmMail.init_app(app)?"
        )
    return flow


def deliver(ids: Sequence[int]) -> int:
    """Deliver these committed outbox messages now, in this thread (the job of
    ``CONFIRM_MAIL_DELIVERY = "queue"``); return how many were sent. One held by another
    worker or already sent is skipped, one that fails stays due for a retry."""
    return get_flow().deliverer.deliver_now([int(i) for i in ids])


def deliver_due() -> int:
    """Deliver every due message until none is left (retries, lost jobs): a queue's
    periodic job. Returns how many were sent."""
    return DeliveryLoop(_app(), get_flow().deliverer).run(until_idle=True).sent


def send_confirmation(user: Any, *, context: dict[str, Any] | None = None) -> Any:
    """Queue a confirmation email for ``user`` in the current session (also to resend),
    sent on commit, to the pending address after :func:`change_email`; return the message.

    :param context: JSON-safe values passed to the email templates as ``context``.
    :raises AddressError: the address is not a single valid address."""
    flow = get_flow()
    purpose = Purpose.CHANGE if flow.columns.pending_of(user) else Purpose.SIGNUP
    return flow.enqueue(user, purpose, context)


def change_email(user: Any, new_email: str) -> bool:
    """Record ``new_email`` as ``user``'s unconfirmed new address and mail it a link; commit
    the session to send. Returns ``False`` when it already is the address. With a pending
    column the old address stays the login until the link is used; without one it is
    replaced at once and marked unconfirmed.

    :raises AddressError: ``new_email`` is not a single valid address."""
    flow = get_flow()
    columns = flow.columns
    new = columns.check_fits(normalize_address(new_email))
    old = columns.email_of(user)
    if new == old:
        columns.set_pending(user, None)
        return False
    was_confirmed = columns.is_confirmed(user)
    replaced = columns.pending_attribute is None  # the new address is the login now
    if replaced:
        setattr(user, columns.email_attribute, new)
        columns.set_unconfirmed(user)
        # Written even when the loaded row already said "unconfirmed": a link to the old
        # address used since the row was loaded must not leave the new one confirmed.
        flag_modified(user, columns.confirmed_attribute)
    else:
        columns.set_pending(user, new)
    # Each address once per RESEND_COOLDOWN, never when marked: no mailing any address at will.
    if flow.blocked(new) is None and not flow.cooling(new):
        flow.enqueue(user, Purpose.CHANGE)
    # A confirmed old address learns of it, even just after its sign-up email;
    # a series of changes gives it one notice per cooldown.
    notice = Purpose.CHANGE_NOTICE
    if flow.settings.change_notice and old and was_confirmed and not flow.cooling(old, notice):
        context = {"new_email": mask_address(new), "replaced": replaced}
        if flow.blocked(old) is None:
            flow.enqueue(user, notice, context, recipient=old)
    signals.email_change_requested.send(_app(), user=user, old_email=old, new_email=new)
    return True


def is_confirmed(user: Any) -> bool:
    """Whether ``user``'s current address is confirmed."""
    return get_flow().columns.is_confirmed(user)


def find_user(address: object) -> Any:
    """The user whose address, not a pending one, is ``address`` as typed (compared in the
    canonical form the extension stores), else ``None``, an invalid ``address`` included."""
    flow, canonical = get_flow(), canonical_or_none(address)
    user, which = flow.columns.find(flow.db.session, canonical) if canonical else (None, None)
    return user if which == Purpose.SIGNUP else None


def link_base_url(app: Flask | None = None) -> str:
    """The confirm route's URL up to the token, e.g. ``https://site.example/confirm/``."""
    return get_flow(app).settings.link_prefix


def stop_delivery(app: Flask | None = None, timeout: float = 10.0) -> None:
    """Stop this process's background sender after its current batch (shutdown, tests)."""
    get_flow(app).sender.stop(timeout)


def redact_request_logs(app: Flask | None = None, loggers: Iterable[str] | None = None) -> None:
    """Keep link tokens out of the server's request logs; call once, after ``init_app`` (which
    filters only the extension's logger and the app's). Filters ``loggers`` (default:
    werkzeug's and gunicorn's), writing ``[redacted]`` for the token of
    ``<CONFIRM_MAIL_URL_PREFIX>/<token>`` and anything shaped like a token."""
    names = SERVER_LOGGERS if loggers is None else loggers
    install_log_redaction(names, [get_flow(app).settings.url_prefix])
