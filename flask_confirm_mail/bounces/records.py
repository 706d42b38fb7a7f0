"""Bounces: addresses that cannot receive mail, known by canonical address, no longer mailed.

A *mark* is one row of ``confirm_mail_bounces``, keyed by the canonical address (so user
tables need no new column): its kind (``bounce`` or ``complaint``), a short reason, where
it came from (``smtp`` or a provider's name) and when. Marks are made from two sides:

- the SMTP transport: a permanent refusal (5xx at RCPT or DATA) of a confirmation email,
  seen on :data:`~flask_confirm_mail.signals.delivery_failed`;
- a provider's webhook (:mod:`flask_confirm_mail.bounces.webhooks`), through
  :meth:`BounceRecords.apply`.

Each event is applied once however often it arrives: ``confirm_mail_bounce_events`` keeps
one row per (Message-ID, kind) applied. A later successful delivery to the address
(:data:`~flask_confirm_mail.signals.message_delivered`) clears its mark, and so does
``flask confirm-mail bounces --clear ADDRESS``. The resend route mails no marked address.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from .. import outbox, signals
from ..addresses import normalize_address
from ..errors import AddressError

MARKS_TABLE = "confirm_mail_bounces"
EVENTS_TABLE = "confirm_mail_bounce_events"
EXTENSION_KEY = "confirm_mail_bounces"
BOUNCE = "bounce"
COMPLAINT = "complaint"
KINDS = (BOUNCE, COMPLAINT)
SMTP_SOURCE = "smtp"
MAX_REASON_LENGTH = 300

logger = logging.getLogger("flask_confirm_mail")


@dataclass(frozen=True)
class BounceMark:
    """One address known to be undeliverable."""

    address: str
    kind: str
    reason: str
    source: str
    message_id: str | None
    marked_at: datetime


_models: weakref.WeakKeyDictionary[SQLAlchemy, tuple[type[Any], type[Any]]] = (
    weakref.WeakKeyDictionary()
)


def bounce_models_for(db: SQLAlchemy) -> tuple[type[Any], type[Any]]:
    """The marks and applied-events models of ``db``, defined on first use (one per ``db``)."""
    models = _models.get(db)
    if models is None:
        models = _models[db] = _define(db)
    return models


def _define(db: SQLAlchemy) -> tuple[type[Any], type[Any]]:
    class BouncedAddress(db.Model):  # type: ignore[name-defined,misc]
        """An address mail could not reach (or whose owner complained)."""

        __tablename__ = MARKS_TABLE

        address: Mapped[str] = mapped_column(sa.String(254), primary_key=True)
        kind: Mapped[str] = mapped_column(sa.String(16))
        reason: Mapped[str] = mapped_column(sa.String(MAX_REASON_LENGTH))
        source: Mapped[str] = mapped_column(sa.String(32))
        message_id: Mapped[str | None] = mapped_column(sa.String(255), nullable=True)
        marked_at: Mapped[datetime] = mapped_column(sa.DateTime(), default=outbox.utcnow)

    class AppliedBounceEvent(db.Model):  # type: ignore[name-defined,misc]
        """A bounce or complaint already applied: its Message-ID and kind."""

        __tablename__ = EVENTS_TABLE

        message_id: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
        kind: Mapped[str] = mapped_column(sa.String(16), primary_key=True)
        applied_at: Mapped[datetime] = mapped_column(sa.DateTime(), default=outbox.utcnow)

    return BouncedAddress, AppliedBounceEvent


def _mark_of(row: Any) -> BounceMark:
    return BounceMark(
        address=row.address,
        kind=row.kind,
        reason=row.reason,
        source=row.source,
        message_id=row.message_id,
        marked_at=row.marked_at,
    )


def bare_message_id(value: str) -> str:
    """A Message-ID without its angle brackets or blanks (providers write both forms)."""
    return value.strip().strip("<>").strip()


class BounceRecords:
    """The marks of one app: read, made, cleared; built by ``init_app``.

    :param db: the app's :class:`~flask_sqlalchemy.SQLAlchemy`.
    :param outbox_table: the outbox table, to find a message by its Message-ID.
    """

    def __init__(self, db: SQLAlchemy, outbox_table: sa.Table) -> None:
        self.db = db
        self.outbox_table = outbox_table
        marks, events = bounce_models_for(db)
        self.marks: sa.Table = marks.__table__
        self.events: sa.Table = events.__table__

    # --- reading ---------------------------------------------------------------------------

    def find(self, conn: Connection, address: str) -> BounceMark | None:
        """The mark of ``address``, or ``None`` (also for anything not an address)."""
        try:
            key = normalize_address(address)
        except AddressError:
            return None
        row = conn.execute(sa.select(self.marks).where(self.marks.c.address == key)).first()
        return None if row is None else _mark_of(row)

    def all(self, conn: Connection, limit: int = 500) -> list[BounceMark]:
        """The newest marks first."""
        stmt = sa.select(self.marks).order_by(self.marks.c.marked_at.desc()).limit(limit)
        return [_mark_of(row) for row in conn.execute(stmt)]

    # --- writing ---------------------------------------------------------------------------

    def clear(self, conn: Connection, address: str) -> bool:
        """Forget the mark of ``address``; whether there was one."""
        key = normalize_address(address)
        result = conn.execute(sa.delete(self.marks).where(self.marks.c.address == key))
        return bool(result.rowcount)

    def _mark(
        self,
        conn: Connection,
        address: str,
        *,
        kind: str,
        reason: str,
        source: str,
        message_id: str | None,
    ) -> bool:
        """Mark ``address`` (or renew its mark); whether it was not marked before."""
        key = normalize_address(address)
        values = {
            "kind": kind,
            "reason": reason[:MAX_REASON_LENGTH],
            "source": source,
            "message_id": message_id,
            "marked_at": outbox.utcnow(),
        }
        c = self.marks.c
        renewed = conn.execute(sa.update(self.marks).where(c.address == key).values(values))
        if renewed.rowcount:
            return False
        conn.execute(sa.insert(self.marks).values(address=key, **values))
        return True

    def _first_application(self, conn: Connection, message_id: str, kind: str) -> bool:
        """Record that this event is applied; ``False`` when it was already."""
        try:
            with conn.begin_nested():
                conn.execute(
                    sa.insert(self.events).values(
                        message_id=message_id, kind=kind, applied_at=outbox.utcnow()
                    )
                )
        except IntegrityError:
            return False
        return True

    def apply(self, app: Flask, *, message_id: str, kind: str, reason: str, source: str) -> str:
        """Apply one bounce or complaint of the outbox message ``message_id``.

        The address marked is the message's recipient, whatever address the event
        names, so an event can only mark an address this app mailed. Returns
        ``applied``, ``duplicate`` (applied before) or ``unknown`` (no such message).
        Sends :data:`~flask_confirm_mail.signals.confirmation_bounced` when the address
        was not marked before.
        """
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}")
        wanted = bare_message_id(message_id)
        c = self.outbox_table.c
        with self.db.engine.begin() as conn:
            row = conn.execute(
                sa.select(c.id, c.user_id, c.recipient, c.message_id).where(
                    c.message_id.in_([f"<{wanted}>", wanted])
                )
            ).first()
            if row is None:
                return "unknown"
            if not self._first_application(conn, row.message_id, kind):
                return "duplicate"
            new = self._mark(
                conn, row.recipient, kind=kind, reason=reason, source=source,
                message_id=row.message_id,
            )  # fmt: skip
        logger.warning(
            "Mail to outbox message %s's address %s: %s from %s",
            row.id,
            "bounced" if kind == BOUNCE else "drew a complaint",
            "marked undeliverable" if new else "mark renewed",
            source,
        )
        if new:
            signals.confirmation_bounced.send(
                app,
                user_id=row.user_id,
                email=normalize_address(row.recipient),
                kind=kind,
                reason=reason[:MAX_REASON_LENGTH],
                source=source,
                message_id=row.message_id,
            )
        return "applied"


def records_of(app: Flask) -> BounceRecords | None:
    """The :class:`BounceRecords` of ``app``, or ``None`` before ``init_app``."""
    records: BounceRecords | None = app.extensions.get(EXTENSION_KEY)
    return records


# --- the SMTP side: the delivery signals -------------------------------------------------------


def _on_delivery_failed(
    app: Flask,
    *,
    bounced: bool = False,
    message_id: str | None = None,
    error: str = "",
    **_: Any,
) -> None:
    records = records_of(app)
    if records is not None and bounced and message_id is not None:
        records.apply(app, message_id=message_id, kind=BOUNCE, reason=error, source=SMTP_SOURCE)


def _on_message_delivered(app: Flask, *, recipient: str, **_: Any) -> None:
    records = records_of(app)
    if records is not None:
        with records.db.engine.begin() as conn:
            if records.clear(conn, recipient):
                logger.info("A delivery succeeded to a marked address; its mark is cleared")


def install_bounces(app: Flask, db: SQLAlchemy, outbox_table: sa.Table) -> BounceRecords:
    """Keep ``app``'s marks (``app.extensions["confirm_mail_bounces"]``) from its deliveries:
    a refusal marks (``delivery_failed``), a delivery clears (``message_delivered``)."""
    records = app.extensions[EXTENSION_KEY] = BounceRecords(db, outbox_table)
    signals.delivery_failed.connect(_on_delivery_failed, sender=app)
    signals.message_delivered.connect(_on_message_delivered, sender=app)
    return records
