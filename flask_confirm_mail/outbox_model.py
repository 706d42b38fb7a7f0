"""The outbox table, defined on the app's own Flask-SQLAlchemy ``db``.

A confirmation email is first a row here, written in the same transaction as the
sign-up, email change or resend that asks for it. The row holds what is needed to
write the message at send time, never a link token: the token is minted when the
message is sent, so its lifetime counts from delivery and no live token is stored.

A row is *claimable* while its status is ``pending`` or ``sending`` and ``due_at`` has
passed: a claim sets ``sending`` and moves ``due_at`` to the end of a lease, so a
message whose worker died is taken again once the lease is over. The partial index on
``due_at`` covers only claimable rows, so claiming costs the same however many
``sent`` rows the table holds.
"""

from __future__ import annotations

import weakref
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import Mapped, mapped_column

from .clock import utcnow

TABLE_NAME = "confirm_mail_outbox"

PENDING = "pending"
SENDING = "sending"
SENT = "sent"
DEAD = "dead"
STATUSES = (PENDING, SENDING, SENT, DEAD)
CLAIMABLE = (PENDING, SENDING)

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
