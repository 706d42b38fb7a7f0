"""What every scenario gets: the run's size, a work directory, PostgreSQL, a logger."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from benchmarks.postgres import PostgresServer

T = TypeVar("T")


@dataclass
class BenchContext:
    """The run's settings and shared resources.

    :param quick: the ``--quick`` run: fewer rounds, smaller sizes, under a minute.
    :param workdir: a fresh directory for database files and child processes' logs.
    :param postgres: the PostgreSQL server, or ``None`` (``postgres_missing`` says why).
    :param tiny: the smoke test's sizes: just enough to produce every figure once.
    :param delivery_smtp_delay: seconds the SMTP server of the delivery-throughput scenario
        waits before answering each message (``--smtp-delay-ms``; 0 by default).
    """

    quick: bool
    workdir: Path
    postgres: PostgresServer | None = None
    postgres_missing: str = "no PostgreSQL"
    tiny: bool = False
    delivery_smtp_delay: float = 0.0
    verbose: bool = True
    _databases: int = field(default=0, repr=False)

    def size(self, full: T, quick: T, tiny: T | None = None) -> T:
        """Pick the value for this run's size."""
        if self.tiny:
            return quick if tiny is None else tiny
        return quick if self.quick else full

    def log(self, message: str) -> None:
        """Progress, on standard error."""
        if self.verbose:
            print(f"  .. {message}", file=sys.stderr, flush=True)

    def sqlite_url(self, name: str) -> str:
        """A SQLite file database in the work directory (new file name each call)."""
        self._databases += 1
        path = self.workdir / f"{self._databases:02d}-{name}.db"
        return f"sqlite:///{path}"

    def postgres_url(self, name: str) -> str | None:
        """A fresh PostgreSQL database, or ``None`` without PostgreSQL."""
        if self.postgres is None:
            return None
        self._databases += 1
        name = f"bench_{os.getpid()}_{self._databases:02d}_{name.replace('-', '_')}"
        return self.postgres.database(name[:63])

    def log_path(self, name: str) -> Path:
        return self.workdir / "logs" / f"{name}.log"
