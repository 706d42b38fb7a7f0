"""Opt-in tuning of a SQLite file database for a threaded or multi-process server.

With the default rollback journal every reader blocks the writer's commit, so threaded
sign-ups queue until "database is locked". WAL lets readers and one writer work at once;
``synchronous=NORMAL`` is safe with WAL (a power cut may lose the last commits, never
corrupt the file); a longer busy timeout lets a writer wait its turn instead of failing.
"""

from __future__ import annotations

import os
from typing import Any

import sqlalchemy as sa

#: Seconds a connection waits for the write lock before "database is locked".
BUSY_TIMEOUT = 15


def tune_sqlite(engine: sa.Engine) -> None:
    """Use WAL, ``synchronous=NORMAL`` and a 15 s busy timeout on ``engine``'s connections,
    and drop connections that a full or read-only file made unusable. Call it once the engine
    exists (``init_app`` never touches it); nothing for other databases or ``:memory:``;
    calling it twice is harmless."""
    path = engine.url.database
    if engine.dialect.name != "sqlite" or path in (None, "", ":memory:"):
        return
    if sa.event.contains(engine, "connect", _on_connect):
        return

    # SQLite keeps a connection opened on a read-only file read-only after the file is made
    # writable: remember such connections and hand none out once it can be written.
    def mark_read_only(dbapi_connection: Any, connection_record: Any) -> None:
        connection_record.info["read_only_file"] = not _writable(path)

    # A full disk: the WAL keeps every page since the last checkpoint (up to 1000), so once
    # space is freed, copy it into the database and truncate it before the next write, or
    # the WAL's own growth fills the freed space again.
    full = [False]

    def on_checkout(dbapi_connection: Any, connection_record: Any, proxy: Any) -> None:
        if connection_record.info.get("read_only_file") and _writable(path):
            raise sa.exc.DisconnectionError("opened on a read-only file, now writable")
        if full[0]:
            try:
                busy, _, _ = dbapi_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                full[0] = bool(busy)
            except Exception:  # noqa: BLE001 - still full: the write will say so
                pass

    def on_error(context: Any) -> None:
        if "disk is full" in str(context.original_exception).lower():
            full[0] = True
        _on_error(context)

    sa.event.listen(engine, "connect", _on_connect)
    sa.event.listen(engine, "handle_error", on_error)
    sa.event.listen(engine, "connect", mark_read_only)
    sa.event.listen(engine, "checkout", on_checkout)
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
    # After these the connection cannot be trusted to write again. Roll back before the pool
    # closes it: after "disk is full" in WAL, closing without it leaves the write lock held.
    if any(text in message for text in ("readonly database", "disk is full", "disk i/o error")):
        try:
            context.connection.connection.dbapi_connection.rollback()
        except Exception:  # noqa: BLE001 - the connection is being dropped anyway
            pass
        context.is_disconnect = True  # the pool discards it; the next checkout reconnects


def _writable(path: str) -> bool:
    """Whether this process may write ``path`` and its WAL and shared-memory files (SQLite
    creates missing ones; a connection opened while any was read-only stays read-only).
    Asked with access(2), not by opening them: closing any descriptor of a file drops every
    POSIX lock the process holds on it, those of its SQLite connections too."""
    return all(
        not os.path.exists(name) or os.access(name, os.W_OK, effective_ids=True)
        for name in (path, f"{path}-wal", f"{path}-shm")
    )
