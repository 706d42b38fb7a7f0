"""Creating CatLoader's tables: once, by ``flask --app example_catloader init-db``, and
again (harmlessly) by every process that boots, tolerating other processes doing the same.

Several gunicorn workers booting on an empty database all find a table missing and all
issue ``CREATE TABLE``; all but one then fail with "already exists". Such a failure means
another process won the race: look again, and the tables are there.
"""

from __future__ import annotations

import click
from flask import Flask
from sqlalchemy.exc import DatabaseError

from .models import db

ATTEMPTS = 5
_LOST_RACE = ("already exists", "duplicate key")


def create_tables(app: Flask) -> None:
    """Create the tables that do not exist yet, in the app's database.

    The connection this opened is closed, not kept in the pool: a server that loads the
    app and then forks its workers (gunicorn ``--preload``) would hand that one
    connection to every worker, and processes sharing one SQLite (or PostgreSQL)
    connection corrupt what it sends.
    """
    with app.app_context():
        try:
            _create_all_despite_races()
        finally:
            for engine in db.engines.values():
                engine.dispose()


def _create_all_despite_races() -> None:
    for attempt in range(1, ATTEMPTS + 1):
        try:
            db.create_all()
            return
        except DatabaseError as exc:
            db.session.rollback()
            lost_race = any(text in str(exc.orig).lower() for text in _LOST_RACE)
            if not lost_race or attempt == ATTEMPTS:
                raise


def register_init_db(app: Flask) -> None:
    @app.cli.command("init-db")
    def init_db() -> None:
        """Create CatLoader's tables (scripts/demo runs it before starting the server)."""
        create_tables(app)
        click.echo("CatLoader's tables are ready.")
