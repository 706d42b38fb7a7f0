"""Delivery: take due emails from the outbox, mint their links, send them, record the outcome.

:class:`Deliverer` delivers for one app, ``CONFIRM_MAIL_CONCURRENCY`` emails in flight at
once: a batch (``deliver_batch``) or a stream of batches without a barrier between them
(``deliver_stream``). :class:`DeliveryLoop` repeats that until stopped (``flask
confirm-mail worker``), and :class:`BackgroundSender` runs a loop in a daemon thread of the
app's process (``CONFIRM_MAIL_DELIVERY = "thread"``), stopped at the process's exit.

The link token is minted right after the claim, so a link's lifetime counts from the
moment its email leaves; the transport then prepares the batch's emails (the SMTP
transport writes each message) in the loop's thread, and the sender threads only send.
Failed attempts are retried with exponential backoff and jitter; after
``CONFIRM_MAIL_MAX_ATTEMPTS`` (or a permanent refusal) a message is ``dead`` until ``flask
confirm-mail retry`` requeues it. Any number of loops may run against one database: each
has its own worker id, which holds the leases of its claims.

Faults: while a batch is sent its lease is extended every third of the lease, so a slow
server never lets another worker take rows still being sent; a stop (SIGTERM, process
exit) lets the emails on the wire finish and gives the others back at once; the results
of a batch are written again and again until the database answers, so a database restart
after sending does not send the batch again.

Why threads, not asyncio: sending is waiting on the provider's answer, which threads do
as well as an event loop, and threads keep one SMTP client (:mod:`smtplib`), one template
path and no event loop in web processes. Measured (``python -m benchmarks.send_paths``,
2 cores): 32 emails in flight against a server answering after 100 ms,
:class:`~flask_confirm_mail.smtp.SMTPSessionPool` from 32 threads sent 303.9 msg/s at
0.41 ms of CPU a message, aiosmtplib with 32 connections on one event loop 277.0 msg/s at
0.43 ms (an earlier run: 303.4 at 0.25 against 285.9 at 0.38): no gain to pay a second
SMTP client and an event loop for. The
throughput by concurrency is scenario 3 of ``benchmarks/README.md``.
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
from sqlalchemy.engine import Connection

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


class _OnTheWire:
    """The emails a stream handed to the senders and has not recorded yet.

    Each sender reports its email's end through its future's callback; the stream sleeps
    in :meth:`wait` until no more than so many are left unsent, rather than waking at
    every email's end: ``concurrent.futures.wait`` over the 32 to 64 futures in flight,
    called at each end, took 55,000 lock acquisitions to deliver 1,920 emails (cProfile of
    scenario 3's loop, ``benchmarks/delivery_throughput.py``, 32 in flight).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._unsent: dict[Future[Outcome], ConfirmationEmail] = {}
        self._finished: list[tuple[ConfirmationEmail, Outcome]] = []
        self._at_most = -1
        self._changed = threading.Event()

    def add(self, future: Future[Outcome], email: ConfirmationEmail) -> None:
        with self._lock:
            self._unsent[future] = email
        future.add_done_callback(self._ended)

    def _ended(self, future: Future[Outcome]) -> None:
        try:
            outcome = future.result()
        except BaseException as exc:  # noqa: BLE001 - _send_one returns its errors
            outcome = DeliveryError(f"Unexpected {type(exc).__name__}")
        with self._lock:
            email = self._unsent.pop(future)
            self._finished.append((email, outcome))
            if len(self._unsent) <= self._at_most:
                self._changed.set()

    def unsent(self) -> int:
        with self._lock:
            return len(self._unsent)

    def take_finished(self) -> list[tuple[ConfirmationEmail, Outcome]]:
        with self._lock:
            finished, self._finished = self._finished, []
        return finished

    def unrecorded_ids(self) -> list[int]:
        with self._lock:
            emails = [*self._unsent.values(), *(email for email, _ in self._finished)]
        return [email.outbox_id for email in emails]

    def wait(self, at_most: int, timeout: float) -> None:
        """Return once no more than ``at_most`` emails are unsent, or after ``timeout``."""
        with self._lock:
            self._at_most = at_most
            if len(self._unsent) <= at_most:
                return
            self._changed.clear()
        self._changed.wait(timeout)


class Deliverer:
    """Delivers the outbox of one app through its transport.

    Runs in an application context of that app; uses its own connections, never the
    request's session. Sends from a pool of ``CONFIRM_MAIL_CONCURRENCY`` threads, made
    on first use in each process.
    """

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
        #: Called in the transaction that records deliveries, with the recipients
        #: delivered: one statement per batch instead of one transaction per email on
        #: ``message_delivered`` (on a SQLite file 0.08 ms a message so, against 0.006 ms for
        #: one ``DELETE ... IN`` a batch: ``python -m benchmarks.send_paths``).
        self.delivered_hooks: list[Callable[[Connection, list[str]], object]] = []
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid = 0
        self._pool_lock = threading.Lock()

    @property
    def claim_size(self) -> int:
        """Messages per claim: ``BATCH_SIZE`` raised to a multiple of ``CONCURRENCY``, and
        to at least two messages per connection.

        A claim costs CPU whatever its size (the claim, the codes, the expiry check, the
        records, each a statement and a commit: about 5 ms when this was measured, before
        those statements were built once per table, see :mod:`.outbox`); at 32 in flight
        against 100 ms, 64 messages a claim rather than 32 took the CPU of a message
        from 0.80-0.85 to 0.66-0.76 ms (two A/B runs). The second half of a claim waits
        for one send at most.
        """
        concurrency = self.settings.concurrency
        batch = max(self.settings.batch_size, 2 * concurrency)
        return -(-batch // concurrency) * concurrency

    def _senders(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None or self._pool_pid != os.getpid():
                self._pool = ThreadPoolExecutor(
                    self.settings.concurrency, thread_name_prefix="confirm-mail-send"
                )
                self._pool_pid = os.getpid()
            return self._pool

    def claim(self, worker_id: str, ids: Sequence[int] | None = None) -> list[ConfirmationEmail]:
        """Reserve up to one batch of due emails, mint their links and have the transport
        prepare them (:meth:`~flask_confirm_mail.transport.Transport.prepare`).

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
                limit=self.claim_size,
                lease=settings.lease,
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
        """Claim up to one batch of due emails (only among ``ids`` when given) and send them.

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

    def deliver_stream(
        self,
        worker_id: str,
        *,
        stop: threading.Event,
        wake: threading.Event,
        before_claim: Callable[[], object] | None = None,
    ) -> BatchReport:
        """Deliver until nothing is due, keeping every sender busy: no batch barrier.

        A batch (:attr:`claim_size`) is claimed whenever no more than ``CONCURRENCY``
        claimed emails are left unsent, so the senders never wait for the slowest email
        of a batch, nor for the claim of the next; finished emails are recorded just
        before each claim (and when the pipe drains). After a claim that found less than
        a batch, it claims again only when ``wake`` is set meanwhile (a commit). ``stop`` as for
        :meth:`deliver_batch`. The leases of every claimed, unrecorded email are extended
        every third of the lease. ``before_claim`` is called before each claim (``thread``
        mode's sender waits there for its process's requests).

        ``benchmarks/delivery_throughput.py`` (scenario 3) measures the share of
        concurrency / latency it reaches.
        """
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        senders = self._senders()
        concurrency = self.settings.concurrency
        heartbeat = self.settings.lease.total_seconds() / 3
        next_beat = time.monotonic() + heartbeat
        wire = _OnTheWire()
        report = BatchReport()
        due = True
        while True:
            if wake.is_set() and not stop.is_set():
                wake.clear()
                due = True
            unsent = wire.unsent()
            if due and not stop.is_set() and unsent <= concurrency:
                finished = wire.take_finished()
                if finished:
                    report.add(self._finish(worker_id, finished))
                if before_claim is not None:
                    before_claim()
                emails = self._claim_logged(worker_id)
                report.claimed += len(emails)
                due = len(emails) == self.claim_size  # less: nothing else is due now
                for email in emails:
                    wire.add(senders.submit(self._send_one, app, email, stop), email)
                continue
            if not unsent:
                break
            # Woken when the next claim is due, or (nothing more due) at each email's end.
            at_most = concurrency if due and not stop.is_set() else unsent - 1
            wire.wait(at_most, timeout=max(0.0, next_beat - time.monotonic()))
            if time.monotonic() >= next_beat:
                unrecorded = wire.unrecorded_ids()
                if unrecorded:
                    self._extend_lease(worker_id, unrecorded)
                next_beat = time.monotonic() + heartbeat
        finished = wire.take_finished()
        if finished:
            report.add(self._finish(worker_id, finished))
        return report

    def _claim_logged(self, worker_id: str) -> list[ConfirmationEmail]:
        """:meth:`claim`, an error logged and taken as nothing due (the loop polls again)."""
        try:
            return self.claim(worker_id)
        except Exception:
            logger.exception("The delivery loop could not claim a batch; trying again later")
            return []

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
        heartbeat = self.settings.lease.total_seconds() / 3
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
                outbox.extend_lease(conn, self.table, ids, worker_id, self.settings.lease)
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
                None
                if last
                else now + retry_delay(email.attempt, settings.retry_base, settings.retry_max)
            )
        with self.db.engine.begin() as conn:
            outbox.mark_sent(conn, self.table, [e.outbox_id for e in sent], worker_id)
            if sent:
                for hook in self.delivered_hooks:
                    hook(conn, [email.recipient for email in sent])
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

    def deliver_now(self, ids: Sequence[int]) -> None:
        """Deliver these messages in this thread (``sync`` mode and the CLI); never raises."""
        worker_id = new_worker_id()
        size = self.claim_size
        try:
            for start in range(0, len(ids), size):
                self.deliver_batch(worker_id, ids[start : start + size])
        except Exception:
            logger.exception("Delivery after commit failed; the messages stay in the outbox")
        finally:
            self.transport.close()


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
    """Deliver batches until stopped; sleep ``poll_interval`` (or until woken) when idle.

    :param app: the application whose outbox this loop drains.
    :param deliverer: that application's :class:`Deliverer`.
    :param poll_interval: seconds between polls when idle (``CONFIRM_MAIL_POLL_INTERVAL``).
    :param listen: wake up soon after each enqueuing commit
        (:func:`~flask_confirm_mail.outbox.waker_for`: ``LISTEN`` on PostgreSQL, the commit
        counter of a SQLite file), the polls kept as the safety net.
    :param before_poll: called in an app context before each look at the outbox
        (``flask confirm-mail worker`` queues the reminders due there).
    :param before_claim: called before each claim (:meth:`Deliverer.deliver_stream`).
    """

    def __init__(
        self,
        app: Flask,
        deliverer: Deliverer,
        *,
        poll_interval: float | None = None,
        listen: bool = False,
        before_poll: Callable[[], object] | None = None,
        before_claim: Callable[[], object] | None = None,
    ):
        self.app = app
        #: Called in an app context before each look at the outbox (reminders).
        self.before_poll = before_poll
        self.before_claim = before_claim
        self.listen = listen
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
        """Let the emails on the wire finish, give back the rest of the batch, then
        return from :meth:`run`. Safe to call from a signal handler."""
        self._stop.set()
        self._wake.set()

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self._stop.is_set()

    def run_once(self) -> BatchReport:
        """Deliver one batch; errors are logged, never raised."""
        return self._guarded(lambda: self.deliverer.deliver_batch(self.worker_id, stop=self._stop))

    def _run_stream(self) -> BatchReport:
        """Deliver until nothing is due (:meth:`Deliverer.deliver_stream`); never raises."""
        deliverer = self.deliverer
        return self._guarded(
            lambda: deliverer.deliver_stream(
                self.worker_id, stop=self._stop, wake=self._wake, before_claim=self.before_claim
            )
        )

    def _guarded(self, deliver: Callable[[], BatchReport]) -> BatchReport:
        try:
            with self.app.app_context():
                if self.before_poll is not None:
                    self.before_poll()
                report = deliver()
        except Exception:
            logger.exception("The delivery loop could not deliver a batch; trying again later")
            return BatchReport()
        self.total.add(report)
        return report

    def run(self, *, until_idle: bool = False) -> BatchReport:
        """Loop until :meth:`stop`; with ``until_idle``, return once nothing is due."""
        waker: outbox.OutboxListener | outbox.SQLiteWatcher | None = None
        if self.listen:
            with self.app.app_context():
                waker = outbox.waker_for(self.deliverer.db.engine, self.wake)
        try:
            while not self._stop.is_set():
                if self._run_stream().claimed:
                    continue
                if until_idle:
                    break
                if not self._wake.wait(self.poll_interval):
                    # Idle for a whole poll: no connection waits open. Not sooner: at 20
                    # sign-ups a second each email would pay a new connection, 0.9 ms
                    # more than a kept one on loopback (python -m benchmarks.send_paths),
                    # a TLS handshake and network round trips to a real provider.
                    self.deliverer.transport.close()
                self._wake.clear()
        finally:
            if waker is not None:
                waker.stop()
            self.deliverer.transport.close()
        return self.total


class BackgroundSender:
    """``CONFIRM_MAIL_DELIVERY = "thread"``: a daemon thread running a :class:`DeliveryLoop`.

    Started on first use in each process (so it survives a fork by gunicorn's preloading),
    and stopped at that process's exit (``atexit``: gunicorn's ``--max-requests``, HUP, a
    deploy): the emails on the wire finish, the rest of the batch is given back.

    It yields to the requests of its process (:meth:`request_started`,
    :meth:`request_ended`): each claim waits until none is in flight, for at most
    :data:`YIELD_AT_MOST` from the start of the stream of claims (a commit's wake-up, a
    poll); past that the stream claims without waiting until nothing is due, so under a
    load that never pauses emails are late by that much, not held. A burst of sign-ups is
    so answered first and mailed right after, instead of sharing the cores and SQLite's
    write lock with the claims, renderings and records of its own emails (500 at once
    under ``gunicorn -w 4 --threads 8``: p99 0.86-0.88 of the same sender not yielding,
    ``benchmarks/sqlite_threaded.py``); a sign-up answered alone hands over at its end.
    """

    #: Longest, in seconds, a stream of claims waits for a pause in the requests: a burst
    #: of 500 sign-ups on 2 cores lasts 1.5-3 s (``benchmarks/sqlite_threaded.py``).
    YIELD_AT_MOST = 2.0

    def __init__(self, deliverer: Deliverer) -> None:
        self.deliverer = deliverer
        self._lock = threading.Lock()
        self._loop: DeliveryLoop | None = None
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._requests = threading.Condition()
        self._in_flight = 0  # requests of this process being served
        self._counting_pid = 0  # the process _in_flight counts the requests of
        self._yield_until = 0.0  # time.monotonic() when the stream's claims stop waiting

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
                loop = self._loop = DeliveryLoop(
                    app, self.deliverer, before_poll=self._new_stream, before_claim=self._yield
                )
                self._thread = threading.Thread(
                    target=loop.run, name="confirm-mail-sender", daemon=True
                )
                if self._pid != os.getpid():
                    _at_exit(self.stop)
                self._pid = os.getpid()
                self._thread.start()
            return loop

    def request_started(self, app: Flask) -> None:
        """A request of this process begins (``before_request``); starts the sender.

        Counted before the sender starts, so its first claim already waits for it.
        """
        if self._counting_pid != os.getpid():
            with self._lock:
                if self._counting_pid != os.getpid():
                    # A forked child serves none of its parent's requests, and its copy
                    # of the condition's lock may have been held by a parent's thread.
                    self._requests = threading.Condition()
                    self._in_flight = 0
                    self._counting_pid = os.getpid()
        with self._requests:
            self._in_flight += 1
        self.ensure_started(app)

    def request_ended(self) -> None:
        """A request of this process ended (``teardown_request``)."""
        with self._requests:
            self._in_flight = max(self._in_flight - 1, 0)
            if not self._in_flight:
                self._requests.notify_all()

    def _new_stream(self) -> None:
        self._yield_until = time.monotonic() + self.YIELD_AT_MOST

    def _yield(self) -> None:
        """Wait until this process serves no request (see the class), or the stop."""
        loop = self._loop
        with self._requests:
            self._requests.wait_for(
                lambda: not self._in_flight or loop is None or loop.stopping,
                self._yield_until - time.monotonic(),
            )

    def wake(self, app: Flask) -> None:
        """Have the sender look at the outbox now (it claims once the requests pause)."""
        self.ensure_started(app).wake()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread: the emails on the wire finish, the rest are given back."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is not None and thread is not None:
            loop.stop()
            with self._requests:
                self._requests.notify_all()
            thread.join(timeout)
