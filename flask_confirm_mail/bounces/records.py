"""Bounces: addresses that cannot receive mail, known by canonical address, no longer mailed.

A *mark* is one row of ``confirm_mail_bounces``, keyed by the canonical address (so user
tables need no new column): its kind (``bounce`` or ``complaint``), a short reason, where
it came from (``smtp`` or a provider's name) and when. Marks are made from two sides:

- the SMTP transport: a permanent refusal (5xx at RCPT or DATA) of a confirmation email,
  seen on :data:`~flask_confirm_mail.signals.delivery_failed`;
- a provider's webhook (:mod:`flask_confirm_mail.bounces.webhooks`), through
  :meth:`BounceRecords.apply`.

Each event is applied once however often it arrives: ``confirm_mail_bounce_events`` keeps
one row per (Message-ID, kind) applied, and, for a while, one per single-use webhook
token spent (:meth:`BounceRecords.spend_token`). A later successful delivery to the
address (:data:`~flask_confirm_mail.signals.message_delivered`) clears a bounce mark, never
a complaint: the owner asked for no more mail, and a delivery says nothing about that.
``flask confirm-mail bounces --clear ADDRESS`` clears either. The resend route mails no
marked address. A reason is stored as one line of printable text (:func:`printable`).
"""

from __future__ import annotations

import hashlib
import logging
import re
import unicodedata
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
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
#: The ``kind`` of an events row that is a spent webhook token, not an applied event.
TOKEN_KIND = "webhook-token"
#: Characters no Message-ID holds; some databases refuse NUL in any query.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
#: Controls (C0, DEL, C1), format characters (bidi overrides, zero widths), surrogates and
#: line or paragraph separators: what can move a terminal's cursor, recolour it or hide
#: and reorder text.
_UNPRINTABLE = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})

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


def has_control_characters(value: str) -> bool:
    """Whether ``value`` holds a C0 or C1 control character (or DEL)."""
    return _CONTROL.search(value) is not None


def printable(text: str, limit: int = MAX_REASON_LENGTH) -> str:
    """``text`` as one line of at most ``limit`` printable characters: every control,
    format character or line separator becomes a blank, and runs of blanks one."""
    head = text[: limit * 4]  # bounds the work; blanks collapsed below may shorten it
    cleaned = "".join(" " if unicodedata.category(ch) in _UNPRINTABLE else ch for ch in head)
    return " ".join(cleaned.split())[:limit]


@dataclass(frozen=True)
class Applied:
    """What applying one event did (:meth:`BounceRecords.apply_in`)."""

    outcome: str
    source: str
    kind: str = ""
    reason: str = ""
    outbox_id: int | None = None
    user_id: str | None = None
    recipient: str = ""
    message_id: str = ""
    new: bool = False


class BounceRecords:
    """The marks of one app: read, made, cleared; built by ``init_app``.

    :param db: the app's :class:`~flask_sqlalchemy.SQLAlchemy`.
    :param outbox_table: the outbox table, to find a message by its Message-ID or by
        the provider's id for it.
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

    def clear(self, conn: Connection, address: str, kind: str | None = None) -> bool:
        """Forget the mark of ``address`` (only if of ``kind``, when given); whether there
        was one."""
        key = normalize_address(address)
        where = self.marks.c.address == key
        if kind is not None:
            where = sa.and_(where, self.marks.c.kind == kind)
        result = conn.execute(sa.delete(self.marks).where(where))
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
        """Mark ``address`` (or renew its mark); whether it was not marked before.

        A complaint stays a complaint: a later bounce leaves its mark as it is, so that a
        delivery, which clears only bounces, cannot clear it.
        """
        key = normalize_address(address)
        values = {
            "kind": kind,
            "reason": reason,
            "source": source,
            "message_id": message_id,
            "marked_at": outbox.utcnow(),
        }
        c = self.marks.c
        old = conn.execute(sa.select(c.kind).where(c.address == key)).first()
        if old is None:
            conn.execute(sa.insert(self.marks).values(address=key, **values))
            return True
        if not (old.kind == COMPLAINT and kind != COMPLAINT):
            conn.execute(sa.update(self.marks).where(c.address == key).values(values))
        return False

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

    # --- single-use webhook tokens ---------------------------------------------------------

    def spend_token(self, conn: Connection, token: str, source: str) -> bool:
        """Record ``source``'s signed ``token`` as used; ``False`` when it was already.

        Kept in the database, so that every process of the app refuses a reuse.
        """
        digest = hashlib.sha256(f"{source}\n{token}".encode()).hexdigest()
        return self._first_application(conn, digest, TOKEN_KIND)

    def forget_tokens(self, conn: Connection, older_than: timedelta) -> None:
        """Delete the spent tokens recorded more than ``older_than`` ago."""
        e = self.events.c
        cutoff = outbox.utcnow() - older_than
        conn.execute(sa.delete(self.events).where(e.kind == TOKEN_KIND, e.applied_at < cutoff))

    # --- applying events -------------------------------------------------------------------

    def _find(self, conn: Connection, message_id: str, provider_id: str) -> Any | None:
        """The outbox row whose Message-ID is ``message_id``, else the one the provider
        named ``provider_id`` (its reply to the message); ``None`` when neither matches.
        An id holding a control character matches nothing: no id of the outbox holds one,
        and some databases refuse NUL in any query."""
        c = self.outbox_table.c
        wanted, theirs = bare_message_id(message_id), bare_message_id(provider_id)
        checks: list[sa.ColumnElement[bool]] = []
        if wanted and not has_control_characters(wanted):
            checks.append(c.message_id.in_([f"<{wanted}>", wanted]))
        if theirs and not has_control_characters(theirs):
            checks.append(c.provider_message_id == theirs)
        for where in checks:
            stmt = sa.select(c.id, c.user_id, c.recipient, c.message_id).where(where)
            row = conn.execute(stmt.limit(1)).first()
            if row is not None:
                return row
        return None

    def apply_in(
        self,
        conn: Connection,
        *,
        message_id: str,
        kind: str,
        reason: str,
        source: str,
        provider_id: str = "",
    ) -> Applied:
        """Apply one bounce or complaint of the outbox message ``message_id`` (or, when
        no message has that Message-ID, of the one the provider knows as ``provider_id``)
        in the caller's transaction; :meth:`announce` the result once it is committed."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}")
        row = self._find(conn, message_id, provider_id)
        if row is None:
            return Applied("unknown", source)
        if not self._first_application(conn, row.message_id, kind):
            return Applied("duplicate", source)
        reason = printable(reason)
        new = self._mark(
            conn, row.recipient, kind=kind, reason=reason, source=source,
            message_id=row.message_id,
        )  # fmt: skip
        return Applied(
            "applied", source, kind=kind, reason=reason, outbox_id=row.id,
            user_id=row.user_id, recipient=row.recipient, message_id=row.message_id, new=new,
        )  # fmt: skip

    def announce(self, app: Flask, results: Iterable[Applied]) -> None:
        """Log each applied event and send ``confirmation_bounced`` for each new mark."""
        for done in results:
            if done.outcome != "applied":
                continue
            logger.warning(
                "Mail to outbox message %s's address %s: %s from %s",
                done.outbox_id,
                "bounced" if done.kind == BOUNCE else "drew a complaint",
                "marked undeliverable" if done.new else "mark renewed",
                done.source,
            )
            if done.new:
                signals.confirmation_bounced.send(
                    app,
                    user_id=done.user_id,
                    email=normalize_address(done.recipient),
                    kind=done.kind,
                    reason=done.reason,
                    source=done.source,
                    message_id=done.message_id,
                )

    def apply(
        self,
        app: Flask,
        *,
        message_id: str,
        kind: str,
        reason: str,
        source: str,
        provider_id: str = "",
    ) -> str:
        """Apply one bounce or complaint of the outbox message ``message_id``.

        ``provider_id`` is the provider's own id for the message, the one its SMTP server
        gave in its reply (kept on the outbox row): it finds the message when no message
        has the Message-ID ``message_id`` (which may then be ""). The address marked is
        the message's recipient, whatever address the event names, so an event can only
        mark an address this app mailed. Returns ``applied``, ``duplicate`` (applied
        before) or ``unknown`` (no such message). Sends
        :data:`~flask_confirm_mail.signals.confirmation_bounced` when the address was not
        marked before.
        """
        with self.db.engine.begin() as conn:
            done = self.apply_in(
                conn, message_id=message_id, kind=kind, reason=reason, source=source,
                provider_id=provider_id,
            )  # fmt: skip
        self.announce(app, [done])
        return done.outcome


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
            if records.clear(conn, recipient, kind=BOUNCE):
                logger.info("A delivery succeeded to a bounced address; its mark is cleared")


def install_bounces(app: Flask, db: SQLAlchemy, outbox_table: sa.Table) -> BounceRecords:
    """Keep ``app``'s marks (``app.extensions["confirm_mail_bounces"]``) from its deliveries:
    a refusal marks (``delivery_failed``), a delivery clears a bounce (``message_delivered``)."""
    records = app.extensions[EXTENSION_KEY] = BounceRecords(db, outbox_table)
    signals.delivery_failed.connect(_on_delivery_failed, sender=app)
    signals.message_delivered.connect(_on_message_delivered, sender=app)
    return records
