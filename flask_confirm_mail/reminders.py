"""Reminders: the sign-ups that never confirmed get ``CONFIRM_MAIL_REMINDERS`` emails."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError

from . import outbox
from .confirmation import ConfirmationFlow
from .errors import AddressError
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
    """Queue the reminders due now in one transaction, commit and return them; with
    ``dry_run`` roll back and only report them.

    A sign-up still unconfirmed, with no address change asked and an address not marked
    undeliverable, gets the latest reminder *n* whose delay has passed since it signed up;
    a unique index sends each number once per user, whoever runs this and how often.
    """
    delays, columns, session = flow.settings.reminders, flow.columns, flow.db.session
    now = outbox.utcnow()
    due: list[Reminder] = []
    seen: set[str] = set()
    try:
        begin_immediate(session.connection())  # one scanner at a time
        dialect = session.connection().dialect.name
        for number in range(len(delays), 0, -1):
            ids = outbox.signed_up_before(
                session.connection(), flow.outbox_table, flow.state_table, now - delays[number - 1],
                reminded_from=number, among=columns.waiting_ids(dialect),
            )  # fmt: skip
            for user_id in [i for i in ids if i not in seen]:  # each user once, at its latest
                seen.add(user_id)
                user = session.get(columns.model, columns.parse_id(user_id))
                address = None if user is None else columns.email_of(user)
                if address is None or columns.is_confirmed(user):
                    continue
                if columns.pending_of(user) is not None or flow.blocked(address) is not None:
                    continue
                if not dry_run:
                    # In the sign-up's language: the worker has no request of its own.
                    locale = outbox.signup_locale(session.connection(), flow.outbox_table, user_id)
                    try:
                        context = {"reminder": number}
                        flow.enqueue(user, Purpose.REMINDER, context, address, number, locale)
                    except IntegrityError:
                        continue  # another worker queued it first
                    except AddressError:  # stored before the extension checked addresses
                        logger.warning("User %s has an address no email can go to", user_id)
                        continue
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
        if queued := queue_reminders(flow):
            logger.info("Queued %s reminder email(s)", len(queued))
    except Exception:
        logger.exception("Could not queue the reminders due; trying again later")
