"""Queries on the outbox table: enqueue, claim, record the outcome, inspect, requeue.

Claiming is one ``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING``
statement: on PostgreSQL concurrent workers skip each other's rows; on SQLite the
statement runs under the database's single writer lock, so it is atomic too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .clock import utcnow
from .outbox_model import CLAIMABLE, DEAD, PENDING, SENDING, SENT, STATUSES

MAX_ERROR_LENGTH = 500

#: The claimable statuses written into the SQL as literals, not bound parameters: only
#: then can the database see that the claim's ``WHERE`` implies the partial index's
#: (SQLite otherwise scans the whole table, sent rows included).
_CLAIMABLE_LITERALS: sa.BindParameter[list[str]] = sa.bindparam(
    "claimable_statuses", list(CLAIMABLE), expanding=True, literal_execute=True
)


@dataclass(frozen=True)
class ClaimedMessage:
    """An outbox row reserved for one worker until its lease ends."""

    id: int
    user_id: str
    recipient: str
    purpose: str
    context: dict[str, Any]
    attempt: int
    message_id: str


def claim(
    conn: Connection,
    table: sa.Table,
    *,
    worker_id: str,
    limit: int,
    lease: timedelta,
    ids: Sequence[int] | None = None,
) -> list[ClaimedMessage]:
    """Reserve up to ``limit`` due messages (only among ``ids`` when given)."""
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
    if conn.dialect.update_returning:
        stmt = sa.update(table).where(c.id.in_(due.scalar_subquery())).values(values)
        rows = conn.execute(stmt.returning(*columns)).all()
    else:  # pragma: no cover - dialects without UPDATE ... RETURNING
        chosen = conn.execute(due).scalars().all()
        conn.execute(sa.update(table).where(c.id.in_(chosen)).values(values))
        rows = conn.execute(sa.select(*columns).where(c.id.in_(chosen))).all()
    return [
        ClaimedMessage(
            r.id, r.user_id, r.recipient, r.purpose, r.context or {}, r.attempts, r.message_id
        )
        for r in sorted(rows, key=lambda r: r.id)
    ]


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


def release(conn: Connection, table: sa.Table, ids: Sequence[int], worker_id: str) -> None:
    """Make claimed, unsent messages due again at once, their claim not counted."""
    c = table.c
    conn.execute(
        sa.update(table)
        .where(c.id.in_(list(ids)), c.claimed_by == worker_id, c.status == SENDING)
        .values(status=PENDING, due_at=utcnow(), claimed_by=None, attempts=c.attempts - 1)
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


def last_queued_at(conn: Connection, table: sa.Table, recipient: str) -> datetime | None:
    """When the newest message to ``recipient`` was queued."""
    c = table.c
    stmt = sa.select(sa.func.max(c.created_at)).where(c.recipient == recipient)
    result: datetime | None = conn.execute(stmt).scalar()
    return result


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
