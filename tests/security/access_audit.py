"""Watching for file and network access with a Python audit hook (PEP 578)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class AccessAudit:
    """Records ``open`` and ``socket.connect`` audit events while :meth:`watch` is active.

    Audit hooks cannot be removed, so one hook is installed per process (at import) and
    it records only while a test watches.
    """

    def __init__(self) -> None:
        self._watching = False
        self._lock = threading.Lock()
        self.opened: list[str] = []
        self.connected: list[Any] = []

    def hook(self, event: str, args: tuple[Any, ...]) -> None:
        if not self._watching:
            return
        if event == "open" and args and isinstance(args[0], (str, bytes)):
            with self._lock:
                self.opened.append(str(args[0]))
        elif event == "socket.connect":
            with self._lock:
                self.connected.append(args[1] if len(args) > 1 else args)

    @contextmanager
    def watch(self) -> Iterator[AccessAudit]:
        """Record from now until the block ends (earlier records are cleared)."""
        with self._lock:
            self.opened.clear()
            self.connected.clear()
        self._watching = True
        try:
            yield self
        finally:
            self._watching = False


AUDIT = AccessAudit()
sys.addaudithook(AUDIT.hook)
