"""The confirmation flow of one app, on its database: queue an email, check a link, confirm.

``init_app`` builds one :class:`ConfirmationFlow` per app (``app.extensions["confirm_mail"]``);
the views, decorators and CLI act through it. Its methods work in the caller's
Flask-SQLAlchemy session and transaction, except :meth:`~ConfirmationFlow.confirm_link`
and :meth:`~ConfirmationFlow.request_resend`, which commit their own small transaction.

The session events at the end tie the outbox to the caller's transaction: in a
:func:`~flask_confirm_mail.signup_view`, every new user that is flushed gets an outbox
message in the same session (so a rollback drops both); after a commit, the messages it
saved are handed to the app's delivery mode (``sync``, ``thread``, ``worker`` or
``celery``).
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any

import sqlalchemy as sa
from flask import (
    Flask,
    Response,
    after_this_request,
    current_app,
    g,
    has_app_context,
    has_request_context,
)
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import flag_modified

from . import outbox, signals
from .addresses import mask_address, normalize_address
from .delivery import BackgroundSender, Deliverer
from .errors import ExpiredToken, NotInitializedError, TokenError
from .i18n import current_locale
from .outbox import Purpose
from .redaction import SERVER_LOGGERS, install_log_redaction
from .settings import Settings
from .tokens import CodeHasher, LinkClaims, LinkTokenSigner
from .transport import Transport
from .users import UserColumns

EXTENSION_KEY = "confirm_mail"
#: Every confirmation code is 6 digits, each of the 10**6 codes as likely.
CODE_LENGTH = 6
CODE_ALPHABET = "0123456789"
#: Wrong tries of one code before it is void and a new email is needed.
CODE_MAX_TRIES = 5
#: Seconds of clock skew allowed on a link token's ``iat`` and ``exp``.
LINK_LEEWAY = 30
#: Seconds between two looks for due reminders in each worker.
REMINDER_SCAN_INTERVAL = 60
#: Tries of a resend that fails after its response was sent, and the pause before the next.
RESEND_ATTEMPTS = 3
RESEND_RETRY_DELAY = 0.1

logger = logging.getLogger("flask_confirm_mail")


class Outcome(str, Enum):
    """What a link does; the ``status`` field of the JSON answers."""

    #: Valid and waiting: the GET page offers the confirm button.
    PENDING = "pending"
    CONFIRMED = "confirmed"
    ALREADY_CONFIRMED = "already_confirmed"
    EXPIRED = "expired"
    INVALID = "invalid"


@dataclass(frozen=True)
class Reminder:
    """One reminder email queued (or, in a dry run, due) for a never-confirmed sign-up."""

    user_id: str
    email: str
    #: 1 for the first delay of ``CONFIRM_MAIL_REMINDERS``.
    number: int


@dataclass(frozen=True)
class LinkResult:
    """The outcome of checking or using a link, and the user it names when known."""

    outcome: Outcome
    user: Any = None


def _app() -> Any:
    return current_app._get_current_object()  # type: ignore[attr-defined]


class ConfirmationFlow:
    """Everything one app's confirmation flow needs, built once by ``init_app``."""

    def __init__(
        self,
        *,
        db: SQLAlchemy,
        outbox_model: type[Any],
        settings: Settings,
        columns: UserColumns,
        transport: Transport,
    ) -> None:
        self.db = db
        self.outbox_model = outbox_model
        self.outbox_table: sa.Table = outbox_model.__table__
        self.settings = settings
        self.columns = columns
        self.transport = transport
        #: Returns the logged-in user or ``None``; set by ``ConfirmMail.user_getter``.
        self.user_getter: Callable[[], Any] | None = None
        #: ``check(connection, address)``: why ``address`` must not be mailed (a mark such
        #: as a bounce, with ``kind`` and ``marked_at``), or ``None``. The bounces part
        #: adds one.
        self.mail_blockers: list[Callable[[sa.Connection, str], Any]] = []
        self.signer = LinkTokenSigner(
            settings.secret[0], settings.secret[1:], lifetime=settings.lifetime,
            leeway=LINK_LEEWAY,
        )  # fmt: skip
        self.codes = CodeHasher(
            settings.secret[0], settings.secret[1:], length=CODE_LENGTH,
            alphabet=CODE_ALPHABET,
        )  # fmt: skip
        self.deliverer = Deliverer(
            db=db, table=self.outbox_table, settings=settings, transport=transport,
            signer=self.signer, codes=self.codes,
        )  # fmt: skip
        self.sender = BackgroundSender(self.deliverer)
        self._next_reminder_scan = 0.0
        #: ``celery`` mode: sends committed outbox ids to the app's Celery (set by
        #: :func:`~flask_confirm_mail.tasks.install_celery_delivery` at ``init_app``).
        self.handoff: Callable[[list[int]], None] | None = None

    # --- queueing emails (in the caller's session) ----------------------------------------

    def enqueue(
        self,
        user: Any,
        purpose: Purpose = Purpose.SIGNUP,
        context: dict[str, Any] | None = None,
        *,
        recipient: str | None = None,
    ) -> Any:
        """Add an outbox message for ``user`` to the session; it goes out after commit.

        ``purpose`` ``signup`` mails the user's address; ``change`` mails the pending one;
        ``recipient`` names another (the old address, for ``change_notice``).

        :raises AddressError: the address to mail is not a single valid address.
        """
        row = self._queue(user, purpose, context, recipient)
        signals.confirmation_requested.send(
            _app(), user=user, email=row.recipient, purpose=purpose, outbox=row
        )
        return row

    def _queue(
        self,
        user: Any,
        purpose: Purpose,
        context: dict[str, Any] | None,
        recipient: str | None,
        reminder: int | None = None,
        locale: str | None = None,
    ) -> Any:
        columns = self.columns
        session = self.db.session
        if recipient is None:
            recipient = columns.pending_of(user) if purpose == Purpose.CHANGE else None
            recipient = recipient or columns.email_of(user)
        normalize_address(recipient)
        if getattr(user, columns.id_attribute) is None:
            session.flush()
        now = outbox.utcnow()
        row = self.outbox_model(
            user_id=columns.id_of(user),
            recipient=recipient,
            purpose=purpose.value,
            context=context or None,
            status=outbox.PENDING,
            attempts=0,
            due_at=now,
            created_at=now,
            message_id=outbox.new_message_id(self.settings.host),
            reminder=reminder,
            locale=locale or current_locale(),
        )
        session.add(row)  # saved by the caller's next flush, with its other changes
        return row

    def change_email(self, user: Any, new_email: str) -> bool:
        """Ask to change ``user``'s address to ``new_email``; mail a link to the new address.

        With a pending-address column, the old address stays the login until the link is
        used. Without one, the address is replaced at once and marked unconfirmed (the
        original's behaviour). Returns ``False`` when ``new_email`` is the current address.

        :raises AddressError: ``new_email`` is not a single valid address.
        """
        columns = self.columns
        new = columns.check_fits(normalize_address(new_email))
        old = columns.email_of(user)
        if new == old:
            columns.set_pending(user, None)
            return False
        if columns.pending_attribute is not None:
            columns.set_pending(user, new)
        else:
            setattr(user, columns.email_attribute, new)
            columns.set_unconfirmed(user)
            # Written even when the loaded row already said "unconfirmed": a link to the old
            # address used since the row was loaded must not leave the new one confirmed.
            flag_modified(user, columns.confirmed_attribute)
        self.enqueue(user, Purpose.CHANGE)
        if self.settings.change_notice and old is not None and self.blocked(old) is None:
            # The old address learns of the change, with no link and the new one masked.
            replaced = columns.pending_attribute is None  # the new address is the login now
            context = {"new_email": mask_address(new), "replaced": replaced}
            self.enqueue(user, Purpose.CHANGE_NOTICE, context, recipient=old)
        signals.email_change_requested.send(_app(), user=user, old_email=old, new_email=new)
        return True

    def blocked(self, address: str) -> Any:
        """Why ``address`` must not be mailed (:attr:`mail_blockers`), or ``None``."""
        connection = self.db.session.connection()
        for check in self.mail_blockers:
            mark = check(connection, address)
            if mark is not None:
                return mark
        return None

    def confirm_user(self, user: Any) -> bool:
        """Mark ``user``'s address (or pending address) confirmed by hand, in the session."""
        columns = self.columns
        pending = columns.pending_of(user)
        if pending is not None:
            setattr(user, columns.email_attribute, pending)
            columns.set_pending(user, None)
        elif columns.is_confirmed(user):
            return False
        setattr(user, columns.confirmed_attribute, columns.confirmed_value(outbox.utcnow()))
        return True

    # --- links ----------------------------------------------------------------------------

    def _verified(self, token: str) -> tuple[LinkClaims, Any] | LinkResult:
        """The token's claims and the user id they name, or the outcome of a bad token."""
        try:
            claims = self.signer.verify(token)
            return claims, self.columns.parse_id(claims.user_id)
        except ExpiredToken:
            return LinkResult(Outcome.EXPIRED)
        except TokenError:
            return LinkResult(Outcome.INVALID)

    def check_link(self, token: str) -> LinkResult:
        """What ``token`` would do, changing nothing (the GET page)."""
        verified = self._verified(token)
        if isinstance(verified, LinkResult):
            return verified
        claims, user_id = verified
        columns = self.columns
        user = self.db.session.get(columns.model, user_id)
        if user is None:
            return LinkResult(Outcome.INVALID)
        if columns.email_of(user) == claims.email:
            confirmed = columns.is_confirmed(user)
            return LinkResult(Outcome.ALREADY_CONFIRMED if confirmed else Outcome.PENDING, user)
        if columns.pending_of(user) == claims.email:
            return LinkResult(Outcome.PENDING, user)
        return LinkResult(Outcome.INVALID)

    def confirm_link(self, token: str) -> LinkResult:
        """Use ``token``: one conditional UPDATE confirms the address it was mailed to.

        Concurrent calls with one link confirm once and send ``email_confirmed`` once.
        Commits on success, rolls back otherwise.
        """
        verified = self._verified(token)
        if isinstance(verified, LinkResult):
            return verified
        claims, user_id = verified
        columns = self.columns
        session = self.db.session
        try:
            purpose = columns.confirm(session, user_id, claims.email, outbox.utcnow())
        except IntegrityError:  # the new address was taken by another account meanwhile
            session.rollback()
            return LinkResult(Outcome.INVALID)
        if purpose is not None:
            outbox.void_codes(session.connection(), self.outbox_table, claims.user_id)
            session.commit()
            user = session.get(columns.model, user_id)
            signals.email_confirmed.send(_app(), user=user, email=claims.email, purpose=purpose)
            return LinkResult(Outcome.CONFIRMED, user)
        session.rollback()
        user = session.get(columns.model, user_id)
        if (
            user is not None
            and columns.email_of(user) == claims.email
            and columns.is_confirmed(user)
        ):
            return LinkResult(Outcome.ALREADY_CONFIRMED, user)
        return LinkResult(Outcome.INVALID)

    def confirm_code(self, email: object, code: object) -> LinkResult:
        """Use the confirmation code mailed to ``email``, as its link would be used.

        Counts one try of the code in the newest email minted to that address; once
        :data:`CODE_MAX_TRIES` tries are used, the code is void. The right code confirms the
        address (a sign-up's, or a change's pending one) and voids every code and, the
        address being confirmed, the links mailed for it. An unknown address, a wrong,
        used, void or expired code all give :attr:`Outcome.INVALID`, with the same work.
        Commits.

        :raises AddressError: ``email`` is not a single valid address.
        """
        address = normalize_address(email)
        session = self.db.session
        table = self.outbox_table
        try:
            connection = session.connection()
            row = outbox.take_code_try(connection, table, address, CODE_MAX_TRIES)
            if row is None:
                self.codes.matches(code, 0, address, None)  # the same HMAC work as a real try
                return LinkResult(Outcome.INVALID)
            right = self.codes.matches(code, row.id, row.recipient, row.code_digest)
            live = row.code_expires_at is not None and outbox.utcnow() < row.code_expires_at
            session.commit()  # the try counts, whatever follows
            if not (right and live):
                return LinkResult(Outcome.INVALID)
            return self._confirm_by_code(row.user_id, row.recipient)
        finally:
            session.rollback()

    def _confirm_by_code(self, user_key: str, address: str) -> LinkResult:
        columns, session = self.columns, self.db.session
        try:
            user_id = columns.parse_id(user_key)
            purpose = columns.confirm(session, user_id, address, outbox.utcnow())
        except (TokenError, IntegrityError):  # the address was taken by another account
            session.rollback()
            purpose = None
        # Used up: every code of the account once an address is confirmed, else this
        # address's (it is no longer the account's to confirm).
        only = None if purpose is not None else address
        outbox.void_codes(session.connection(), self.outbox_table, user_key, only)
        session.commit()
        if purpose is None:
            return LinkResult(Outcome.INVALID)
        user = session.get(columns.model, user_id)
        signals.email_confirmed.send(_app(), user=user, email=address, purpose=purpose)
        return LinkResult(Outcome.CONFIRMED, user)

    def request_resend(self, email: object, *, requester: str | None = None) -> None:
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
            self.resend_now(address, requester=requester)
            return
        # The same round trip for every address: an outage is answered (503), not hidden.
        self.db.session.execute(sa.text("SELECT 1"))
        self.db.session.rollback()
        app = _app()

        @after_this_request
        def _after_response(response: Response) -> Response:
            response.call_on_close(lambda: self._resend_after_response(app, address, requester))
            return response

    def _resend_after_response(self, app: Flask, address: str, requester: str | None) -> None:
        """Run :meth:`resend_now` in an app context of its own; log what fails."""
        for attempt in range(1, RESEND_ATTEMPTS + 1):
            with app.app_context():
                g.setdefault(_AFTER_RESPONSE, True)
                try:
                    self.resend_now(address, requester=requester)
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

    def resend_now(self, address: str, *, requester: str | None = None) -> None:
        """The work of :meth:`request_resend` for a normalized ``address``, at once.

        One small transaction, committed when a message is queued: on SQLite it holds the
        write lock from the start, elsewhere the user rows are locked, so concurrent
        resends for one address check the cooldown one after the other.
        """
        session = self.db.session
        try:
            connection = session.connection()
            if connection.dialect.name == "sqlite":
                _begin_immediate(connection)
            user, purpose = self.columns.find(session, address, lock=True)
            if user is None or purpose is None:
                return
            if purpose == Purpose.SIGNUP and self.columns.is_confirmed(user):
                return
            owner = self.columns.id_of(user)
            if (purpose == Purpose.CHANGE or requester is not None) and requester != owner:
                return  # a link goes only to the account that asked for it
            last = outbox.last_queued_at(session.connection(), self.outbox_table, address)
            if last is not None and outbox.utcnow() - last < self.settings.resend_cooldown:
                return
            if self.blocked(address) is not None:  # e.g. known to bounce
                return
            self.enqueue(user, purpose)
            session.commit()
        finally:
            session.rollback()

    # --- reminders -------------------------------------------------------------------------

    def queue_reminders(self, *, dry_run: bool = False) -> list[Reminder]:
        """Queue the ``CONFIRM_MAIL_REMINDERS`` due now, in one transaction; return them.

        A never-confirmed sign-up (unconfirmed, no address change asked) whose address is
        not marked undeliverable gets reminder *n* once ``REMINDERS[n-1]`` has passed since
        it signed up. Each number is sent at most once per user (a unique index on the
        outbox, so concurrent workers and reruns never send one twice), and only the
        latest one due: a sign-up that is 4 days old with ``"1d, 3d"`` gets the second only.
        Commits, or with ``dry_run`` rolls back and only reports.
        """
        delays = self.settings.reminders
        columns = self.columns
        session = self.db.session
        now = outbox.utcnow()
        due: list[Reminder] = []
        seen: set[str] = set()
        try:
            dialect = session.connection().dialect.name
            if dialect == "sqlite":
                _begin_immediate(session.connection())  # one scanner at a time
            for number in range(len(delays), 0, -1):
                cutoff = now - delays[number - 1]
                ids = outbox.signed_up_before(
                    session.connection(), self.outbox_table, cutoff, reminded_from=number,
                    among=columns.waiting_ids(dialect),  # confirmed users left out in SQL
                )  # fmt: skip
                for user_id in ids:
                    if user_id in seen:
                        continue
                    seen.add(user_id)
                    user = session.get(columns.model, columns.parse_id(user_id))
                    address = None if user is None else columns.email_of(user)
                    if (
                        address is None
                        or columns.is_confirmed(user)
                        or columns.pending_of(user) is not None
                        or self.blocked(address) is not None
                    ):
                        continue
                    if not dry_run and not self._queue_reminder(user, address, number):
                        continue  # another worker queued it first
                    due.append(Reminder(user_id, address, number))
            if not dry_run:
                session.commit()
        finally:
            session.rollback()
        return due

    def _queue_reminder(self, user: Any, address: str, number: int) -> bool:
        session = self.db.session
        try:
            with session.begin_nested():
                # Written in the sign-up's language (the worker has no request of its own).
                user_id = self.columns.id_of(user)
                locale = outbox.signup_locale(session.connection(), self.outbox_table, user_id)
                context = {"reminder": number}
                row = self._queue(user, Purpose.REMINDER, context, address, number, locale)
        except IntegrityError:
            return False
        signals.confirmation_requested.send(
            _app(), user=user, email=address, purpose=Purpose.REMINDER, outbox=row
        )
        return True

    def remind_when_due(self) -> None:
        """The worker loop's hook: :meth:`queue_reminders` at most once per
        :data:`REMINDER_SCAN_INTERVAL`; errors are logged, never raised."""
        if not self.settings.reminders or time.monotonic() < self._next_reminder_scan:
            return
        self._next_reminder_scan = time.monotonic() + REMINDER_SCAN_INTERVAL
        try:
            queued = self.queue_reminders()
        except Exception:
            logger.exception("Could not queue the reminders due; trying again later")
            return
        if queued:
            logger.info("Queued %s reminder email(s)", len(queued))

    # --- handing committed messages to the delivery mode -----------------------------------

    def dispatch(self, ids: list[int]) -> None:
        """Hand messages just committed to the outbox to the delivery mode.

        In a request, ``thread`` mode wakes this process's sender (starting it if it does
        not run). Outside a request (a CLI command, a script, the shell), it delivers
        at once, as ``sync`` does: no response waits, and the process may exit right after,
        ending a background sender mid-send. So does ``sync`` for a resend queued after its
        response was sent: no ``after_request`` is left to run in that request.
        """
        mode = self.settings.delivery
        after_response = g.get(_AFTER_RESPONSE, False)  # a resend's work, once answered
        if mode == "celery" and self.handoff is not None:
            self.handoff(ids)
        elif mode == "thread" and (has_request_context() or after_response):
            self.sender.wake(_app())
        elif mode in ("thread", "sync"):
            if has_request_context() and not after_response:
                g.setdefault(_SYNC_QUEUE, []).extend(ids)
            else:
                self.deliverer.deliver_now(ids)

    def after_request(self, response: Response) -> Response:
        """``sync`` mode: deliver what this request committed to the outbox."""
        ids = g.pop(_SYNC_QUEUE, None)
        if ids:
            self.deliverer.deliver_now(ids)
        return response


def _begin_immediate(connection: sa.Connection) -> None:
    """On SQLite, which has no row locks, start the transaction holding the write lock.

    Concurrent resends for one address then check the cooldown one after the other (they
    wait up to the driver's busy timeout); on other databases the rows that
    :meth:`UserColumns.find` locks do this.
    """
    driver_connection = connection.connection.dbapi_connection
    if not getattr(driver_connection, "in_transaction", True):
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def get_flow(app: Flask | None = None) -> ConfirmationFlow:
    """The confirmation flow of ``app`` (default: the current app).

    :raises NotInitializedError: ``init_app`` was not called on that app.
    """
    target = app if app is not None else current_app
    try:
        flow: ConfirmationFlow = target.extensions[EXTENSION_KEY]
    except KeyError:
        raise NotInitializedError(
            "flask-confirm-mail is not registered on this app. "
            "Did you forget to call ConfirmMail.init_app(app)?"
        ) from None
    return flow


# --- the public functions: they act on the current app -------------------------------------


def send_confirmation(user: Any, *, context: dict[str, Any] | None = None) -> Any:
    """Queue a confirmation email for ``user`` in the current session (also to resend).

    It goes out once the session commits. With a pending address (after
    :func:`change_email`) the link goes to that address, otherwise to the user's address.
    ``context`` values (JSON-safe) are passed to the email templates as ``context``.
    Returns the outbox message.

    :raises AddressError: the address is not a single valid address.
    """
    flow = get_flow()
    purpose = Purpose.CHANGE if flow.columns.pending_of(user) else Purpose.SIGNUP
    return flow.enqueue(user, purpose, context)


def change_email(user: Any, new_email: str) -> bool:
    """Record ``new_email`` as ``user``'s unconfirmed new address and mail it a link.

    The old address stays the login until the link is used (when the model has a
    pending-address column). Commit the session to send. Returns ``False`` when
    ``new_email`` is already the user's address.

    :raises AddressError: ``new_email`` is not a single valid address.
    """
    return get_flow().change_email(user, new_email)


def is_confirmed(user: Any) -> bool:
    """Whether ``user``'s current address is confirmed."""
    return get_flow().columns.is_confirmed(user)


def link_base_url(app: Flask | None = None) -> str:
    """The confirm route's URL up to the token, e.g. ``https://site.example/confirm/``."""
    return get_flow(app).settings.link_prefix


def stop_delivery(app: Flask | None = None, timeout: float = 10.0) -> None:
    """Stop this process's background sender after its current batch (shutdown, tests)."""
    get_flow(app).sender.stop(timeout)


def redact_request_logs(app: Flask | None = None, loggers: Iterable[str] | None = None) -> None:
    """Keep link tokens out of the app's and the server's logs.

    Adds a filter to ``loggers`` (default: the app's logger, whose exception log names
    the path, werkzeug's and gunicorn's) that replaces the token in any spelling of
    ``<CONFIRM_MAIL_URL_PREFIX>/<token>``, and anything shaped like a token, with
    ``[redacted]``. Call it once, after ``init_app``; without it the extension filters
    only its own logger.
    """
    target = app if app is not None else current_app
    names = (target.logger.name, *SERVER_LOGGERS) if loggers is None else loggers
    install_log_redaction(names, [get_flow(app).settings.url_prefix])


# --- session events ------------------------------------------------------------------------

_SYNC_QUEUE = "_confirm_mail_sync_ids"
#: Set on ``g`` while a resend runs after its response: ``thread`` mode still wakes the sender.
_AFTER_RESPONSE = "_confirm_mail_after_response"
_NEW_USERS = "confirm_mail_new_users"
_QUEUED = "confirm_mail_queued_ids"
_SIGNUP_DEPTH = "_confirm_mail_signup_depth"

_listening: weakref.WeakSet[SQLAlchemy] = weakref.WeakSet()


def listen_to_session(db: SQLAlchemy) -> None:
    """Listen on ``db.session`` (once per ``db``)."""
    if db in _listening:
        return
    _listening.add(db)
    event.listen(db.session, "before_flush", _before_flush)
    event.listen(db.session, "after_flush", _after_flush)
    event.listen(db.session, "after_flush_postexec", _after_flush_postexec)
    event.listen(db.session, "after_commit", _after_commit)
    event.listen(db.session, "after_rollback", _after_rollback)


def begin_signup() -> None:
    """From now on in this request, new users get a confirmation email."""
    setattr(g, _SIGNUP_DEPTH, g.get(_SIGNUP_DEPTH, 0) + 1)


def end_signup() -> None:
    setattr(g, _SIGNUP_DEPTH, max(g.get(_SIGNUP_DEPTH, 0) - 1, 0))


def _in_signup() -> bool:
    return bool(g.get(_SIGNUP_DEPTH, 0))


def _flow_of(session: Session) -> ConfirmationFlow | None:
    """The current app's flow, if ``session`` is the session of its ``db``."""
    if not has_app_context():
        return None
    flow: ConfirmationFlow | None = current_app.extensions.get(EXTENSION_KEY)
    if flow is None:
        return None
    registry = flow.db.session.registry
    if not registry.has() or registry() is not session:
        return None
    return flow


def _before_flush(session: Session, flush_context: Any, instances: Any) -> None:
    """Store users' new addresses in canonical form; in a sign-up, refuse invalid ones.

    Whatever spelling the app's view saved (the raw form value), the row holds the
    canonical address, so one mailbox is one account and every lookup finds it.
    """
    flow = _flow_of(session)
    if flow is None:
        return
    columns = flow.columns
    signup = _in_signup()
    for obj in session.new:
        if isinstance(obj, columns.model):
            columns.canonicalize(obj, strict=signup)
    for obj in session.dirty:
        if isinstance(obj, columns.model):
            columns.canonicalize(obj, strict=False)


def _after_flush(session: Session, flush_context: Any) -> None:
    flow = _flow_of(session)
    if flow is None:
        return
    columns = flow.columns
    for obj in (*session.new, *session.dirty):
        if isinstance(obj, columns.model):
            columns.void_claims_of(session, obj)
    signup = _in_signup()
    for obj in session.new:
        if isinstance(obj, flow.outbox_model):
            session.info.setdefault(_QUEUED, []).append(obj.id)
        elif signup and isinstance(obj, flow.columns.model):
            session.info.setdefault(_NEW_USERS, []).append(obj)


def _after_flush_postexec(session: Session, flush_context: Any) -> None:
    users = session.info.pop(_NEW_USERS, None)
    flow = _flow_of(session)
    if users and flow is not None:
        for user in users:
            flow.enqueue(user, Purpose.SIGNUP)


def _after_commit(session: Session) -> None:
    if session.get_nested_transaction() is not None:
        return  # a savepoint was released: the messages are saved only by the outer commit
    ids = session.info.pop(_QUEUED, None)
    flow = _flow_of(session)
    if ids and flow is not None:
        flow.dispatch(ids)


def _after_rollback(session: Session) -> None:
    if session.get_nested_transaction() is not None:
        return  # only a savepoint: what the outer transaction queued stays queued
    session.info.pop(_NEW_USERS, None)
    session.info.pop(_QUEUED, None)
