"""Instant wake-up of ``flask confirm-mail worker`` on PostgreSQL: ``LISTEN`` for the
``NOTIFY`` that the outbox sends in the transaction that writes its rows.

PostgreSQL delivers a notification when the transaction that sent it commits, so an idle
worker claims a new email a few milliseconds after the sign-up's commit instead of at its
next poll. Polling (``CONFIRM_MAIL_POLL_INTERVAL``) stays as the safety net: for retries
coming due, a notification missed while the listener reconnected, other databases.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import sqlalchemy as sa

from .outbox import NOTIFY_CHANNEL

logger = logging.getLogger("flask_confirm_mail")

#: Seconds between two waits for notifications (how fast the listener sees a stop).
LISTEN_SLICE = 1.0
RECONNECT_FIRST = 0.5
RECONNECT_MAX = 10.0


class OutboxListener:
    """A daemon thread holding one connection of ``engine`` that ``LISTEN``\\ s on the
    outbox channel and calls ``wake`` for each notification (and after each reconnect,
    since a notification may have been missed meanwhile).

    :param engine: a PostgreSQL engine with the psycopg (3) driver.
    :param wake: called from the listener's thread; must be quick (set an event).
    """

    def __init__(self, engine: sa.Engine, wake: Callable[[], None]) -> None:
        self.engine = engine
        self.wake = wake
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="confirm-mail-listen", daemon=True)
        #: Set once the first ``LISTEN`` is in place (tests wait for it).
        self.listening = threading.Event()

    def start(self) -> OutboxListener:
        self._thread.start()
        return self

    def stop(self) -> None:
        """End the thread within about a second."""
        self._stop.set()

    def _run(self) -> None:
        delay = RECONNECT_FIRST
        while not self._stop.is_set():
            try:
                self._listen()
                delay = RECONNECT_FIRST
            except (sa.exc.DBAPIError, OSError) as exc:
                logger.warning(
                    "The outbox listener lost its database connection (%s); polling until "
                    "it reconnects in %.1f s",
                    type(exc).__name__,
                    delay,
                )
                self._stop.wait(delay)
                delay = min(RECONNECT_MAX, delay * 2)

    def _listen(self) -> None:
        conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            conn.exec_driver_sql(f"LISTEN {NOTIFY_CHANNEL}")
            driver = conn.connection.driver_connection
            self.listening.set()
            self.wake()
            while not self._stop.is_set():
                try:
                    for _ in driver.notifies(timeout=LISTEN_SLICE):  # type: ignore[union-attr]
                        self.wake()
                except Exception as exc:  # psycopg.Error; psycopg is an optional import
                    raise sa.exc.DBAPIError(None, None, exc) from exc
        finally:
            # A connection that listened stays out of the pool: notifications would
            # pile up on it.
            conn.invalidate()
            conn.close()


def listener_for(engine: sa.Engine, wake: Callable[[], None]) -> OutboxListener | None:
    """A started :class:`OutboxListener` when ``engine`` is PostgreSQL through psycopg 3,
    else ``None`` (the loop polls)."""
    if engine.dialect.name != "postgresql" or engine.dialect.driver != "psycopg":
        return None
    return OutboxListener(engine, wake).start()
