"""The outbox: the table of confirmation emails, and every query on it.

A confirmation email is first a row here, written in the same transaction as the
sign-up, email change or resend that asks for it. The row holds what is needed to
write the message at send time, never a link token: the token is minted when the
message is sent, so its lifetime counts from delivery and no live token is stored.

A row is *claimable* while its status is ``pending`` or ``sending`` and ``due_at`` has
passed: a claim sets ``sending`` and moves ``due_at`` to the end of a lease, so a
message whose worker died is taken again once the lease is over. Claiming is one
``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING``: on PostgreSQL
concurrent workers skip each other's rows; on SQLite it runs under the database's single
writer lock. The partial index on ``due_at`` covers only claimable rows, so claiming
costs the same however many ``sent`` rows the table holds.

A worker extends the lease of the rows it is still sending (:func:`extend_lease`), gives
back the rows it will not send (:func:`release`), and records each outcome. A delivery is
recorded even by a worker whose lease ran out (:func:`mark_sent`), so a slow batch is not
sent again for ever. Each failed attempt records its kind (:data:`FAILURES`): a refusal is
the server's answer; an *unknown* outcome is a connection lost after the message was
handed over, which may or may not have been delivered.

A row also holds the confirmation code of its newest minted email, as an HMAC only
(:func:`store_codes`), with the count of its tries (:func:`take_code_try`, one
``UPDATE``), until an address of the account is confirmed (:func:`void_codes`).

On PostgreSQL the transaction that adds rows also sends a ``NOTIFY``; an idle worker's
:class:`OutboxListener` ``LISTEN``\\ s for it and claims the new email a few milliseconds
after the commit instead of at its next poll. Polling (``CONFIRM_MAIL_POLL_INTERVAL``)
stays the safety net: retries coming due, a notification missed while the listener
reconnected, other databases. On a SQLite file, a :class:`SQLiteWatcher` reads the file's
commit counter instead (:func:`waker_for` picks one).
"""

from __future__ import annotations

import logging
import secrets
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import Any

import sqlalchemy as sa
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Mapped, mapped_column

logger = logging.getLogger("flask_confirm_mail")

TABLE_NAME = "confirm_mail_outbox"


class Purpose(str, Enum):
    """Why an outbox message is sent: the one place the purposes are named."""

    #: Confirm the address of a new account.
    SIGNUP = "signup"
    #: Confirm a new address after an email change.
    CHANGE = "change"
    #: Tell the old address of an email change: no link.
    CHANGE_NOTICE = "change_notice"
    #: Remind a sign-up that has not confirmed yet, with a fresh link.
    REMINDER = "reminder"

    @property
    def has_link(self) -> bool:
        """Whether the email carries a link (and a link token is minted for it)."""
        return self is not Purpose.CHANGE_NOTICE


#: The PostgreSQL channel notified by each transaction that adds outbox rows.
NOTIFY_CHANNEL = "confirm_mail_outbox"

PENDING = "pending"
SENDING = "sending"
SENT = "sent"
DEAD = "dead"
STATUSES = (PENDING, SENDING, SENT, DEAD)
CLAIMABLE = (PENDING, SENDING)
MAX_ERROR_LENGTH = 500

#: Kinds of failed attempt: the server refused for good (5xx), a temporary failure (4xx,
#: no connection), or the connection was lost after the message was sent (outcome unknown).
REFUSED = "refused"
TEMPORARY = "temporary"
UNKNOWN = "unknown"
FAILURES = (REFUSED, TEMPORARY, UNKNOWN)
#: The error recorded when a lease ends on a message's last allowed attempt.
LEASE_LOST_ERROR = "The worker's lease ended during the last attempt: outcome unknown"

#: The claimable statuses written into the SQL as literals, not bound parameters: only
#: then can the database see that the claim's ``WHERE`` implies the partial index's
#: (SQLite otherwise scans the whole table, sent rows included).
_CLAIMABLE_LITERALS: sa.BindParameter[list[str]] = sa.bindparam(
    "claimable_statuses", list(CLAIMABLE), expanding=True, literal_execute=True
)


def utcnow() -> datetime:
    """Now in UTC, as a naive datetime: what every column of this package stores."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def new_message_id(domain: str) -> str:
    """A Message-ID for one outbox message, kept across its retries."""
    return f"<{secrets.token_hex(16)}@{domain}>"


_models: weakref.WeakKeyDictionary[SQLAlchemy, type[Any]] = weakref.WeakKeyDictionary()


def outbox_model_for(db: SQLAlchemy) -> type[Any]:
    """The outbox model of ``db``, defined on first use (one per ``db``)."""
    model = _models.get(db)
    if model is None:
        model = _models[db] = _define(db)
    return model


def _define(db: SQLAlchemy) -> type[Any]:
    claimable = sa.column("status").in_(CLAIMABLE)

    class OutboxMessage(db.Model):  # type: ignore[name-defined,misc]
        """One confirmation email waiting for, or done with, delivery."""

        __tablename__ = TABLE_NAME
        __table_args__ = (
            sa.Index(
                "ix_confirm_mail_outbox_due",
                "due_at",
                postgresql_where=claimable,
                sqlite_where=claimable,
            ),
            sa.Index("ix_confirm_mail_outbox_recipient", "recipient", "created_at"),
            sa.Index("ix_confirm_mail_outbox_user", "user_id", "created_at"),
            # One row per reminder number and user: two workers never both send it.
            sa.Index("ix_confirm_mail_outbox_reminder", "user_id", "reminder", unique=True),
        )

        id: Mapped[int] = mapped_column(
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True
        )
        user_id: Mapped[str] = mapped_column(sa.String(64))
        recipient: Mapped[str] = mapped_column(sa.String(254))
        purpose: Mapped[str] = mapped_column(sa.String(16))
        context: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON(), nullable=True)
        status: Mapped[str] = mapped_column(sa.String(16), default=PENDING)
        attempts: Mapped[int] = mapped_column(sa.Integer(), default=0)
        due_at: Mapped[datetime | None] = mapped_column(sa.DateTime(), default=utcnow)
        claimed_by: Mapped[str | None] = mapped_column(sa.String(128), nullable=True)
        last_error: Mapped[str | None] = mapped_column(sa.String(500), nullable=True)
        #: The kind of the last failed attempt, one of :data:`FAILURES`.
        last_failure: Mapped[str | None] = mapped_column(sa.String(16), nullable=True)
        #: When the last attempt failed (naive UTC).
        failed_at: Mapped[datetime | None] = mapped_column(sa.DateTime(), nullable=True)
        #: Attempts that lost the connection after handing the message over: any of them
        #: may have delivered it.
        unknown_outcomes: Mapped[int] = mapped_column(sa.Integer(), default=0)
        message_id: Mapped[str] = mapped_column(sa.String(255))
        #: The HMAC-SHA256 (:class:`~flask_confirm_mail.tokens.CodeHasher`) of the code in
        #: the last email minted from this row; ``None`` before, and once used or voided.
        code_digest: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
        #: Tries of that code so far.
        code_tries: Mapped[int] = mapped_column(sa.Integer(), default=0, server_default="0")
        #: When that code stops working, with the link minted with it (naive UTC).
        code_expires_at: Mapped[datetime | None] = mapped_column(sa.DateTime(), nullable=True)
        created_at: Mapped[datetime] = mapped_column(sa.DateTime(), default=utcnow)
        sent_at: Mapped[datetime | None] = mapped_column(sa.DateTime(), nullable=True)
        #: Which reminder (1 for the first of ``CONFIRM_MAIL_REMINDERS``) a ``reminder``
        #: message is; ``None`` for every other purpose.
        reminder: Mapped[int | None] = mapped_column(sa.Integer(), nullable=True)
        #: The locale of the request that queued it (Flask-Babel's), for the email's words.
        locale: Mapped[str | None] = mapped_column(sa.String(35), nullable=True)

        def __repr__(self) -> str:
            return f"<OutboxMessage {self.id} {self.purpose} {self.status}>"

    sa.event.listen(OutboxMessage, "after_insert", _notify_on_insert)
    return OutboxMessage


_NOTIFIED = "confirm_mail_notified"


def _notify_on_insert(mapper: Any, connection: Connection, target: Any) -> None:
    notify_workers(connection)


def notify_workers(connection: Connection) -> None:
    """On PostgreSQL, ``NOTIFY`` idle workers, once per transaction (delivered at commit)."""
    if connection.dialect.name != "postgresql":
        return
    transaction = connection.get_transaction()
    notified = connection.info.get(_NOTIFIED)
    if transaction is None or (notified is not None and notified() is transaction):
        return
    connection.exec_driver_sql(f"NOTIFY {NOTIFY_CHANNEL}")
    connection.info[_NOTIFIED] = weakref.ref(transaction)


# --- the delivery path's statements, built once per table ---------------------------------
#
# Each statement a delivery runs (expire, claim, store the codes, record the outcome) is
# built once per table and executed with new values: building an UPDATE with
# SQLAlchemy's expression API and computing its cache key cost 0.3-1.0 ms of CPU a call
# on SQLite, 0.1-0.2 ms prebuilt, and a lone email runs four of them (2.35 against
# 0.68 ms in all, ``python -m benchmarks.send_paths``). The names of their bound values
# start with the statement's, so none is taken for a column of the UPDATE's SET.


def _prepared(table: sa.Table, name: str, build: Callable[[sa.Table], Any]) -> Any:
    """The statement ``name`` on ``table``, built by ``build`` on first use (kept in the
    table's ``info``; two threads building it at once both build the same statement)."""
    statements: dict[str, Any] = table.info.setdefault("confirm_mail_statements", {})
    statement = statements.get(name)
    if statement is None:
        statement = statements[name] = build(table)
    return statement


def _build_claim(table: sa.Table, *, by_ids: bool, attempts_limited: bool) -> Any:
    c = table.c
    due = sa.select(c.id).where(
        c.status.in_(_CLAIMABLE_LITERALS), c.due_at <= sa.bindparam("claim_now")
    )
    if attempts_limited:
        due = due.where(c.attempts < sa.bindparam("claim_max_attempts"))
    if by_ids:
        due = due.where(c.id.in_(sa.bindparam("claim_ids", expanding=True)))
    due = (
        due.order_by(c.due_at)
        .limit(sa.bindparam("claim_limit", type_=sa.Integer()))
        .with_for_update(skip_locked=True)
    )
    columns = (c.id, c.user_id, c.recipient, c.purpose, c.context, c.attempts, c.message_id)
    return (
        sa.update(table)
        .where(c.id.in_(due.scalar_subquery()))
        .values(
            status=SENDING,
            due_at=sa.bindparam("claim_lease_end"),
            claimed_by=sa.bindparam("claim_worker"),
            attempts=c.attempts + 1,
        )
        .returning(*columns, c.locale)
    )


def claim(
    conn: Connection,
    table: sa.Table,
    *,
    worker_id: str,
    limit: int,
    lease: timedelta,
    ids: Sequence[int] | None = None,
    max_attempts: int | None = None,
) -> list[Any]:
    """Reserve up to ``limit`` due messages (only among ``ids`` when given), oldest first.

    With ``max_attempts``, only messages with an attempt left are taken.

    Each row has ``id``, ``user_id``, ``recipient``, ``purpose``, ``context``, ``attempts``
    (counting this one), ``message_id`` and ``locale``.
    """
    by_ids, attempts_limited = ids is not None, max_attempts is not None
    stmt = _prepared(
        table,
        f"claim:{by_ids}:{attempts_limited}",
        lambda t: _build_claim(t, by_ids=by_ids, attempts_limited=attempts_limited),
    )
    now = utcnow()
    values: dict[str, Any] = {
        "claim_now": now,
        "claim_lease_end": now + lease,
        "claim_worker": worker_id,
        "claim_limit": limit,
    }
    if ids is not None:
        values["claim_ids"] = list(ids)
    if max_attempts is not None:
        values["claim_max_attempts"] = max_attempts
    rows = conn.execute(stmt, values).all()
    return sorted(rows, key=lambda r: r.id)


def store_codes(
    conn: Connection, table: sa.Table, digests: Mapping[int, str], expires_at: datetime
) -> None:
    """Record the digest of the code just minted for each row id: the row's earlier code
    is void, and the new one has all its tries until ``expires_at``.

    One ``executemany`` (pipelined by psycopg 3): for a batch of 20 it took 1.7 to 4.8 ms
    on PostgreSQL and 0.5 ms on SQLite, against 2.8 to 5.3 and 0.8 to 1.0 ms for one
    ``UPDATE ... CASE`` (in the same runs, on a loaded machine).
    """
    if not digests:
        return
    stmt = _prepared(table, "store_codes", _build_store_codes)
    conn.execute(
        stmt,
        [
            {"codes_row_id": i, "codes_digest": d, "codes_expire_at": expires_at}
            for i, d in digests.items()
        ],
    )


def _build_store_codes(table: sa.Table) -> Any:
    c = table.c
    return (
        sa.update(table)
        .where(c.id == sa.bindparam("codes_row_id"))
        .values(
            code_digest=sa.bindparam("codes_digest"),
            code_expires_at=sa.bindparam("codes_expire_at"),
            code_tries=0,
        )
    )


def take_code_try(conn: Connection, table: sa.Table, recipient: str, max_tries: int) -> Any | None:
    """Count one try of the code in the newest email minted to ``recipient`` and return
    that row's ``id``, ``user_id``, ``recipient``, ``code_digest`` and ``code_expires_at``;
    ``None`` when there is no such code or its tries are used up.

    The count and its limit are one ``UPDATE``, so concurrent tries never exceed it.
    """
    c = table.c
    newest = (
        sa.select(sa.func.max(c.id))
        .where(c.recipient == recipient, c.code_digest.is_not(None))
        .scalar_subquery()
    )
    stmt = (
        sa.update(table)
        .where(c.id == newest, c.code_tries < max_tries)
        .values(code_tries=c.code_tries + 1)
        .returning(c.id, c.user_id, c.recipient, c.code_digest, c.code_expires_at)
    )
    return conn.execute(stmt).first()


def void_codes(
    conn: Connection, table: sa.Table, user_id: str, recipient: str | None = None
) -> None:
    """Void every code mailed to ``user_id`` (an address of it was just confirmed), or
    only those mailed to ``recipient``."""
    c = table.c
    stmt = sa.update(table).where(c.user_id == user_id, c.code_digest.is_not(None))
    if recipient is not None:
        stmt = stmt.where(c.recipient == recipient)
    conn.execute(stmt.values(code_digest=None))


def expire_exhausted(conn: Connection, table: sa.Table, max_attempts: int) -> int:
    """Make ``dead`` the messages whose lease ended on their last allowed attempt.

    Their worker died or stalled while sending, so whether the message went out is
    unknown: they count as an unknown outcome. Returns how many.
    """
    stmt = _prepared(table, "expire_exhausted", _build_expire_exhausted)
    values = {"expire_now": utcnow(), "expire_max_attempts": max_attempts}
    return int(conn.execute(stmt, values).rowcount)


def _build_expire_exhausted(table: sa.Table) -> Any:
    c = table.c
    return (
        sa.update(table)
        # The claimable statuses again, as literals: with them SQLite reads the partial
        # index; without, it scanned the whole table on every claim (sent rows included).
        .where(c.status.in_(_CLAIMABLE_LITERALS), c.status == SENDING)
        .where(
            c.due_at <= sa.bindparam("expire_now"),
            c.attempts >= sa.bindparam("expire_max_attempts"),
        )
        .values(
            status=DEAD,
            due_at=None,
            last_error=LEASE_LOST_ERROR,
            last_failure=UNKNOWN,
            failed_at=sa.bindparam("expire_now"),
            unknown_outcomes=c.unknown_outcomes + 1,
        )
    )


def extend_lease(
    conn: Connection, table: sa.Table, ids: Sequence[int], worker_id: str, lease: timedelta
) -> int:
    """Move the lease of the messages this worker still holds to ``lease`` from now."""
    c = table.c
    result = conn.execute(
        sa.update(table)
        .where(c.id.in_(list(ids)), c.claimed_by == worker_id, c.status == SENDING)
        .values(due_at=utcnow() + lease)
    )
    return int(result.rowcount)


def mark_sent(conn: Connection, table: sa.Table, ids: Sequence[int], worker_id: str) -> None:
    """Record ``ids`` as delivered, whoever holds them now.

    A worker whose lease ran out while it sent still records the delivery: the email
    went out, and leaving the row claimable would send it again.
    """
    if not ids:
        return
    stmt = _prepared(table, "mark_sent", _build_mark_sent)
    values = {"sent_ids": list(ids), "sent_at_now": utcnow(), "sent_worker": worker_id}
    conn.execute(stmt, values)


def _build_mark_sent(table: sa.Table) -> Any:
    c = table.c
    return (
        sa.update(table)
        .where(c.id.in_(sa.bindparam("sent_ids", expanding=True)), c.status != SENT)
        .values(
            status=SENT,
            sent_at=sa.bindparam("sent_at_now"),
            due_at=None,
            last_error=None,
            claimed_by=sa.bindparam("sent_worker"),
        )
    )


def mark_failed(
    conn: Connection,
    table: sa.Table,
    message_id: int,
    worker_id: str,
    *,
    error: str,
    retry_at: datetime | None,
    failure: str = TEMPORARY,
) -> None:
    """Record a failed attempt of kind ``failure`` (one of :data:`FAILURES`): due again at
    ``retry_at``, or ``dead`` when it is ``None``. Only while this worker holds the row."""
    stmt = _prepared(table, "mark_failed", _build_mark_failed)
    values = {
        "failed_id": message_id,
        "failed_worker": worker_id,
        "failed_status": PENDING if retry_at is not None else DEAD,
        "failed_retry_at": retry_at,
        "failed_error": error[:MAX_ERROR_LENGTH],
        "failed_kind": failure,
        "failed_now": utcnow(),
        "failed_unknown": 1 if failure == UNKNOWN else 0,
    }
    conn.execute(stmt, values)


def _build_mark_failed(table: sa.Table) -> Any:
    c = table.c
    return (
        sa.update(table)
        .where(
            c.id == sa.bindparam("failed_id"),
            c.claimed_by == sa.bindparam("failed_worker"),
            c.status == SENDING,
        )
        .values(
            status=sa.bindparam("failed_status"),
            due_at=sa.bindparam("failed_retry_at"),
            last_error=sa.bindparam("failed_error"),
            last_failure=sa.bindparam("failed_kind"),
            failed_at=sa.bindparam("failed_now"),
            unknown_outcomes=c.unknown_outcomes
            + sa.bindparam("failed_unknown", type_=sa.Integer()),
        )
    )


def release(conn: Connection, table: sa.Table, ids: Sequence[int], worker_id: str) -> None:
    """Make claimed, unsent messages due again at once, their claim not counted."""
    c = table.c
    conn.execute(
        sa.update(table)
        .where(c.id.in_(list(ids)), c.claimed_by == worker_id, c.status == SENDING)
        .values(status=PENDING, due_at=utcnow(), claimed_by=None, attempts=c.attempts - 1)
    )


def last_queued_at(conn: Connection, table: sa.Table, recipient: str) -> datetime | None:
    """When the newest message to ``recipient`` was queued."""
    c = table.c
    stmt = sa.select(sa.func.max(c.created_at)).where(c.recipient == recipient)
    result: datetime | None = conn.execute(stmt).scalar()
    return result


def signup_locale(conn: Connection, table: sa.Table, user_id: str) -> str | None:
    """The locale of ``user_id``'s newest sign-up email (its sign-up's or last resend's
    request), for the reminders a worker queues outside any request."""
    c = table.c
    stmt = (
        sa.select(c.locale)
        .where(c.user_id == user_id, c.purpose == Purpose.SIGNUP.value)
        .order_by(c.created_at.desc(), c.id.desc())
        .limit(1)
    )
    result: str | None = conn.execute(stmt).scalar()
    return result


def first_queued_at(
    conn: Connection, table: sa.Table, user_id: str, purpose: str
) -> datetime | None:
    """When the first ``purpose`` message of ``user_id`` was queued (for ``signup``: when
    the account signed up)."""
    c = table.c
    stmt = sa.select(sa.func.min(c.created_at)).where(c.user_id == user_id, c.purpose == purpose)
    result: datetime | None = conn.execute(stmt).scalar()
    return result


def signed_up_before(
    conn: Connection,
    table: sa.Table,
    cutoff: datetime,
    *,
    reminded_from: int | None = None,
    among: sa.Select[Any] | None = None,
) -> list[str]:
    """Users whose first sign-up email was queued before ``cutoff`` and who never asked
    for an address change (so never used a confirmed account); with ``reminded_from``,
    only those who got no reminder numbered that or higher; with ``among`` (a query of
    user ids as strings), only those it returns."""
    c = table.c
    changed = sa.select(c.user_id).where(c.purpose == Purpose.CHANGE.value)
    stmt = sa.select(c.user_id).where(c.purpose == Purpose.SIGNUP.value, c.user_id.not_in(changed))
    if reminded_from is not None:
        reminded = sa.select(c.user_id).where(
            c.purpose == Purpose.REMINDER.value, c.reminder >= reminded_from
        )
        stmt = stmt.where(c.user_id.not_in(reminded))
    if among is not None:
        stmt = stmt.where(c.user_id.in_(among))
    stmt = stmt.group_by(c.user_id).having(sa.func.min(c.created_at) < cutoff)
    return [row[0] for row in conn.execute(stmt)]


def delete_for_user(conn: Connection, table: sa.Table, user_id: str) -> None:
    """Remove every message of ``user_id`` (its account is being deleted)."""
    conn.execute(table.delete().where(table.c.user_id == user_id))


def status_counts(conn: Connection, table: sa.Table) -> dict[str, int]:
    """How many messages are in each status (every status listed, zeros included)."""
    c = table.c
    rows = conn.execute(sa.select(c.status, sa.func.count()).group_by(c.status)).all()
    counts = dict.fromkeys(STATUSES, 0)
    counts.update({status: int(n) for status, n in rows})
    return counts


def last_failure(conn: Connection, table: sa.Table) -> Any | None:
    """The most recent failed attempt of a message not delivered (yet): ``id``,
    ``recipient``, ``status``, ``last_error``, ``failed_at``; ``None`` when there is none."""
    c = table.c
    stmt = (
        sa.select(c.id, c.recipient, c.status, c.last_error, c.failed_at)
        .where(c.status != SENT, c.failed_at.is_not(None))
        .order_by(c.failed_at.desc())
        .limit(1)
    )
    return conn.execute(stmt).first()


def dead_verdict(row: Any) -> str:
    """What a dead row's history says: ``refused`` (the server said no for good),
    ``outcome unknown`` (an attempt may have delivered it) or ``undelivered``."""
    if row.last_failure == REFUSED:
        return "refused"
    if row.unknown_outcomes:
        return "outcome unknown"
    return "undelivered"


def dead_messages(conn: Connection, table: sa.Table, limit: int = 100) -> list[Any]:
    """The newest dead messages, with their last error and the kinds of failure seen."""
    c = table.c
    columns = (c.id, c.recipient, c.purpose, c.attempts, c.last_error, c.created_at)
    stmt = (
        sa.select(*columns, c.last_failure, c.unknown_outcomes)
        .where(c.status == DEAD)
        .order_by(c.id.desc())
        .limit(limit)
    )
    return list(conn.execute(stmt).all())


def requeue_dead(conn: Connection, table: sa.Table, message_id: int | None = None) -> int:
    """Make dead messages (one, or all) pending again with fresh attempts; return how many."""
    c = table.c
    stmt = sa.update(table).where(c.status == DEAD)
    if message_id is not None:
        stmt = stmt.where(c.id == message_id)
    result = conn.execute(stmt.values(status=PENDING, attempts=0, due_at=utcnow(), claimed_by=None))
    return int(result.rowcount)


# -- wake-up on PostgreSQL -------------------------------------------------------------

#: Seconds between two waits for notifications (how fast the listener sees a stop).
LISTEN_SLICE = 1.0
RECONNECT_FIRST = 0.5
RECONNECT_MAX = 10.0


class OutboxListener:
    """A daemon thread holding one connection of ``engine`` that ``LISTEN``\\ s on the
    outbox channel and calls ``wake`` for each notification (and after each reconnect,
    since a notification may have been missed meanwhile).

    :param engine: a PostgreSQL engine with the psycopg (3) driver.
    :param wake: called from the listener's thread; must be quick (set an event).
    """

    def __init__(self, engine: sa.Engine, wake: Callable[[], None]) -> None:
        self.engine = engine
        self.wake = wake
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="confirm-mail-listen", daemon=True)
        #: Set once the first ``LISTEN`` is in place (tests wait for it).
        self.listening = threading.Event()

    def start(self) -> OutboxListener:
        self._thread.start()
        return self

    def stop(self) -> None:
        """End the thread within about a second."""
        self._stop.set()

    def _run(self) -> None:
        delay = RECONNECT_FIRST
        while not self._stop.is_set():
            try:
                self._listen()
                delay = RECONNECT_FIRST
            except (sa.exc.DBAPIError, OSError) as exc:
                logger.warning(
                    "The outbox listener lost its database connection (%s); polling until "
                    "it reconnects in %.1f s",
                    type(exc).__name__,
                    delay,
                )
                self._stop.wait(delay)
                delay = min(RECONNECT_MAX, delay * 2)

    def _listen(self) -> None:
        conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            conn.exec_driver_sql(f"LISTEN {NOTIFY_CHANNEL}")
            driver = conn.connection.driver_connection
            self.listening.set()
            self.wake()
            while not self._stop.is_set():
                try:
                    for _ in driver.notifies(timeout=LISTEN_SLICE):  # type: ignore[union-attr]
                        self.wake()
                except Exception as exc:  # psycopg.Error; psycopg is an optional import
                    raise sa.exc.DBAPIError(None, None, exc) from exc
        finally:
            # A connection that listened stays out of the pool: notifications would
            # pile up on it.
            conn.invalidate()
            conn.close()


#: Seconds between two looks of an idle worker at a SQLite file's commit counter.
SQLITE_WATCH_INTERVAL = 0.05


class SQLiteWatcher:
    """Wakes an idle worker on SQLite soon after any commit to its database file.

    A daemon thread reads ``PRAGMA data_version`` on its own connection every
    :data:`SQLITE_WATCH_INTERVAL`: the number changes when another connection committed.
    A read of the file header, no write lock and no claim: 20 reads a second at about
    7 us of CPU each (``python -m benchmarks.send_paths``; an idle worker's whole CPU is
    scenario 9's figure, ``benchmarks/handoff_latency.py``), where polling with a claim
    every 50 ms would take a write lock 20 times a second. The poll
    (``CONFIRM_MAIL_POLL_INTERVAL``) stays the safety net, for retries coming due.

    :param engine: a SQLite engine on a file.
    :param wake: called from the watcher's thread; must be quick (set an event).
    """

    def __init__(self, engine: sa.Engine, wake: Callable[[], None]) -> None:
        self.engine = engine
        self.wake = wake
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="confirm-mail-watch", daemon=True)

    def start(self) -> SQLiteWatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        seen = None
        while not self._stop.wait(SQLITE_WATCH_INTERVAL):
            try:
                with self.engine.connect() as conn:
                    # The driver's own cursor: 6.5 us of CPU a read against 18 us through
                    # SQLAlchemy's exec_driver_sql (python -m benchmarks.send_paths).
                    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
                    while not self._stop.is_set():
                        version = cursor.execute("PRAGMA data_version").fetchone()
                        if seen is not None and version != seen:
                            self.wake()
                        seen = version
                        self._stop.wait(SQLITE_WATCH_INTERVAL)
            except sa.exc.DBAPIError as exc:
                logger.warning("The SQLite watcher could not read the database (%s)", exc)
                seen = None
                self._stop.wait(1.0)


def waker_for(engine: sa.Engine, wake: Callable[[], None]) -> OutboxListener | SQLiteWatcher | None:
    """What wakes an idle worker soon after a commit adds outbox rows, started: an
    :class:`OutboxListener` on PostgreSQL through psycopg 3, a :class:`SQLiteWatcher` on a
    SQLite file; else ``None`` (the loop polls)."""
    if engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg":
        return OutboxListener(engine, wake).start()
    database = engine.url.database
    if engine.dialect.name == "sqlite" and database and database != ":memory:":
        return SQLiteWatcher(engine, wake).start()
    return None
