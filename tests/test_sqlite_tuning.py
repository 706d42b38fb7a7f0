"""``tune_sqlite``: the settings each SQLite file connection gets, and
threads signing up at once on one file all succeeding.

The latency under a threaded gunicorn is measured by ``benchmarks/sqlite_threaded.py``,
not asserted here; a full file and a read-only one are in tests/test_database_outage.py.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_confirm_mail.sqlite import BUSY_TIMEOUT as SQLITE_BUSY_TIMEOUT
from tests.apps import User, db

THREADS = 8
SIGNUPS_PER_THREAD = 15


def _pragmas(app: Flask) -> tuple[str, int, int]:
    """journal_mode, synchronous and busy_timeout of a connection from the app's pool."""
    with app.app_context(), db.engine.connect() as connection:

        def pragma(name: str) -> object:
            return connection.exec_driver_sql(f"PRAGMA {name}").scalar()

        return (
            str(pragma("journal_mode")),
            int(str(pragma("synchronous"))),
            int(str(pragma("busy_timeout"))),
        )


@pytest.mark.parametrize(
    ("tuning", "expected"),
    [
        # WAL, synchronous=NORMAL (1), the extension's busy timeout in milliseconds
        (True, ("wal", 1, SQLITE_BUSY_TIMEOUT * 1000)),
        # SQLite's defaults: rollback journal, synchronous=FULL (2), the driver's 5 s
        (False, ("delete", 2, 5000)),
    ],
)
def test_a_sqlite_file_connection_gets_the_tuning_only_when_it_is_on(
    build_app: Callable[..., Flask], tmp_path: Path, tuning: bool, expected: tuple[str, int, int]
) -> None:
    app = build_app(f"sqlite:///{tmp_path / 'app.db'}", config={"TEST_SQLITE_TUNING": tuning})

    assert _pragmas(app) == expected


def test_an_in_memory_database_is_left_alone(build_app: Callable[..., Flask]) -> None:
    app = build_app("sqlite://")

    journal_mode, _, _ = _pragmas(app)
    assert journal_mode == "memory"


def test_threads_signing_up_at_once_on_one_file_all_get_their_user_and_email(
    build_app: Callable[..., Flask], tmp_path: Path
) -> None:
    app = build_app(
        f"sqlite:///{tmp_path / 'app.db'}",
        config={"CONFIRM_MAIL_DELIVERY": "worker", "TEST_SQLITE_TUNING": True},
    )
    outbox = app.extensions["confirm_mail"].outbox_table

    def sign_up(thread: int) -> list[int]:
        client = app.test_client()
        return [
            client.post("/signup", data={"email": f"t{thread}-{i}@example.org"}).status_code
            for i in range(SIGNUPS_PER_THREAD)
        ]

    with ThreadPoolExecutor(THREADS) as pool:
        statuses = [status for answers in pool.map(sign_up, range(THREADS)) for status in answers]

    assert statuses == [201] * (THREADS * SIGNUPS_PER_THREAD)
    with app.app_context():
        users = db.session.scalar(sa.select(sa.func.count()).select_from(User))
        emails = db.session.scalar(sa.select(sa.func.count()).select_from(outbox))
    assert users == emails == THREADS * SIGNUPS_PER_THREAD


def test_sign_ups_commit_while_another_connection_holds_a_read_open(
    build_app: Callable[..., Flask], tmp_path: Path
) -> None:
    # With SQLite's rollback journal an open read blocks every commit until it ends
    # (there, each sign-up would wait out the busy timeout, then answer 503); with WAL
    # the writer goes on.
    path = tmp_path / "app.db"
    app = build_app(
        f"sqlite:///{path}", config={"CONFIRM_MAIL_DELIVERY": "worker", "TEST_SQLITE_TUNING": True}
    )
    client = app.test_client()
    reader = sqlite3.connect(path, isolation_level=None)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM users").fetchone()  # the read stays open

        statuses = [
            client.post("/signup", data={"email": f"r{i}@example.org"}).status_code
            for i in range(5)
        ]

        assert reader.execute("SELECT count(*) FROM users").fetchone() == (0,)  # its snapshot
        reader.execute("COMMIT")
    finally:
        reader.close()
    assert statuses == [201] * 5
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(User)) == 5


def test_opening_a_connection_keeps_the_locks_the_process_holds_on_the_file(
    build_app: Callable[..., Flask], tmp_path: Path
) -> None:
    # A WAL database stays WAL while any connection has it open: each open connection
    # holds a shared lock on the file. Checking whether the file can be written (at each
    # new connection) once opened and closed it, and that close dropped every lock of the
    # process: another process could then switch the file out of WAL under it.
    path = tmp_path / "app.db"
    app = build_app(
        f"sqlite:///{path}", config={"CONFIRM_MAIL_DELIVERY": "worker", "TEST_SQLITE_TUNING": True}
    )
    with app.app_context():
        db.engine.dispose()
        with db.engine.connect() as first:
            first.exec_driver_sql("SELECT count(*) FROM users").scalar()
            with db.engine.connect() as second:  # a new connection: its checks run
                second.exec_driver_sql("SELECT count(*) FROM users").scalar()
                switch = (
                    "import sqlite3, sys\n"
                    "connection = sqlite3.connect(sys.argv[1], timeout=0, isolation_level=None)\n"
                    "try:\n"
                    "    print(connection.execute('PRAGMA journal_mode = DELETE').fetchone()[0])\n"
                    "except sqlite3.OperationalError as exc:\n"
                    "    print(exc)\n"
                )
                other = subprocess.run(
                    [sys.executable, "-c", switch, str(path)],
                    capture_output=True, text=True, timeout=30, check=True,
                )  # fmt: skip
            assert first.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"

    assert other.stdout.strip() == "database is locked"
