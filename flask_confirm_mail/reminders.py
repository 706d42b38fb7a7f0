"""Reminders: the sign-ups that never confirmed get ``CONFIRM_MAIL_REMINDERS`` emails."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError

from . import outbox
from .confirmation import ConfirmationFlow
from .outbox import Purpose
from .resend import begin_immediate

#: Seconds between two looks for due reminders in each worker.
SCAN_INTERVAL = 60

logger = logging.getLogger("flask_confirm_mail")


@dataclass(frozen=True)
class Reminder:
    """One reminder email queued (or, in a dry run, due) for a never-confirmed sign-up."""

    user_id: str
    email: str
    number: int  #: 1 for the first delay of ``CONFIRM_MAIL_REMINDERS``.


def queue_reminders(flow: ConfirmationFlow, *, dry_run: bool = False) -> list[Reminder]:
    """Queue the reminders due now, in one transaction; return them. Commits, or with
    ``dry_run`` rolls back and only reports.

    A never-confirmed sign-up (unconfirmed, no address change asked, address not marked
    undeliverable) gets reminder *n* once ``REMINDERS[n-1]`` has passed since it signed up:
    each number at most once per user (a unique index, so concurrent workers and reruns
    never send one twice), and only the latest one due.
    """
    delays, columns, session = flow.settings.reminders, flow.columns, flow.db.session
    now = outbox.utcnow()
    due: list[Reminder] = []
    seen: set[str] = set()
    try:
        dialect = session.connection().dialect.name
        if dialect == "sqlite":
            begin_immediate(session.connection())  # one scanner at a time
        for number in range(len(delays), 0, -1):
            ids = outbox.signed_up_before(
                session.connection(), flow.outbox_table, now - delays[number - 1],
                reminded_from=number, among=columns.waiting_ids(dialect),
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
                    or flow.blocked(address) is not None
                ):
                    continue
                if not dry_run:
                    # In the sign-up's language: the worker has no request of its own.
                    key = columns.id_of(user)
                    locale = outbox.signup_locale(session.connection(), flow.outbox_table, key)
                    context = {"reminder": number}
                    try:
                        flow.enqueue(user, Purpose.REMINDER, context, address, number, locale)
                    except IntegrityError:
                        continue  # another worker queued it first
                due.append(Reminder(user_id, address, number))
        if not dry_run:
            session.commit()
    finally:
        session.rollback()
    return due


def remind_when_due(flow: ConfirmationFlow, every: float = SCAN_INTERVAL) -> None:
    """The worker loop's hook: :func:`queue_reminders` at most once per ``every`` seconds;
    errors are logged, never raised."""
    if not flow.settings.reminders or time.monotonic() < flow._next_reminder_scan:
        return
    flow._next_reminder_scan = time.monotonic() + every
    try:
        queued = queue_reminders(flow)
    except Exception:
        logger.exception("Could not queue the reminders due; trying again later")
        return
    if queued:
        logger.info("Queued %s reminder email(s)", len(queued))
