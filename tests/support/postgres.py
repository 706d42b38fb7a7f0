"""Helpers for the real PostgreSQL server that ``scripts/test`` starts."""

from __future__ import annotations

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

__all__ = ["fresh_database_url"]


def fresh_database_url(base_url: str, name: str) -> str:
    """(Re)create the empty database ``name`` on the server of ``base_url``.

    :param base_url: a libpq URL of the server, e.g.
        ``postgresql://postgres@127.0.0.1:5433/postgres``.
    :param name: the database to drop (``WITH (FORCE)``, ending its sessions) and create.
    :return: a SQLAlchemy URL for the new database, with the ``psycopg`` driver.
    """
    url = make_url(base_url)
    conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return url.set(drivername="postgresql+psycopg", database=name).render_as_string(
        hide_password=False
    )
