"""Delivery: take due emails from the outbox, mint their links, send them, record the outcome.

:class:`Deliverer` delivers one batch at a time for one app. :class:`DeliveryLoop` repeats
that until stopped (``flask confirm-mail worker``), and :class:`BackgroundSender` runs a
loop in a daemon thread of the app's process (``CONFIRM_MAIL_DELIVERY = "thread"``).

The link token is minted right after the claim, so a link's lifetime counts from the
moment its email leaves. Failed attempts are retried with exponential backoff and
jitter; after ``CONFIRM_MAIL_MAX_ATTEMPTS`` (or a permanent refusal) a message is
``dead`` until ``flask confirm-mail retry`` requeues it. Any number of loops may run
against one database: each has its own worker id, which holds the leases of its claims.
"""

from __future__ import annotations

import logging
import os
import random
import secrets
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from flask import Flask, current_app
from flask_sqlalchemy import SQLAlchemy

from . import outbox, signals
from .errors import DeliveryError
from .settings import Settings
from .tokens import LinkTokenSigner
from .transport import ConfirmationEmail, Transport

logger = logging.getLogger("flask_confirm_mail")


def new_worker_id() -> str:
    """``host:pid:random``, unique per loop."""
    return f"{socket.gethostname()[:64]}:{os.getpid()}:{secrets.token_hex(4)}"


def retry_delay(attempt: int, base: float, cap: float) -> timedelta:
    """Exponential backoff with jitter: ``base * 2**(attempt-1)``, capped, times 0.5 to 1."""
    delay = min(cap, base * 2 ** min(attempt - 1, 32))
    return timedelta(seconds=delay * random.uniform(0.5, 1.0))


@dataclass
class BatchReport:
    """What :meth:`Deliverer.deliver_batch` did, or a loop did in all."""

    claimed: int = 0
    sent: int = 0
    retried: int = 0
    dead: int = 0

    def add(self, other: BatchReport) -> None:
        self.claimed += other.claimed
        self.sent += other.sent
        self.retried += other.retried
        self.dead += other.dead


class Deliverer:
    """Delivers the outbox of one app through its transport.

    Runs in an application context of that app; uses its own connections, never the
    request's session.
    """

    def __init__(
        self,
        *,
        db: SQLAlchemy,
        table: sa.Table,
        settings: Settings,
        transport: Transport,
        signer: LinkTokenSigner,
    ) -> None:
        self.db = db
        self.table = table
        self.settings = settings
        self.transport = transport
        self.signer = signer

    def claim(self, worker_id: str, ids: Sequence[int] | None = None) -> list[ConfirmationEmail]:
        """Reserve up to one batch of due emails and mint their links."""
        settings = self.settings
        with self.db.engine.begin() as conn:
            rows = outbox.claim(
                conn,
                self.table,
                worker_id=worker_id,
                limit=settings.batch_size,
                lease=settings.lease,
                ids=ids,
            )
        emails = []
        for row in rows:
            token, expires_at = self.signer.issue(row.user_id, row.recipient)
            emails.append(
                ConfirmationEmail(
                    outbox_id=row.id,
                    user_id=row.user_id,
                    recipient=row.recipient,
                    purpose=row.purpose,
                    message_id=row.message_id,
                    link_prefix=settings.link_prefix,
                    link_token=token,
                    expires_at=expires_at,
                    lifetime=settings.lifetime,
                    attempt=row.attempts,
                    context=row.context or {},
                )
            )
        return emails

    def deliver_batch(self, worker_id: str, ids: Sequence[int] | None = None) -> BatchReport:
        """Claim up to one batch of due emails (only among ``ids`` when given) and send them."""
        emails = self.claim(worker_id, ids)
        report = BatchReport(claimed=len(emails))
        if not emails:
            return report
        sent: list[ConfirmationEmail] = []
        failures: list[tuple[ConfirmationEmail, DeliveryError]] = []
        try:
            for email in emails:
                try:
                    self.transport.send(email)
                except Exception as exc:  # noqa: BLE001 - recorded on the row and retried
                    failures.append((email, _as_delivery_error(exc)))
                else:
                    sent.append(email)
        finally:
            self.transport.close()
        retry_at = self._record(worker_id, sent, failures)
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        for email in sent:
            signals.message_delivered.send(
                app,
                outbox_id=email.outbox_id,
                attempt=email.attempt,
                message_id=email.message_id,
                recipient=email.recipient,
            )
            signals.confirmation_sent.send(
                app,
                user_id=email.user_id,
                email=email.recipient,
                purpose=email.purpose,
                message_id=email.message_id,
            )
        for email, error in failures:
            dead = retry_at[email.outbox_id] is None
            logger.warning(
                "Delivery of outbox message %s failed (attempt %s%s): %s",
                email.outbox_id,
                email.attempt,
                ", dead" if dead else "",
                error,
            )
            signals.delivery_failed.send(
                app,
                outbox_id=email.outbox_id,
                attempt=email.attempt,
                dead=dead,
                error=str(error),
                recipient=email.recipient,
                permanent=error.permanent,
            )
        report.sent = len(sent)
        report.dead = sum(1 for when in retry_at.values() if when is None)
        report.retried = len(failures) - report.dead
        return report

    def _record(
        self,
        worker_id: str,
        sent: list[ConfirmationEmail],
        failures: list[tuple[ConfirmationEmail, DeliveryError]],
    ) -> dict[int, datetime | None]:
        """Write the batch's outcome in one transaction; return each failure's retry time."""
        settings = self.settings
        now = outbox.utcnow()
        retry_at: dict[int, datetime | None] = {}
        for email, error in failures:
            last = error.permanent or email.attempt >= settings.max_attempts
            retry_at[email.outbox_id] = (
                None
                if last
                else now + retry_delay(email.attempt, settings.retry_base, settings.retry_max)
            )
        with self.db.engine.begin() as conn:
            outbox.mark_sent(conn, self.table, [e.outbox_id for e in sent], worker_id)
            for email, error in failures:
                outbox.mark_failed(
                    conn,
                    self.table,
                    email.outbox_id,
                    worker_id,
                    error=str(error),
                    retry_at=retry_at[email.outbox_id],
                )
        return retry_at

    def deliver_now(self, ids: Sequence[int]) -> None:
        """Deliver these messages in this thread (``sync`` mode and the CLI); never raises."""
        worker_id = new_worker_id()
        size = self.settings.batch_size
        try:
            for start in range(0, len(ids), size):
                self.deliver_batch(worker_id, ids[start : start + size])
        except Exception:
            logger.exception("Delivery after commit failed; the messages stay in the outbox")


def _as_delivery_error(exc: Exception) -> DeliveryError:
    if isinstance(exc, DeliveryError):
        return exc
    logger.exception("Unexpected error while delivering a confirmation email")
    return DeliveryError(f"Unexpected {type(exc).__name__}")


class DeliveryLoop:
    """Deliver batches until stopped; sleep ``poll_interval`` (or until woken) when idle.

    :param app: the application whose outbox this loop drains.
    :param deliverer: that application's :class:`Deliverer`.
    """

    def __init__(self, app: Flask, deliverer: Deliverer, *, poll_interval: float | None = None):
        self.app = app
        self.deliverer = deliverer
        self.worker_id = new_worker_id()
        self.poll_interval = (
            deliverer.settings.poll_interval if poll_interval is None else poll_interval
        )
        self.total = BatchReport()
        self._wake = threading.Event()
        self._stop = threading.Event()

    def wake(self) -> None:
        """Look at the outbox now instead of at the next poll."""
        self._wake.set()

    def stop(self) -> None:
        """Finish the current batch, then return from :meth:`run`."""
        self._stop.set()
        self._wake.set()

    def run_once(self) -> BatchReport:
        """Deliver one batch; errors are logged, never raised."""
        try:
            with self.app.app_context():
                report = self.deliverer.deliver_batch(self.worker_id)
        except Exception:
            logger.exception("The delivery loop could not deliver a batch; trying again later")
            return BatchReport()
        self.total.add(report)
        return report

    def run(self, *, until_idle: bool = False) -> BatchReport:
        """Loop until :meth:`stop`; with ``until_idle``, return once nothing is due."""
        while not self._stop.is_set():
            if self.run_once().claimed:
                continue
            if until_idle:
                break
            self._wake.wait(self.poll_interval)
            self._wake.clear()
        return self.total


class BackgroundSender:
    """``CONFIRM_MAIL_DELIVERY = "thread"``: a daemon thread running a :class:`DeliveryLoop`.

    Started on first use in each process (so it survives a fork by gunicorn's preloading).
    """

    def __init__(self, deliverer: Deliverer) -> None:
        self.deliverer = deliverer
        self._lock = threading.Lock()
        self._loop: DeliveryLoop | None = None
        self._thread: threading.Thread | None = None
        self._pid = 0

    def _running(self) -> DeliveryLoop | None:
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and self._pid == os.getpid():
            if thread.is_alive():
                return loop
        return None

    def ensure_started(self, app: Flask) -> DeliveryLoop:
        """Start this process's sender thread unless it runs."""
        loop = self._running()
        if loop is not None:
            return loop
        with self._lock:
            loop = self._running()
            if loop is None:
                loop = self._loop = DeliveryLoop(app, self.deliverer)
                self._thread = threading.Thread(
                    target=loop.run, name="confirm-mail-sender", daemon=True
                )
                self._pid = os.getpid()
                self._thread.start()
            return loop

    def wake(self, app: Flask) -> None:
        """Have the sender look at the outbox now."""
        self.ensure_started(app).wake()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread after its current batch (tests, shutdown)."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is not None and thread is not None:
            loop.stop()
            thread.join(timeout)
