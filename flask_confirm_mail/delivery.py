"""Delivery: take due emails from the outbox, mint their links, send them, record the outcome.

:class:`Deliverer` delivers one batch for one app: it claims up to
``CONFIRM_MAIL_CONCURRENCY`` due emails, mints their links, sends them from as many
threads and records the outcomes. :class:`DeliveryLoop` repeats that until stopped
(``flask confirm-mail worker``), polling while nothing is due, and :class:`BackgroundSender`
runs a loop in a daemon thread of the app's process (``CONFIRM_MAIL_DELIVERY = "thread"``),
woken by each commit that queues an email and stopped at the process's exit.

The link token is minted right after the claim, so a link's lifetime counts from the
moment its email leaves. Failed attempts are retried with exponential backoff and jitter
(:func:`retry_delay`); after ``CONFIRM_MAIL_MAX_ATTEMPTS`` (or a permanent refusal) a
message is ``dead`` until ``flask confirm-mail retry`` requeues it. Any number of loops
may run against one database: each has its own worker id, which holds the leases of its
claims.

Faults: while a batch is sent its lease is extended every third of the lease, so a slow
server never lets another worker take rows still being sent; a stop (SIGTERM, process
exit) lets the emails on the wire finish and gives the others back at once; the results
of a batch are written again and again until the database answers, so a database restart
after sending does not send the batch again.

Why threads, not asyncio: sending is waiting on the provider's answer, which threads do
as well as an event loop, and threads keep one SMTP client (:mod:`smtplib`), one template
path and no event loop in web processes.
"""

from __future__ import annotations

import atexit
import logging
import os
import random
import secrets
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa
from flask import Flask, current_app
from flask_sqlalchemy import SQLAlchemy

from . import outbox, signals
from .errors import DeliveryError
from .outbox import Purpose
from .settings import Settings
from .tokens import CodeHasher, LinkTokenSigner
from .transport import ConfirmationEmail, Transport

logger = logging.getLogger("flask_confirm_mail")
R = TypeVar("R")

#: Database errors that a retry may get past (a restarted server, a lost connection, a
#: locked SQLite file); others (a bug, a missing table) are raised.
TRANSIENT_DB_ERRORS = (sa.exc.OperationalError, sa.exc.InterfaceError)
#: Seconds between attempts to write a batch's results while the database does not answer.
RECORD_RETRY_FIRST = 0.2
RECORD_RETRY_MAX = 5.0
#: Seconds a claim reserves its messages for its worker; after that another worker may
#: take them. A batch extends its lease every third of it while it is sent, so only a
#: worker that stopped (killed, frozen) loses its emails to another, which sends them.
LEASE = 120.0
#: Seconds before the first retry of a failed send; doubled at each attempt, up to
#: :data:`RETRY_MAX`, with jitter (:func:`retry_delay`).
RETRY_BASE = 30.0
RETRY_MAX = 3600.0
#: Seconds an idle loop waits between two looks at the outbox (retries coming due, and
#: every email in ``worker`` mode, where no commit wakes the loop).
POLL_INTERVAL = 1.0


class NotSent:
    """The outcome of an email the batch gave back before sending it (a stop)."""


NOT_SENT = NotSent()
Outcome = DeliveryError | NotSent | None


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
    #: Claimed, then given back unsent because the loop was stopping.
    given_back: int = 0

    def add(self, other: BatchReport) -> None:
        self.claimed += other.claimed
        self.sent += other.sent
        self.retried += other.retried
        self.dead += other.dead
        self.given_back += other.given_back


class SendRate:
    """``CONFIRM_MAIL_MAX_RATE``: at most so many sends per second in this process.

    A moving window of the ``limits`` library; a fraction of a message per second is
    counted over ten seconds (``0.5`` is 5 per 10 s).
    """

    def __init__(self, per_second: float) -> None:
        from limits import RateLimitItemPerSecond, storage, strategies

        if per_second >= 1 and float(per_second).is_integer():
            self.item = RateLimitItemPerSecond(int(per_second), 1)
        else:
            self.item = RateLimitItemPerSecond(max(1, round(per_second * 10)), 10)
        self.limiter = strategies.MovingWindowRateLimiter(storage.MemoryStorage())

    def wait(self, stop: threading.Event) -> bool:
        """Wait for a slot; ``False`` when ``stop`` was set meanwhile."""
        while not self.limiter.hit(self.item, "send"):
            reset_at = self.limiter.get_window_stats(self.item, "send").reset_time
            if stop.wait(min(1.0, max(0.001, reset_at - time.time()))):
                return False
        return True


class Deliverer:
    """Delivers the outbox of one app through its transport.

    Runs in an application context of that app; uses its own connections, never the
    request's session. Sends from a pool of ``CONFIRM_MAIL_CONCURRENCY`` threads, made
    on first use in each process.

    :attr:`lease`, :attr:`retry_base` and :attr:`retry_max` (seconds) are the module's
    constants; a test may shorten them on an instance.
    """

    lease: float = LEASE
    retry_base: float = RETRY_BASE
    retry_max: float = RETRY_MAX

    def __init__(
        self,
        *,
        db: SQLAlchemy,
        table: sa.Table,
        settings: Settings,
        transport: Transport,
        signer: LinkTokenSigner,
        codes: CodeHasher | None = None,
    ) -> None:
        self.db = db
        self.codes = codes
        self.table = table
        self.settings = settings
        self.transport = transport
        self.signer = signer
        self.rate = None if settings.max_rate is None else SendRate(settings.max_rate)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid = 0
        self._pool_lock = threading.Lock()

    def _senders(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None or self._pool_pid != os.getpid():
                self._pool = ThreadPoolExecutor(
                    self.settings.concurrency, thread_name_prefix="confirm-mail-send"
                )
                self._pool_pid = os.getpid()
            return self._pool

    def claim(self, worker_id: str, ids: Sequence[int] | None = None) -> list[ConfirmationEmail]:
        """Reserve up to ``CONFIRM_MAIL_CONCURRENCY`` due emails (only among ``ids`` when
        given) and mint their links.

        Messages whose lease ended on their last allowed attempt become ``dead`` (outcome
        unknown) in the same transaction, rather than being sent once more.
        """
        settings = self.settings
        with self.db.engine.begin() as conn:
            outbox.expire_exhausted(conn, self.table, settings.max_attempts)
            rows = outbox.claim(
                conn,
                self.table,
                worker_id=worker_id,
                limit=settings.concurrency,
                lease=timedelta(seconds=self.lease),
                ids=ids,
                max_attempts=settings.max_attempts,
            )
            codes = self._mint_codes(conn, rows)
        emails = []
        for row in rows:
            token, expires_at = (
                ("", None)  # the change notice: no link, so no token
                if not Purpose(row.purpose).has_link
                else self.signer.issue(row.user_id, row.recipient)
            )
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
                    code=codes.get(row.id, ""),
                    locale=row.locale,
                )
            )
        return emails

    def _mint_codes(self, conn: sa.Connection, rows: Sequence[Any]) -> dict[int, str]:
        """A new confirmation code for each claimed row, its digest stored in the claim's
        transaction (the row's previous code is void: the newest email's code counts)."""
        if self.codes is None:
            return {}
        codes = {row.id: self.codes.new_code() for row in rows}
        digests = {row.id: self.codes.digest(codes[row.id], row.id, row.recipient) for row in rows}
        outbox.store_codes(conn, self.table, digests, outbox.utcnow() + self.settings.lifetime)
        return codes

    def deliver_batch(
        self,
        worker_id: str,
        ids: Sequence[int] | None = None,
        *,
        stop: threading.Event | None = None,
    ) -> BatchReport:
        """Claim up to one batch of due emails (only among ``ids`` when given), send them
        and record the outcomes.

        Once ``stop`` is set, emails not yet on the wire are given back (due at once, the
        attempt not counted) and only those being sent are waited for.
        """
        emails = self.claim(worker_id, ids)
        if not emails:
            return BatchReport()
        outcomes = self._send_all(worker_id, emails, stop or threading.Event())
        report = self._finish(worker_id, [(email, outcomes[email.outbox_id]) for email in emails])
        report.claimed = len(emails)
        return report

    def _finish(
        self, worker_id: str, results: list[tuple[ConfirmationEmail, Outcome]]
    ) -> BatchReport:
        """Record, announce and log the outcome of sent (or given back) emails."""
        sent = [email for email, outcome in results if outcome is None]
        given_back = [email.outbox_id for email, outcome in results if outcome is NOT_SENT]
        failures = [
            (email, outcome) for email, outcome in results if isinstance(outcome, DeliveryError)
        ]
        retry_at = self._until_done(
            "record the results of a batch", lambda: self._record(worker_id, sent, failures)
        )
        if given_back:
            self._until_done(
                "give back unsent messages",
                lambda: self._in_transaction(outbox.release, given_back, worker_id),
            )
        self._announce(sent, failures, retry_at)
        report = BatchReport(sent=len(sent), given_back=len(given_back))
        report.dead = sum(1 for when in retry_at.values() if when is None)
        report.retried = len(failures) - report.dead
        if failures:
            logger.warning(
                "A delivery batch of %s: %s sent, %s to retry, %s dead; last error: %s",
                len(results),
                report.sent,
                report.retried,
                report.dead,
                failures[-1][1],
            )
        return report

    def _send_all(
        self, worker_id: str, emails: list[ConfirmationEmail], stop: threading.Event
    ) -> dict[int, Outcome]:
        """Send ``emails`` from the pool's threads, extending their lease meanwhile."""
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        senders = self._senders()
        futures: dict[Future[Outcome], ConfirmationEmail] = {
            senders.submit(self._send_one, app, email, stop): email for email in emails
        }
        heartbeat = self.lease / 3
        next_beat = time.monotonic() + heartbeat
        pending: set[Future[Outcome]] = set(futures)
        outcomes: dict[int, Outcome] = {}
        while pending:
            done, pending = wait(pending, timeout=heartbeat, return_when=FIRST_COMPLETED)
            for future in done:
                outcomes[futures[future].outbox_id] = future.result()
            if pending and time.monotonic() >= next_beat:
                # Every row of the batch: those already sent are recorded only at its end.
                self._extend_lease(worker_id, [email.outbox_id for email in emails])
                next_beat = time.monotonic() + heartbeat
        return outcomes

    def _send_one(self, app: Flask, email: ConfirmationEmail, stop: threading.Event) -> Outcome:
        if stop.is_set() or (self.rate is not None and not self.rate.wait(stop)):
            return NOT_SENT
        try:
            with app.app_context():
                self.transport.send(email)
        except Exception as exc:  # noqa: BLE001 - recorded on the row and retried
            return _as_delivery_error(exc)
        return None

    def _extend_lease(self, worker_id: str, ids: list[int]) -> None:
        try:
            with self.db.engine.begin() as conn:
                outbox.extend_lease(conn, self.table, ids, worker_id, timedelta(seconds=self.lease))
        except TRANSIENT_DB_ERRORS as exc:
            logger.warning(
                "Could not extend the lease of %s messages being sent (%s); trying again",
                len(ids),
                type(exc).__name__,
            )

    def _in_transaction(self, step: Callable[..., Any], *args: Any) -> None:
        with self.db.engine.begin() as conn:
            step(conn, self.table, *args)

    def _until_done(self, what: str, write: Callable[[], R]) -> R:
        """Run the database write ``write`` until it succeeds: the emails have left, so
        giving up would send them again once their lease ends."""
        delay = RECORD_RETRY_FIRST
        while True:
            try:
                return write()
            except TRANSIENT_DB_ERRORS as exc:
                logger.warning(
                    "Could not %s: the database did not answer (%s); trying again in %.1f s",
                    what,
                    type(exc).__name__,
                    delay,
                )
            time.sleep(delay)
            delay = min(RECORD_RETRY_MAX, delay * 2)

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
                None if last else now + retry_delay(email.attempt, self.retry_base, self.retry_max)
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
                    failure=failure_kind(error),
                )
        return retry_at

    def _announce(
        self,
        sent: list[ConfirmationEmail],
        failures: list[tuple[ConfirmationEmail, DeliveryError]],
        retry_at: dict[int, datetime | None],
    ) -> None:
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
                bounced=error.bounced,
                message_id=email.message_id,
            )

    def deliver_now(self, ids: Sequence[int]) -> int:
        """Deliver these messages in this thread; return how many were sent. Never raises:
        what fails stays in the outbox, due for a retry."""
        worker_id = new_worker_id()
        size = self.settings.concurrency
        sent = 0
        try:
            for start in range(0, len(ids), size):
                sent += self.deliver_batch(worker_id, ids[start : start + size]).sent
        except Exception:
            logger.exception("Delivery after commit failed; the messages stay in the outbox")
        finally:
            self.transport.close()
        return sent


def _at_exit(stop: Callable[[], None]) -> None:
    """Call ``stop`` when the interpreter exits, before it ends the pool's send threads.

    ``atexit`` handlers run after ``concurrent.futures`` has drained and joined its
    threads (which would send the whole claimed batch, then refuse the next one):
    ``threading._register_atexit`` runs first. Plain ``atexit`` where it is missing.
    """
    register = getattr(threading, "_register_atexit", atexit.register)
    register(stop)


def failure_kind(error: DeliveryError) -> str:
    """How the outbox records ``error``: refused, outcome unknown, or temporary."""
    if error.permanent:
        return outbox.REFUSED
    if error.outcome_unknown:
        return outbox.UNKNOWN
    return outbox.TEMPORARY


def _as_delivery_error(exc: Exception) -> DeliveryError:
    if isinstance(exc, DeliveryError):
        return exc
    logger.exception("Unexpected error while delivering a confirmation email")
    return DeliveryError(f"Unexpected {type(exc).__name__}")


class DeliveryLoop:
    """Deliver batches until stopped; when nothing is due, wait ``poll_interval`` seconds
    or until :meth:`wake`.

    :param app: the application whose outbox this loop drains.
    :param deliverer: that application's :class:`Deliverer`.
    :param poll_interval: seconds between two looks at the outbox while idle.
    :param before_poll: called in an app context before each batch (``flask
        confirm-mail worker`` queues the reminders due there).
    """

    def __init__(
        self,
        app: Flask,
        deliverer: Deliverer,
        *,
        poll_interval: float = POLL_INTERVAL,
        before_poll: Callable[[], object] | None = None,
    ):
        self.app = app
        self.deliverer = deliverer
        self.poll_interval = poll_interval
        self.before_poll = before_poll
        self.worker_id = new_worker_id()
        self.total = BatchReport()
        self._wake = threading.Event()
        self._stop = threading.Event()

    def wake(self) -> None:
        """Look at the outbox now instead of at the next poll."""
        self._wake.set()

    def stop(self) -> None:
        """Let the emails on the wire finish, give back the rest of the batch, then
        return from :meth:`run`. Safe to call from a signal handler."""
        self._stop.set()
        self._wake.set()

    def run_once(self) -> BatchReport:
        """Deliver one batch; errors are logged, never raised."""
        try:
            with self.app.app_context():
                if self.before_poll is not None:
                    self.before_poll()
                report = self.deliverer.deliver_batch(self.worker_id, stop=self._stop)
        except Exception:
            logger.exception("The delivery loop could not deliver a batch; trying again later")
            return BatchReport()
        self.total.add(report)
        return report

    def run(self, *, until_idle: bool = False) -> BatchReport:
        """Loop until :meth:`stop`; with ``until_idle``, return once nothing is due."""
        try:
            while not self._stop.is_set():
                if self.run_once().claimed:
                    continue
                if until_idle:
                    break
                if not self._wake.wait(self.poll_interval):
                    # Idle for a whole poll: no connection to the provider waits open.
                    self.deliverer.transport.close()
                self._wake.clear()
        finally:
            self.deliverer.transport.close()
        return self.total


class BackgroundSender:
    """``CONFIRM_MAIL_DELIVERY = "thread"``: a daemon thread running a :class:`DeliveryLoop`.

    Started by the first :meth:`wake` in each process: a thread does not survive a fork
    (gunicorn's preloading), so a forked child starts its own. Stopped at that process's
    exit (gunicorn's ``--max-requests``, HUP, a deploy): the emails on the wire finish,
    the rest of the batch is given back.
    """

    def __init__(self, deliverer: Deliverer) -> None:
        self.deliverer = deliverer
        self._lock = threading.Lock()
        self._loop: DeliveryLoop | None = None
        self._thread: threading.Thread | None = None
        self._pid = 0  # the process whose exit stops the sender

    def wake(self, app: Flask) -> None:
        """Have the sender look at the outbox now; start it unless it runs in this process."""
        with self._lock:
            loop, thread = self._loop, self._thread
            # In a forked child the parent's thread is not alive.
            if loop is None or thread is None or not thread.is_alive():
                loop = self._loop = DeliveryLoop(app, self.deliverer)
                thread = self._thread = threading.Thread(
                    target=loop.run, name="confirm-mail-sender", daemon=True
                )
                if self._pid != os.getpid():
                    _at_exit(self.stop)
                    self._pid = os.getpid()
                thread.start()
        loop.wake()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread: the emails on the wire finish, the rest are given back."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is not None and thread is not None:
            loop.stop()
            thread.join(timeout)
