"""Delivering one batch from the outbox: claim, mint the links, send, record.

The link token is minted here, at send time, so a link's lifetime counts from the
moment its email leaves. Failed attempts are retried with exponential backoff and
jitter; after ``CONFIRM_MAIL_MAX_ATTEMPTS`` (or a permanent refusal) a message is
``dead`` until ``flask confirm-mail retry`` requeues it.
"""

from __future__ import annotations

import logging
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from flask import current_app
from sqlalchemy.engine import Connection

from . import outbox, signals
from .clock import utcnow
from .errors import DeliveryError
from .outbox import ClaimedMessage
from .transport import ConfirmationEmail

if TYPE_CHECKING:
    from .state import ConfirmMailState

logger = logging.getLogger("flask_confirm_mail.delivery")


@dataclass
class BatchReport:
    """What one call of :func:`deliver_batch` did."""

    claimed: int = 0
    sent: int = 0
    retried: int = 0
    dead: int = 0
    #: With ``claim_next``: the next batch, claimed in the same transaction as this one's
    #: results (one commit per batch instead of two).
    next_claimed: list[ClaimedMessage] = field(default_factory=list)


def retry_delay(attempt: int, base: float, cap: float) -> timedelta:
    """Exponential backoff with jitter: ``base * 2**(attempt-1)``, capped, times 0.5 to 1."""
    delay = min(cap, base * 2 ** min(attempt - 1, 32))
    return timedelta(seconds=delay * random.uniform(0.5, 1.0))


def compose(state: ConfirmMailState, message: ClaimedMessage) -> ConfirmationEmail:
    """Mint the link token for ``message`` and gather what its email needs."""
    token, expires_at = state.signer.issue(message.user_id, message.recipient)
    return ConfirmationEmail(
        outbox_id=message.id,
        user_id=message.user_id,
        recipient=message.recipient,
        purpose=message.purpose,
        link_prefix=state.settings.link_prefix,
        link_token=token,
        expires_at=expires_at,
        lifetime=state.settings.lifetime,
        message_id=message.message_id,
        context=message.context,
    )


def _claim(
    state: ConfirmMailState, conn: Connection, worker_id: str, ids: list[int] | None
) -> list[ClaimedMessage]:
    settings = state.settings
    return outbox.claim(
        conn,
        state.outbox_table,
        worker_id=worker_id,
        limit=settings.batch_size,
        lease=settings.lease,
        ids=ids,
    )


def deliver_batch(
    state: ConfirmMailState,
    *,
    worker_id: str,
    ids: list[int] | None = None,
    claimed: list[ClaimedMessage] | None = None,
    claim_next: bool = False,
) -> BatchReport:
    """Claim up to one batch of due messages (only among ``ids`` when given) and send them.

    :param claimed: a batch this worker already holds (a previous report's
        ``next_claimed``); nothing is claimed first then.
    :param claim_next: claim the next batch in the transaction that records this one's
        results, and return it as ``next_claimed``.

    Runs in an application context; uses its own connections, never the request's session.
    """
    settings = state.settings
    engine = state.engine()
    if claimed is None:
        with engine.begin() as conn:
            claimed = _claim(state, conn, worker_id, ids)
    report = BatchReport(claimed=len(claimed))
    if not claimed:
        return report
    sent, failures = _send_all(state, claimed)
    now = utcnow()
    retry_at: dict[int, datetime | None] = {}
    for message, error in failures:
        last = error.permanent or message.attempt >= settings.max_attempts
        retry_at[message.id] = (
            None
            if last
            else now + retry_delay(message.attempt, settings.retry_base, settings.retry_max)
        )
    with engine.begin() as conn:
        outbox.mark_sent(conn, state.outbox_table, [m.id for m in sent], worker_id)
        for message, error in failures:
            outbox.mark_failed(
                conn,
                state.outbox_table,
                message.id,
                worker_id,
                error=str(error),
                retry_at=retry_at[message.id],
            )
        if claim_next:
            report.next_claimed = _claim(state, conn, worker_id, ids)
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    for message in sent:
        signals.message_delivered.send(
            app, outbox_id=message.id, attempt=message.attempt, message_id=message.message_id
        )
        signals.confirmation_sent.send(
            app,
            user_id=message.user_id,
            email=message.recipient,
            purpose=message.purpose,
            message_id=message.message_id,
        )
    for message, error in failures:
        dead = retry_at[message.id] is None
        logger.warning(
            "Delivery of outbox message %s failed (attempt %s%s): %s",
            message.id,
            message.attempt,
            ", dead" if dead else "",
            error,
        )
        signals.delivery_failed.send(
            app, outbox_id=message.id, attempt=message.attempt, dead=dead, error=str(error)
        )
    report.sent = len(sent)
    report.dead = sum(1 for v in retry_at.values() if v is None)
    report.retried = len(failures) - report.dead
    return report


def _send_all(
    state: ConfirmMailState, claimed: list[ClaimedMessage]
) -> tuple[list[ClaimedMessage], list[tuple[ClaimedMessage, DeliveryError]]]:
    sent: list[ClaimedMessage] = []
    failures: list[tuple[ClaimedMessage, DeliveryError]] = []
    try:
        connection = state.transport.connect()
    except Exception as exc:  # noqa: BLE001 - a broken transport fails the batch, not the worker
        error = _as_delivery_error(exc)
        return [], [(message, error) for message in claimed]
    app = current_app._get_current_object()  # type: ignore[attr-defined]

    def prepare(message: ClaimedMessage) -> Any:
        with app.app_context():
            return connection.prepare(compose(state, message))

    # One helper thread writes the messages (token, templates, MIME) in order while this
    # thread waits on the transport, so the CPU work overlaps the round trips.
    with connection, ThreadPoolExecutor(1, thread_name_prefix="confirm-mail-compose") as pool:
        prepared = [pool.submit(prepare, message) for message in claimed]
        for message, future in zip(claimed, prepared, strict=True):
            try:
                connection.send_prepared(future.result())
            except Exception as exc:  # noqa: BLE001 - recorded on the row and retried
                failures.append((message, _as_delivery_error(exc)))
            else:
                sent.append(message)
    return sent, failures


def _as_delivery_error(exc: Exception) -> DeliveryError:
    if isinstance(exc, DeliveryError):
        return exc
    logger.exception("Unexpected error while delivering a confirmation email")
    return DeliveryError(f"Unexpected {type(exc).__name__}")


def release(state: ConfirmMailState, claimed: list[ClaimedMessage], worker_id: str) -> None:
    """Give back a batch this worker claimed but will not send (it is stopping)."""
    if claimed:
        with state.engine().begin() as conn:
            outbox.release(conn, state.outbox_table, [m.id for m in claimed], worker_id)
