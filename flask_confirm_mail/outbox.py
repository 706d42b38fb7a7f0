"""The package's tables and every query on them. The outbox holds the confirmation emails; a row,
written in the transaction that asks for it, holds no link token (minted at send time) and is
*claimable* while ``pending`` or ``sending`` with ``due_at`` passed. A claim (``UPDATE ... WHERE
id IN (SELECT ... FOR UPDATE SKIP LOCKED)``: workers skip each other's rows) sets ``sending`` and
moves ``due_at`` to the lease's end, so a dead worker's rows come due. The state table holds what
requests, retries and the outbox's retention must not reset: sign-up times and code tries."""

from __future__ import annotations

import secrets
import weakref
from collections.abc import Collection, Mapping, Sequence
from contextlib import suppress
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import Any, cast

import sqlalchemy as sa
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import Table
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

TABLE_NAME, STATE_TABLE_NAME = "confirm_mail_outbox", "confirm_mail_state"
_models: weakref.WeakKeyDictionary[SQLAlchemy, type[Any]] = weakref.WeakKeyDictionary()


class Purpose(str, Enum):
    """Why an outbox message is sent: the one place the purposes are named."""

    SIGNUP = "signup"
    CHANGE = "change"
    #: Tells the old address of an email change; the one purpose without a link.
    CHANGE_NOTICE = "change_notice"
    REMINDER = "reminder"


PENDING, SENDING, SENT, DEAD = "pending", "sending", "sent", "dead"
CLAIMABLE = (PENDING, SENDING)

#: Kinds of failed attempt: refused (5xx), temporary (4xx, no connection), unknown (maybe sent).
REFUSED, TEMPORARY, UNKNOWN = "refused", "temporary", "unknown"
#: Retries after an attempt whose outcome is unknown (a lost reply to DATA's final ".").
UNKNOWN_RETRIES = 1

#: As SQL literals, not bound parameters, so the database sees a WHERE implies the partial index.
_CLAIMABLE_LITERALS: sa.BindParameter[list[str]] = sa.bindparam(
    "claimable_statuses", list(CLAIMABLE), expanding=True, literal_execute=True
)


def utcnow() -> datetime:
    """Now in UTC, as a naive datetime: what every column of this package stores."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def new_message_id(domain: str) -> str:
    """A Message-ID for one outbox message, kept across its retries."""
    return f"<{secrets.token_hex(16)}@{domain}>"


def outbox_model_for(db: SQLAlchemy) -> type[Any]:
    """The outbox model of ``db``, defined with the state model on first use (one per ``db``)."""
    if db in _models:
        return _models[db]
    claimable = sa.column("status").in_(CLAIMABLE)
    partial: dict[str, Any] = {"postgresql_where": claimable, "sqlite_where": claimable}

    class OutboxMessage(db.Model):  # type: ignore[name-defined,misc]
        """One confirmation email waiting for, or done with, delivery."""

        __tablename__ = TABLE_NAME
        __table_args__ = (
            # Partial: only claimable rows, so claims do not slow down as sent rows pile up.
            sa.Index("ix_confirm_mail_outbox_due", "due_at", **partial),
            sa.Index("ix_confirm_mail_outbox_recipient", "recipient", "created_at"),
            sa.Index("ix_confirm_mail_outbox_user", "user_id", "created_at"),
            sa.Index("ix_confirm_mail_outbox_provider_id", "provider_message_id"),
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
        last_failure: Mapped[str | None] = mapped_column(sa.String(16), nullable=True)
        failed_at: Mapped[datetime | None] = mapped_column(sa.DateTime(), nullable=True)
        #: Attempts that may have delivered the message (outcome unknown).
        unknown_outcomes: Mapped[int] = mapped_column(sa.Integer(), default=0)
        message_id: Mapped[str] = mapped_column(sa.String(255))
        #: When the code of this row's email stops working; ``None`` for an email with none.
        code_expires_at: Mapped[datetime | None] = mapped_column(sa.DateTime(), nullable=True)
        created_at: Mapped[datetime] = mapped_column(sa.DateTime(), default=utcnow)
        sent_at: Mapped[datetime | None] = mapped_column(sa.DateTime(), nullable=True)
        #: Which reminder (1 for the first) a ``reminder`` message is; ``None`` otherwise.
        reminder: Mapped[int | None] = mapped_column(sa.Integer(), nullable=True)
        #: The locale of the request that queued it, for the email's words.
        locale: Mapped[str | None] = mapped_column(sa.String(35), nullable=True)
        #: The provider's id for the sent message (from its reply), for bounce webhooks.
        provider_message_id: Mapped[str | None] = mapped_column(sa.String(255), nullable=True)

    class ConfirmationState(db.Model):  # type: ignore[name-defined,misc]
        """An (account, address) asked to be confirmed; ``user_id`` "" counts for the address."""

        __tablename__ = STATE_TABLE_NAME
        user_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
        address: Mapped[str] = mapped_column(sa.String(254), primary_key=True)
        #: Set by a sign-up only: a resend or an email change is no sign-up.
        signed_up_at: Mapped[datetime | None] = mapped_column(sa.DateTime(), nullable=True)
        tries: Mapped[int] = mapped_column(sa.Integer(), default=0)
        tries_since: Mapped[datetime | None] = mapped_column(sa.DateTime(), nullable=True)

    _models[db] = OutboxMessage
    return OutboxMessage


def claim(
    conn: Connection, table: Table, *, worker_id: str, limit: int, lease: timedelta,
    ids: Sequence[int] | None = None, max_attempts: int | None = None,
) -> list[Any]:  # fmt: skip
    """Reserve up to ``limit`` due rows, oldest first; ``ids`` and ``max_attempts`` narrow it."""
    c, now = table.c, utcnow()
    due = sa.select(c.id).where(c.status.in_(_CLAIMABLE_LITERALS), c.due_at <= now)
    if max_attempts is not None:
        due = due.where(c.attempts < max_attempts)
    if ids is not None:
        due = due.where(c.id.in_(list(ids)))
    due = due.order_by(c.due_at).limit(limit).with_for_update(skip_locked=True)
    stmt = sa.update(table).where(c.id.in_(due.scalar_subquery())).values(
        status=SENDING, due_at=now + lease, claimed_by=worker_id, attempts=c.attempts + 1
    )  # fmt: skip
    out = (c.id, c.user_id, c.recipient, c.purpose, c.context, c.attempts, c.message_id, c.locale)
    return sorted(conn.execute(stmt.returning(*out)).all(), key=lambda r: r.id)


def start_links(
    conn: Connection, table: Table, ids: Sequence[int], lifetime: timedelta
) -> dict[int, datetime]:
    """When the link and code of each row ``ids`` end: ``lifetime`` after its first claim."""
    c, end = table.c, utcnow() + lifetime
    stmt = sa.update(table).where(c.id.in_(ids))
    stmt = stmt.values(code_expires_at=sa.func.coalesce(c.code_expires_at, end))
    return {
        row.id: row.code_expires_at for row in conn.execute(stmt.returning(c.id, c.code_expires_at))
    }


def newest_code(conn: Connection, table: Table, recipient: str) -> Any | None:
    """The newest row mailed to ``recipient`` with a code, or ``None``."""
    c = table.c
    stmt = sa.select(table).where(c.recipient == recipient, c.code_expires_at.is_not(None))
    stmt = stmt.where(c.purpose != Purpose.CHANGE_NOTICE.value)  # its link cancels; no code
    return conn.execute(stmt.order_by(c.id.desc()).limit(1)).first()


def _insert_missing(conn: Connection, table: Table, **values: Any) -> None:
    """INSERT ``values`` unless a row with their key exists (concurrent callers included)."""
    with suppress(IntegrityError), conn.begin_nested():
        conn.execute(sa.insert(table).values(**values))


def note_signup(conn: Connection, state: Table, user_id: str, address: str) -> None:
    """Record that ``user_id`` signed up with ``address`` now, unless it did before."""
    _insert_missing(conn, state, user_id=user_id, address=address, signed_up_at=utcnow(), tries=0)


def signed_up_at(conn: Connection, state: Table, user_id: str) -> datetime | None:
    """When ``user_id`` signed up through a sign-up view; ``None`` for an account that did not."""
    stmt = sa.select(sa.func.min(state.c.signed_up_at)).where(state.c.user_id == user_id)
    return cast("datetime | None", conn.execute(stmt).scalar())


def take_try(
    conn: Connection, state: Table, user_id: str, address: str, limits: tuple[int, int],
    window: timedelta,
) -> bool:  # fmt: skip
    """Count one code try against ``user_id`` with ``address`` and against ``address`` across
    accounts; whether both budgets (``limits``) had one left. A budget is per ``window``, from
    its first try: new emails, resends and retries do not reset it."""
    c, now, left = state.c, utcnow(), True
    for key, limit in zip((user_id, ""), limits, strict=True):
        _insert_missing(conn, state, user_id=key, address=address, tries=0)
        fresh = sa.or_(c.tries_since.is_(None), c.tries_since <= now - window)
        stmt = sa.update(state).where(c.user_id == key, c.address == address)
        stmt = stmt.where(sa.or_(fresh, c.tries < limit)).values(
            tries=sa.case((fresh, 1), else_=c.tries + 1),
            tries_since=sa.case((fresh, now), else_=c.tries_since),
        )
        left = conn.execute(stmt).rowcount == 1 and left
    return left


def expire_exhausted(conn: Connection, table: Table, max_attempts: int) -> int:
    """Make dead the rows whose lease ended on their last attempt (outcome unknown); the count."""
    c, now = table.c, utcnow()
    # The literals again, so that SQLite reads the partial index.
    stmt = sa.update(table).where(c.status.in_(_CLAIMABLE_LITERALS), c.status == SENDING)
    stmt = stmt.where(c.due_at <= now, c.attempts >= max_attempts).values(
        status=DEAD, due_at=None, last_failure=UNKNOWN, failed_at=now,
        last_error="The worker's lease ended during the last attempt: outcome unknown",
        unknown_outcomes=c.unknown_outcomes + 1,
    )  # fmt: skip
    return int(conn.execute(stmt).rowcount)


def _held(table: Table, ids: Sequence[int], worker_id: str) -> sa.Update:
    """An ``UPDATE`` of the rows among ``ids`` that ``worker_id`` still holds."""
    c = table.c
    return sa.update(table).where(c.id.in_(ids), c.claimed_by == worker_id, c.status == SENDING)


def extend_lease(
    conn: Connection, table: Table, ids: Sequence[int], worker_id: str, lease: timedelta
) -> None:
    """Move the lease of the messages this worker still holds to ``lease`` from now."""
    conn.execute(_held(table, ids, worker_id).values(due_at=utcnow() + lease))


def mark_sent(
    conn: Connection, table: Table, ids: Sequence[int], worker_id: str,
    provider_ids: Mapping[int, str | None] | None = None,
) -> None:  # fmt: skip
    """Record ``ids`` as delivered, whoever holds them now (a lost lease must not resend
    them), each with its provider id from ``provider_ids``."""
    if not ids:
        return
    c, known = table.c, {key: value for key, value in (provider_ids or {}).items() if value}
    conn.execute(sa.update(table).where(c.id.in_(list(ids)), c.status != SENT).values(
        status=SENT, sent_at=utcnow(), due_at=None, last_error=None, claimed_by=worker_id,
        provider_message_id=sa.case(known, value=c.id) if known else None,
    ))  # fmt: skip


def mark_failed(
    conn: Connection, table: Table, message_id: int, worker_id: str, *, error: str,
    retry_at: datetime | None, failure: str = TEMPORARY,
) -> bool:  # fmt: skip
    """Record a failed attempt while this worker holds the row: due at ``retry_at``, else dead;
    whether it is dead. An unknown outcome (the server may hold the message) is retried
    ``UNKNOWN_RETRIES`` times at most: each retry may deliver a copy."""
    c, unknown = table.c, failure == UNKNOWN
    dead: sa.ColumnElement[bool] = sa.true() if retry_at is None else sa.false()
    if unknown:
        dead = sa.or_(dead, c.unknown_outcomes >= UNKNOWN_RETRIES)
    status = conn.execute(_held(table, [message_id], worker_id).values(
        status=sa.case((dead, DEAD), else_=PENDING),
        due_at=None if retry_at is None else sa.case((dead, sa.null()), else_=retry_at),
        last_error=error[:500], last_failure=failure, failed_at=utcnow(),
        unknown_outcomes=c.unknown_outcomes + int(unknown),
    ).returning(c.status)).scalar()  # fmt: skip
    return status == DEAD


def release(conn: Connection, table: Table, ids: Sequence[int], worker_id: str) -> None:
    """Make claimed, unsent messages due again at once, their claim not counted."""
    conn.execute(_held(table, ids, worker_id).values(
        status=PENDING, due_at=utcnow(), claimed_by=None, attempts=table.c.attempts - 1
    ))  # fmt: skip


def last_queued_at(
    conn: Connection, table: Table, recipient: str, purpose: Purpose | None = None
) -> datetime | None:
    """When the newest message to ``recipient`` (of ``purpose``, when given) was queued."""
    stmt = sa.select(sa.func.max(table.c.created_at)).where(table.c.recipient == recipient)
    if purpose is not None:
        stmt = stmt.where(table.c.purpose == purpose.value)
    return cast("datetime | None", conn.execute(stmt).scalar())


def signup_locale(conn: Connection, table: Table, user_id: str) -> str | None:
    """The locale of ``user_id``'s newest sign-up email, for reminders queued outside requests."""
    c = table.c
    stmt = sa.select(c.locale).where(c.user_id == user_id, c.purpose == Purpose.SIGNUP.value)
    stmt = stmt.order_by(c.created_at.desc(), c.id.desc()).limit(1)
    return cast("str | None", conn.execute(stmt).scalar())


def signed_up_before(
    conn: Connection, table: Table, state: Table, cutoff: datetime, *,
    reminded_from: int | None = None, among: sa.Select[Any] | None = None,
) -> list[str]:  # fmt: skip
    """Users who signed up before ``cutoff`` and asked for no address change; when given, only
    those with no reminder numbered ``reminded_from`` or more, and those ``among`` returns."""
    c, s = table.c, state.c
    changed = sa.select(c.user_id).where(c.purpose == Purpose.CHANGE.value)
    stmt = sa.select(s.user_id).where(s.signed_up_at < cutoff, s.user_id.not_in(changed))
    if reminded_from is not None:
        reminded = sa.select(c.user_id).where(c.purpose == Purpose.REMINDER.value)
        stmt = stmt.where(s.user_id.not_in(reminded.where(c.reminder >= reminded_from)))
    if among is not None:
        stmt = stmt.where(s.user_id.in_(among))
    return [row[0] for row in conn.execute(stmt.distinct())]


def signups_since(conn: Connection, table: Table, state: Table, since: datetime) -> list[Any]:
    """The accounts that signed up at or after ``since``: ``user_id``, ``signed_up_at`` (the
    first), and whether a sign-up email to it was ``delivered`` and whether one was ``refused``
    (dead after a refusal)."""
    c, s = table.c, state.c
    mail = sa.select(c.id).where(c.user_id == s.user_id, c.purpose == Purpose.SIGNUP.value)
    delivered = sa.exists(mail.where(c.status == SENT).correlate(state)).label("delivered")
    refused = sa.exists(mail.where(c.status == DEAD, c.last_failure == REFUSED).correlate(state))
    first = sa.func.min(s.signed_up_at).label("signed_up_at")
    stmt = sa.select(s.user_id, first, delivered, refused.label("refused"))
    return list(conn.execute(stmt.where(s.signed_up_at >= since).group_by(s.user_id)))


def delete_for_user(conn: Connection, table: Table, state: Table, user_id: str) -> None:
    """Remove every message and state row of ``user_id`` (its account is being deleted)."""
    conn.execute(table.delete().where(table.c.user_id == user_id))
    conn.execute(state.delete().where(state.c.user_id == user_id))


def waiting_unclaimed(conn: Connection, table: Table, longer_than: timedelta) -> int:
    """How many messages were queued over ``longer_than`` ago and never claimed."""
    c, cutoff = table.c, utcnow() - longer_than
    stmt = sa.select(sa.func.count()).where(c.status == PENDING, c.attempts == 0)
    return int(conn.execute(stmt.where(c.created_at < cutoff)).scalar() or 0)


def status_counts(conn: Connection, table: Table) -> dict[str, int]:
    """How many messages are in each status, zeros included."""
    c = table.c
    rows = conn.execute(sa.select(c.status, sa.func.count()).group_by(c.status)).all()
    return {**dict.fromkeys((PENDING, SENDING, SENT, DEAD), 0), **{s: int(n) for s, n in rows}}


def last_failure(conn: Connection, table: Table) -> Any | None:
    """The newest failed attempt of a message not (yet) delivered, or ``None``."""
    c = table.c
    stmt = sa.select(table).where(c.status != SENT, c.failed_at.is_not(None))
    return conn.execute(stmt.order_by(c.failed_at.desc()).limit(1)).first()


def dead_verdict(row: Any) -> str:
    """What a dead row's history says: ``refused``, ``outcome unknown`` or ``undelivered``."""
    if row.last_failure == REFUSED:
        return "refused"
    return "outcome unknown" if row.unknown_outcomes else "undelivered"


def dead_messages(conn: Connection, table: Table, limit: int = 100) -> list[Any]:
    """The newest dead messages, with their last error and the kinds of failure seen."""
    stmt = sa.select(table).where(table.c.status == DEAD).order_by(table.c.id.desc()).limit(limit)
    return list(conn.execute(stmt).all())


def dead_recipients(conn: Connection, table: Table) -> set[str]:
    """Every address a dead message was for."""
    stmt = sa.select(table.c.recipient).where(table.c.status == DEAD).distinct()
    return set(conn.execute(stmt).scalars())


def requeue_dead(
    conn: Connection, table: Table, message_id: int | None = None, skip: Collection[str] = ()
) -> int:
    """Make dead messages (one, or all) pending again with fresh attempts, except those to
    the addresses ``skip``; return how many."""
    c = table.c
    stmt = sa.update(table).where(c.status == DEAD, c.recipient.not_in(list(skip)))
    if message_id is not None:
        stmt = stmt.where(c.id == message_id)
    result = conn.execute(stmt.values(status=PENDING, attempts=0, due_at=utcnow(), claimed_by=None))
    return int(result.rowcount)
