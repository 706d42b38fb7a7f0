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
"""

from __future__ import annotations

import secrets
import weakref
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Mapped, mapped_column

TABLE_NAME = "confirm_mail_outbox"

PENDING = "pending"
SENDING = "sending"
SENT = "sent"
DEAD = "dead"
STATUSES = (PENDING, SENDING, SENT, DEAD)
CLAIMABLE = (PENDING, SENDING)
MAX_ERROR_LENGTH = 500

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
        message_id: Mapped[str] = mapped_column(sa.String(255))
        created_at: Mapped[datetime] = mapped_column(sa.DateTime(), default=utcnow)
        sent_at: Mapped[datetime | None] = mapped_column(sa.DateTime(), nullable=True)

        def __repr__(self) -> str:
            return f"<OutboxMessage {self.id} {self.purpose} {self.status}>"

    return OutboxMessage


def claim(
    conn: Connection,
    table: sa.Table,
    *,
    worker_id: str,
    limit: int,
    lease: timedelta,
    ids: Sequence[int] | None = None,
) -> list[Any]:
    """Reserve up to ``limit`` due messages (only among ``ids`` when given), oldest first.

    Each row has ``id``, ``user_id``, ``recipient``, ``purpose``, ``context``, ``attempts``
    (counting this one) and ``message_id``.
    """
    now = utcnow()
    c = table.c
    due = sa.select(c.id).where(c.status.in_(_CLAIMABLE_LITERALS), c.due_at <= now)
    if ids is not None:
        due = due.where(c.id.in_(list(ids)))
    due = due.order_by(c.due_at).limit(limit).with_for_update(skip_locked=True)
    values = {
        "status": SENDING,
        "due_at": now + lease,
        "claimed_by": worker_id,
        "attempts": c.attempts + 1,
    }
    columns = (c.id, c.user_id, c.recipient, c.purpose, c.context, c.attempts, c.message_id)
    stmt = sa.update(table).where(c.id.in_(due.scalar_subquery())).values(values)
    rows = conn.execute(stmt.returning(*columns)).all()
    return sorted(rows, key=lambda r: r.id)


def mark_sent(conn: Connection, table: sa.Table, ids: Sequence[int], worker_id: str) -> None:
    """Record ``ids`` as delivered (only those this worker still holds)."""
    if not ids:
        return
    c = table.c
    conn.execute(
        sa.update(table)
        .where(c.id.in_(list(ids)), c.claimed_by == worker_id, c.status == SENDING)
        .values(status=SENT, sent_at=utcnow(), due_at=None, last_error=None)
    )


def mark_failed(
    conn: Connection,
    table: sa.Table,
    message_id: int,
    worker_id: str,
    *,
    error: str,
    retry_at: datetime | None,
) -> None:
    """Record a failed attempt: due again at ``retry_at``, or ``dead`` when it is ``None``."""
    c = table.c
    conn.execute(
        sa.update(table)
        .where(c.id == message_id, c.claimed_by == worker_id, c.status == SENDING)
        .values(
            status=PENDING if retry_at is not None else DEAD,
            due_at=retry_at,
            last_error=error[:MAX_ERROR_LENGTH],
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


def first_queued_at(
    conn: Connection, table: sa.Table, user_id: str, purpose: str
) -> datetime | None:
    """When the first ``purpose`` message of ``user_id`` was queued (for ``signup``: when
    the account signed up)."""
    c = table.c
    stmt = sa.select(sa.func.min(c.created_at)).where(c.user_id == user_id, c.purpose == purpose)
    result: datetime | None = conn.execute(stmt).scalar()
    return result


def signed_up_before(conn: Connection, table: sa.Table, cutoff: datetime) -> list[str]:
    """Users whose first sign-up email was queued before ``cutoff`` and who never asked
    for an address change (so never used a confirmed account)."""
    c = table.c
    changed = sa.select(c.user_id).where(c.purpose == "change")
    stmt = (
        sa.select(c.user_id)
        .where(c.purpose == "signup", c.user_id.not_in(changed))
        .group_by(c.user_id)
        .having(sa.func.min(c.created_at) < cutoff)
    )
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


def dead_messages(conn: Connection, table: sa.Table, limit: int = 100) -> list[Any]:
    """The newest dead messages, with their last error."""
    c = table.c
    stmt = (
        sa.select(c.id, c.recipient, c.purpose, c.attempts, c.last_error, c.created_at)
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
