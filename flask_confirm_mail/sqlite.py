"""Opt-in tuning of a SQLite file database for a threaded or multi-process server.

``init_app`` never touches the app's engine. An app that serves real traffic from a SQLite
file calls :func:`tune_sqlite` once, after ``db.init_app(app)``::

    from flask_confirm_mail.sqlite import tune_sqlite

    with app.app_context():
        tune_sqlite(db.engine)

With SQLite's default rollback journal every reader blocks the writer's commit, so under
``gunicorn --threads`` sign-ups queue behind each other until "database is locked".
Write-ahead logging lets readers and one writer work at once; ``synchronous=NORMAL`` is
safe with WAL (a power cut may lose the last commits, never corrupt the file) and makes a
commit one write; a longer busy timeout lets a writer wait its turn instead of failing.
"""

from __future__ import annotations

import os
from typing import Any

import sqlalchemy as sa

#: Seconds a connection waits for the write lock before "database is locked".
BUSY_TIMEOUT = 15
#: Driver errors after which a connection cannot be trusted to write again.
_UNUSABLE_CONNECTION = ("readonly database", "disk is full", "disk i/o error")


def tune_sqlite(engine: sa.Engine) -> None:
    """Use WAL, ``synchronous=NORMAL`` and a 15 s busy timeout on ``engine``'s connections,
    and drop connections from the pool that a full or read-only file made unusable.

    Does nothing for other databases and for ``:memory:``; calling it twice is harmless.
    """
    path = engine.url.database
    if engine.dialect.name != "sqlite" or path in (None, "", ":memory:"):
        return
    if sa.event.contains(engine, "connect", _on_connect):
        return
    sa.event.listen(engine, "connect", _on_connect)
    sa.event.listen(engine, "handle_error", _on_error)
    _drop_read_only_connections(engine, path)
    engine.dispose()  # connections opened before now reconnect with the settings


def _on_connect(dbapi_connection: Any, connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT * 1000}")
        mode = cursor.execute("PRAGMA journal_mode = WAL").fetchone()
        if mode and str(mode[0]).lower() == "wal":
            cursor.execute("PRAGMA synchronous = NORMAL")
    finally:
        cursor.close()


def _on_error(context: Any) -> None:
    message = str(context.original_exception).lower()
    if any(text in message for text in _UNUSABLE_CONNECTION):
        # Roll the driver's transaction back before the pool closes the connection: after
        # "disk is full" in a WAL transaction, closing without a rollback leaves the
        # file's write lock held, and every later write fails until a restart.
        try:
            context.connection.connection.dbapi_connection.rollback()
        except Exception:  # noqa: BLE001 - the connection is being dropped anyway
            pass
        context.is_disconnect = True  # the pool discards it; the next checkout reconnects


def _drop_read_only_connections(engine: sa.Engine, path: str) -> None:
    """SQLite keeps a connection opened on a read-only file read-only after the file is
    made writable: remember such connections and hand none out once it can be written."""

    def on_connect(dbapi_connection: Any, connection_record: Any) -> None:
        connection_record.info["read_only_file"] = not _writable(path)

    def on_checkout(dbapi_connection: Any, connection_record: Any, proxy: Any) -> None:
        if connection_record.info.get("read_only_file") and _writable(path):
            raise sa.exc.DisconnectionError("opened on a read-only file, now writable")

    sa.event.listen(engine, "connect", on_connect)
    sa.event.listen(engine, "checkout", on_checkout)


def _writable(path: str) -> bool:
    """Whether this process may write ``path`` (a missing file counts: SQLite creates it).

    Asked with access(2), never by opening the file: closing any descriptor of a file drops
    every POSIX lock the process holds on it, releasing the locks of this process's other
    SQLite connections.
    """
    if not os.path.exists(path):
        return True
    return os.access(path, os.W_OK, effective_ids=True)
