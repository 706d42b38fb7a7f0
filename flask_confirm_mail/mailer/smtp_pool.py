"""A few SMTP sessions kept open between requests, so each email skips the handshake.

Each request borrows one :class:`~flask_confirm_mail.smtp.SMTPSession` (so threads never
share a connection), and gives it back when the email went out. A session left idle
longer than ``idle_seconds`` is closed rather than reused: servers drop idle clients,
and a dropped connection would cost the caller a retry.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ..smtp import SMTPSession, SMTPSettings

__all__ = ["SMTPSessionPool"]


class SMTPSessionPool:
    """Lends :class:`SMTPSession` objects for one send each.

    :param settings: where and how to reach the SMTP server.
    :param max_idle: how many idle sessions to keep.
    :param idle_seconds: how long an idle session may be reused.
    """

    def __init__(
        self,
        settings: SMTPSettings,
        *,
        max_idle: int = 4,
        idle_seconds: float = 20.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.max_idle = max_idle
        self.idle_seconds = idle_seconds
        self._clock = clock
        self._idle: list[tuple[float, SMTPSession]] = []
        self._lock = threading.Lock()

    def send(self, sender: str, recipient: str, message: bytes) -> None:
        """Send one message on a borrowed session.

        :raises ~flask_confirm_mail.errors.DeliveryError: as :meth:`SMTPSession.send`.
        """
        session = self._borrow()
        try:
            session.send(sender, recipient, message)
        except BaseException:
            session.close()
            raise
        self._give_back(session)

    def _borrow(self) -> SMTPSession:
        with self._lock:
            now = self._clock()
            stale = [s for since, s in self._idle if now - since > self.idle_seconds]
            self._idle = [(since, s) for since, s in self._idle if now - since <= self.idle_seconds]
            borrowed = self._idle.pop()[1] if self._idle else None
        for session in stale:
            session.close()
        return borrowed or SMTPSession(self.settings)

    def _give_back(self, session: SMTPSession) -> None:
        with self._lock:
            if len(self._idle) < self.max_idle:
                self._idle.append((self._clock(), session))
                return
        session.close()

    def close(self) -> None:
        """Close every idle session (QUIT)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for _, session in idle:
            session.close()
