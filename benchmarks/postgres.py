"""PostgreSQL for the scenarios that need it.

The server named by ``CONFIRM_MAIL_TEST_POSTGRES_URL`` (the one ``scripts/test`` starts)
when it is set; otherwise a throwaway server started by ``scripts/lib/postgres.sh serve``,
the same code ``scripts/test`` uses, stopped when the benchmarks end. Its settings are
the test server's: ``fsync``, ``synchronous_commit`` and ``full_page_writes`` off.
"""

from __future__ import annotations

import os
import subprocess

from benchmarks.processes import REPO_ROOT, child_environment
from tests.support.postgres import fresh_database_url

POSTGRES_URL_ENV = "CONFIRM_MAIL_TEST_POSTGRES_URL"


class PostgresServer:
    """A reachable PostgreSQL server; :meth:`database` makes a fresh database on it."""

    def __init__(self, url: str, process: subprocess.Popen[str] | None = None) -> None:
        self.url = url
        self.started_here = process is not None
        self._process = process

    @classmethod
    def find_or_start(cls) -> tuple[PostgresServer | None, str]:
        """The server, or ``None`` and why there is none."""
        url = os.environ.get(POSTGRES_URL_ENV)
        if url:
            return cls(url), f"PostgreSQL from {POSTGRES_URL_ENV}"
        script = REPO_ROOT / "scripts" / "lib" / "postgres.sh"
        try:
            process = subprocess.Popen(
                ["bash", str(script), "serve"],
                cwd=REPO_ROOT,
                env=child_environment(),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        except OSError as exc:
            return None, f"no PostgreSQL ({exc})"
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        if not line.startswith("postgresql://"):
            process.communicate(timeout=60)
            return None, "no PostgreSQL (scripts/lib/postgres.sh could not start one)"
        return cls(line, process), "a throwaway PostgreSQL started by scripts/lib/postgres.sh"

    def database(self, name: str) -> str:
        """(Re)create the empty database ``name``; its SQLAlchemy URL (psycopg driver)."""
        return fresh_database_url(self.url, name)

    def close(self) -> None:
        """Stop the server if it was started here (closing its helper's stdin stops it)."""
        process, self._process = self._process, None
        if process is None:
            return
        try:
            process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
