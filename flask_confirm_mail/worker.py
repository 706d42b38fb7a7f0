"""The delivery loop, run by ``flask confirm-mail worker`` and by the in-process sender.

Each loop has its own worker id (host, process, random part), used to hold leases on
claimed messages. Any number of loops may run against one database.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from typing import TYPE_CHECKING

from flask import Flask

from .delivery import BatchReport, deliver_batch, release
from .outbox import ClaimedMessage

if TYPE_CHECKING:
    from .state import ConfirmMailState

logger = logging.getLogger("flask_confirm_mail.worker")


def new_worker_id() -> str:
    """``host:pid:random``, unique per loop."""
    return f"{socket.gethostname()[:64]}:{os.getpid()}:{secrets.token_hex(4)}"


class DeliveryLoop:
    """Deliver batches until stopped; sleep ``poll_interval`` (or until woken) when idle.

    :param app: the application whose outbox this loop drains.
    :param state: that application's confirm-mail state.
    """

    def __init__(self, app: Flask, state: ConfirmMailState, *, poll_interval: float | None = None):
        self.app = app
        self.state = state
        self.worker_id = new_worker_id()
        self.poll_interval = (
            state.settings.poll_interval if poll_interval is None else poll_interval
        )
        self.total = BatchReport()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._held: list[ClaimedMessage] | None = None

    def wake(self) -> None:
        """Look at the outbox now instead of at the next poll."""
        self._wake.set()

    def stop(self) -> None:
        """Finish the current batch, then return from :meth:`run`."""
        self._stop.set()
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run_once(self) -> BatchReport:
        """Deliver one batch; errors are logged, never raised.

        The next batch is claimed in the transaction that records this one's results, and
        given back by :meth:`run` when the loop stops before sending it.
        """
        held, self._held = self._held, None
        try:
            with self.app.app_context():
                report = deliver_batch(
                    self.state,
                    worker_id=self.worker_id,
                    claimed=held,
                    claim_next=not self._stop.is_set(),
                )
        except Exception:
            logger.exception("The delivery loop could not deliver a batch; trying again later")
            return BatchReport()
        self._held = report.next_claimed or None
        for name in ("claimed", "sent", "retried", "dead"):
            setattr(self.total, name, getattr(self.total, name) + getattr(report, name))
        return report

    def run(self, *, until_idle: bool = False) -> BatchReport:
        """Loop until :meth:`stop`; with ``until_idle``, return once nothing is due."""
        while not self._stop.is_set():
            report = self.run_once()
            if report.claimed or self._held:
                continue
            if until_idle:
                break
            self._wake.wait(self.poll_interval)
            self._wake.clear()
        held, self._held = self._held, None
        if held:
            try:
                with self.app.app_context():
                    release(self.state, held, self.worker_id)
            except Exception:
                logger.exception("Could not give back a claimed batch; its lease will expire")
        return self.total


class BackgroundSender:
    """``CONFIRM_MAIL_DELIVERY = "thread"``: a daemon thread running a :class:`DeliveryLoop`.

    Started on first use in each process (so it survives a fork by gunicorn's preloading).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: DeliveryLoop | None = None
        self._thread: threading.Thread | None = None
        self._pid = 0

    def ensure_started(self, app: Flask, state: ConfirmMailState) -> DeliveryLoop:
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and self._pid == os.getpid():
            if thread.is_alive():
                return loop
        with self._lock:
            alive = self._thread is not None and self._thread.is_alive()
            if self._loop is None or not alive or self._pid != os.getpid():
                self._loop = DeliveryLoop(app, state)
                self._thread = threading.Thread(
                    target=self._loop.run, name="confirm-mail-sender", daemon=True
                )
                self._pid = os.getpid()
                self._thread.start()
            return self._loop

    def wake(self, app: Flask, state: ConfirmMailState) -> None:
        self.ensure_started(app, state).wake()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread after its current batch (tests, shutdown)."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is not None and thread is not None:
            loop.stop()
            thread.join(timeout)
