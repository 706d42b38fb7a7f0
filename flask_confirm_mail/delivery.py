"""Delivery: take due emails from the outbox, mint their links, send them, record the outcome.
Threads, not asyncio: sending is waiting on the provider, which threads do as well as an event
loop, and web processes keep one SMTP client (:mod:`smtplib`) and no event loop."""

from __future__ import annotations

import atexit
import logging
import os
import queue
import random
import secrets
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timedelta
from threading import Event

import sqlalchemy as sa
from flask import Flask, current_app
from flask_sqlalchemy import SQLAlchemy

from . import outbox, signals
from .errors import DATABASE_FAULTS, DeliveryError, is_database_fault
from .outbox import Purpose
from .settings import Settings
from .tokens import CodeHasher, LinkTokenSigner
from .transport import ConfirmationEmail, Transport

logger = logging.getLogger("flask_confirm_mail")

#: Seconds a claim holds its rows, renewed while sending: only a stopped worker's claims lapse.
LEASE = 120.0
#: Seconds before the first retry of a failed send; doubled at each attempt, up to RETRY_MAX.
RETRY_BASE, RETRY_MAX = 30.0, 3600.0
#: Seconds a stopping sender still tries to record what it sent; then the lease decides.
RECORD_GRACE = 10.0
#: Seconds between an idle loop's looks at the outbox (docs: "Waking an idle worker").
POLL_INTERVAL = 0.5


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
    given_back: int = 0

    def add(self, other: BatchReport) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


class SendRate:
    """``CONFIRM_MAIL_MAX_RATE`` per process, paced evenly: one message every ``1 / rate``
    seconds, never a burst (a provider's own limit counts over windows of any phase)."""

    def __init__(self, per_second: float) -> None:
        self.interval = 1.0 / per_second
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self, stop: Event) -> bool:
        """Wait for this message's slot; ``False`` when ``stop`` was set meanwhile."""
        with self._lock:
            now = time.monotonic()
            slot = self._next = max(now, self._next) + self.interval
        return not stop.wait(slot - self.interval - now)


@dataclass(kw_only=True, eq=False, repr=False)
class Deliverer:
    """Delivers the outbox of one app, in its app context, on its own connections (never the
    request's session). A test may shorten :attr:`lease` and the retry delays on an instance."""

    db: SQLAlchemy
    table: sa.Table
    settings: Settings
    transport: Transport
    signer: LinkTokenSigner
    codes: CodeHasher | None = None
    lease: float = field(default=LEASE, init=False)
    record_grace: float = field(default=RECORD_GRACE, init=False)
    retry_base: float = field(default=RETRY_BASE, init=False)
    retry_max: float = field(default=RETRY_MAX, init=False)

    def __post_init__(self) -> None:
        self.rate = None if self.settings.max_rate is None else SendRate(self.settings.max_rate)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid, self._pool_lock = 0, threading.Lock()

    def claim(self, worker_id: str, ids: Sequence[int] | None = None) -> list[ConfirmationEmail]:
        """Reserve up to ``CONFIRM_MAIL_CONCURRENCY`` due emails (only among ``ids`` when
        given) and mint their links and codes. Rows whose lease ended on their last attempt
        become ``dead`` (outcome unknown) in the same transaction, not sent once more."""
        settings, lease = self.settings, timedelta(seconds=self.lease)
        with self.db.engine.begin() as conn:
            outbox.expire_exhausted(conn, self.table, settings.max_attempts)
            rows = outbox.claim(
                conn, self.table, worker_id=worker_id, limit=settings.concurrency, lease=lease,
                ids=ids, max_attempts=settings.max_attempts,
            )  # fmt: skip
            # Every delivery of a row carries the same link and code (a copy after a lost
            # reply is no void email); a change notice has a cancel link, unless the address
            # was replaced at once (nothing waits), and no code.
            pending = {r.id for r in rows if (r.context or {}).get("replaced") is False}
            linked = [r.id for r in rows if r.purpose != Purpose.CHANGE_NOTICE or r.id in pending]
            ends = outbox.start_links(conn, self.table, linked, settings.lifetime) if linked else {}
        emails = []
        for row in rows:
            token, code, end = "", "", ends.get(row.id)
            cancel = row.purpose == Purpose.CHANGE_NOTICE
            if end is not None:
                token = self.signer.issue(row.user_id, row.recipient, end, row.message_id, cancel)
                code = self.codes.code_for(row.id, row.recipient) if self.codes else ""
            emails.append(ConfirmationEmail(
                outbox_id=row.id, user_id=row.user_id, recipient=row.recipient,
                purpose=row.purpose, message_id=row.message_id, code="" if cancel else code,
                link_prefix=settings.link_prefix + ("cancel/" if cancel else ""),
                link_token=token, expires_at=end, lifetime=settings.lifetime,
                attempt=row.attempts, context=row.context or {}, locale=row.locale,
            ))  # fmt: skip
        return emails

    def deliver_batch(
        self, worker_id: str, ids: Sequence[int] | None = None, *, stop: Event | None = None
    ) -> BatchReport:
        """Claim a batch (only among ``ids`` when given), send it and record the outcomes.
        Once ``stop`` is set, emails not yet on the wire are given back (due at once, the
        attempt not counted) and only those being sent are waited for."""
        emails = self.claim(worker_id, ids)
        if not emails:
            return BatchReport()
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        stop = stop or Event()
        results = self._send_all(app, worker_id, emails, stop)
        sent = [outcome for _, outcome in results if isinstance(outcome, ConfirmationEmail)]
        given_back = [email.outbox_id for email, outcome in results if outcome is False]
        failures = [(email, error) for email, error in results if isinstance(error, DeliveryError)]
        # The emails have left: giving up would send them again once the lease ends. So try
        # until the database answers, or for ``record_grace`` seconds once asked to stop.
        delay, tries, deadline = 0.2, 0, float("inf")
        while True:
            try:
                with self.db.engine.begin() as conn:
                    retry_at = self._record(conn, worker_id, sent, failures, given_back)
                break
            except DATABASE_FAULTS as exc:
                if not tries:
                    logger.warning(
                        "Could not record the results of %s emails: the database did not answer"
                        " (%s); trying until it does", len(emails), type(exc).__name__,
                    )  # fmt: skip
            tries += 1
            if stop.is_set():
                deadline = min(deadline, time.monotonic() + self.record_grace)
            if time.monotonic() >= deadline:
                logger.error(
                    "Stopped with the results of %s emails unrecorded: those sent go out again "
                    "when their lease ends", len(emails),
                )  # fmt: skip
                return BatchReport(claimed=len(emails))
            pause = max(0.0, min(delay, deadline - time.monotonic()))  # sleep refuses < 0
            if stop.is_set():
                time.sleep(pause)  # stop.wait would return at once
            else:
                stop.wait(pause)
            delay = min(5.0, delay * 2)
        if tries:
            logger.warning("Recorded the results of %s emails after %s tries", len(emails), tries)
        dead = sum(1 for when in retry_at.values() if when is None)
        report = BatchReport(len(emails), len(sent), len(failures) - dead, dead, len(given_back))
        for email in sent:
            signals.message_delivered.send(
                app, outbox_id=email.outbox_id, attempt=email.attempt,
                message_id=email.message_id, recipient=email.recipient,
            )  # fmt: skip
            signals.confirmation_sent.send(
                app, user_id=email.user_id, email=email.recipient, purpose=email.purpose,
                message_id=email.message_id,
            )  # fmt: skip
        for email, error in failures:
            last = retry_at[email.outbox_id] is None
            logger.warning(
                "Delivery of outbox message %s failed (attempt %s%s): %s",
                email.outbox_id, email.attempt, ", dead" if last else "", error,
            )  # fmt: skip
            signals.delivery_failed.send(
                app, outbox_id=email.outbox_id, attempt=email.attempt, dead=last,
                error=str(error), recipient=email.recipient, permanent=error.permanent,
                bounced=error.bounced, message_id=email.message_id,
            )  # fmt: skip
        if failures:
            logger.warning(
                "A delivery batch of %s: %s sent, %s to retry, %s dead; last error: %s",
                len(emails), report.sent, report.retried, report.dead, failures[-1][1],
            )  # fmt: skip
        return report

    def _send_all(
        self, app: Flask, worker_id: str, emails: list[ConfirmationEmail], stop: Event
    ) -> list[tuple[ConfirmationEmail, DeliveryError | ConfirmationEmail | bool]]:
        """Send ``emails`` from the pool's threads, extending their lease every third of it."""
        with self._pool_lock:  # a new pool in each process: threads do not survive a fork
            if self._pool is None or self._pool_pid != os.getpid():
                self._pool = ThreadPoolExecutor(self.settings.concurrency, "confirm-mail-send")
                self._pool_pid = os.getpid()
            futures = {self._pool.submit(self._send_one, app, e, stop): e for e in emails}
        pending, ids = set(futures), [email.outbox_id for email in emails]
        while pending := wait(pending, timeout=self.lease / 3).not_done:
            try:  # every row of the batch: those already sent are recorded only at its end
                with self.db.engine.begin() as conn:
                    lease = timedelta(seconds=self.lease)
                    outbox.extend_lease(conn, self.table, ids, worker_id, lease)
            except DATABASE_FAULTS as exc:
                logger.warning(
                    "Could not extend the lease of %s messages being sent (%s); trying again",
                    len(ids), type(exc).__name__,
                )  # fmt: skip
        return [(email, future.result()) for future, email in futures.items()]

    def _send_one(
        self, app: Flask, email: ConfirmationEmail, stop: Event
    ) -> DeliveryError | ConfirmationEmail | bool:
        """The email sent, with its provider id; ``False`` given back unsent; or the error."""
        if stop.is_set() or (self.rate is not None and not self.rate.wait(stop)):
            return False
        try:
            with app.app_context():
                provider_id = self.transport.send(email)
        except DeliveryError as exc:
            return exc
        except Exception as exc:  # noqa: BLE001 - recorded on the row and retried
            logger.exception("Unexpected error while delivering a confirmation email")
            return DeliveryError(f"Unexpected {type(exc).__name__}")
        return replace(email, provider_message_id=provider_id)

    def _record(
        self, conn: sa.Connection, worker_id: str, sent: list[ConfirmationEmail],
        failures: list[tuple[ConfirmationEmail, DeliveryError]], given_back: list[int],
    ) -> dict[int, datetime | None]:  # fmt: skip
        """Write the batch's outcome; return each failure's retry time (``None``: dead)."""
        now = outbox.utcnow()
        retry_at: dict[int, datetime | None] = {}
        ids = {email.outbox_id: email.provider_message_id for email in sent}
        outbox.mark_sent(conn, self.table, list(ids), worker_id, ids)
        if given_back:
            outbox.release(conn, self.table, given_back, worker_id)
        for email, error in failures:
            last = error.permanent or email.attempt >= self.settings.max_attempts
            delay = retry_delay(email.attempt, self.retry_base, self.retry_max)
            when = None if last else now + delay
            failure = outbox.UNKNOWN if error.outcome_unknown else outbox.TEMPORARY
            dead = outbox.mark_failed(
                conn, self.table, email.outbox_id, worker_id, error=str(error), retry_at=when,
                failure=outbox.REFUSED if error.permanent else failure,
            )  # fmt: skip
            retry_at[email.outbox_id] = None if dead else when
        return retry_at

    def deliver_now(self, ids: Sequence[int]) -> int:
        """Deliver these in this thread; how many were sent. Never raises: failures stay due."""
        worker_id, size, sent = new_worker_id(), self.settings.concurrency, 0
        try:
            for start in range(0, len(ids), size):
                sent += self.deliver_batch(worker_id, ids[start : start + size]).sent
        except Exception:
            logger.exception("Delivery after commit failed; the messages stay in the outbox")
        finally:
            self.transport.close()
        return sent


class DeliveryLoop:
    """Deliver ``app``'s batches until stopped; when idle, look again every ``poll_interval``
    seconds or at :meth:`wake`. ``before_poll`` runs in the app context before each batch."""

    def __init__(
        self, app: Flask, deliverer: Deliverer, *, poll_interval: float = POLL_INTERVAL,
        before_poll: Callable[[], object] | None = None,
    ):  # fmt: skip
        self.app, self.deliverer = app, deliverer
        self.poll_interval, self.before_poll = poll_interval, before_poll
        self.worker_id, self.total = new_worker_id(), BatchReport()
        self._failing: str | None = None  # what failed the last batch, logged once
        self._wake, self._stop = Event(), Event()

    def wake(self) -> None:
        """Look at the outbox now instead of at the next poll."""
        self._wake.set()

    def stop(self) -> None:
        """Finish the emails on the wire, give back the rest, leave :meth:`run`; signal-safe."""
        self._stop.set()
        self._wake.set()

    def run_once(self) -> BatchReport:
        """Deliver one batch; errors are logged when they start and end, never raised."""
        try:
            with self.app.app_context():
                if self.before_poll is not None:
                    self.before_poll()
                report = self.deliverer.deliver_batch(self.worker_id, stop=self._stop)
        except Exception as exc:
            failing = "the database" if is_database_fault(exc) else type(exc).__name__
            if failing != self._failing and failing == "the database":
                logger.warning("Delivery waits for the database (%s)", type(exc).__name__)
            elif failing != self._failing:
                logger.exception("The delivery loop could not deliver a batch; trying again")
            self._failing = failing
            return BatchReport()
        if self._failing is not None:
            logger.warning("Delivery works again (it failed on %s)", self._failing)
            self._failing = None
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
    """``thread`` mode: a daemon thread running a :class:`DeliveryLoop`, started by the first
    :meth:`wake` in each process (a fork copies no thread) and stopped at that process's exit."""

    def __init__(self, deliverer: Deliverer) -> None:
        self.deliverer = deliverer
        self._lock = threading.Lock()
        self._running: tuple[DeliveryLoop, threading.Thread] | None = None
        self._pid = 0  # the process whose exit stops the sender
        self._jobs: queue.SimpleQueue[Callable[[], object]] = queue.SimpleQueue()

    def submit(self, app: Flask, job: Callable[[], object]) -> None:
        """Run ``job`` on the sender thread before its next look at the outbox."""
        self._jobs.put(job)
        self.wake(app)

    def _run_jobs(self) -> None:
        while not self._jobs.empty():  # the sender thread is the only consumer
            self._jobs.get_nowait()()

    def wake(self, app: Flask) -> None:
        """Have the sender look at the outbox now; start it unless it runs in this process."""
        with self._lock:
            if self._running is None or not self._running[1].is_alive():
                loop = DeliveryLoop(app, self.deliverer, before_poll=self._run_jobs)
                thread = threading.Thread(target=loop.run, name="confirm-mail-sender", daemon=True)
                self._running = (loop, thread)
                if self._pid != os.getpid():
                    # Stop before the interpreter joins the pool's send threads (which would
                    # send the whole claimed batch): plain atexit handlers run after that.
                    getattr(threading, "_register_atexit", atexit.register)(self.stop)
                    self._pid = os.getpid()
                thread.start()
            loop = self._running[0]
        loop.wake()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread: the emails on the wire finish, the rest are given back."""
        with self._lock:
            running, self._running = self._running, None
        if running is not None:
            running[0].stop()
            running[1].join(timeout)
