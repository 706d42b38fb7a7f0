"""The one place that reads the wall clock, so tests can move time (time-machine)."""

from __future__ import annotations

import time
from datetime import datetime, timezone


def utcnow() -> datetime:
    """Now in UTC, as a naive datetime: what every column of this package stores."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def timestamp() -> int:
    """Now as whole seconds since the epoch, for JWT ``iat`` and ``exp``."""
    return int(time.time())
