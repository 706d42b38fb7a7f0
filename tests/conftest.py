"""Fixtures: databases (SQLite and PostgreSQL), SMTP servers, apps, a clock."""

from __future__ import annotations

import functools
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import time_machine
from flask import Flask

from flask_confirm_mail import stop_delivery
from tests.apps import create_app, db
from tests.support.fixtures import *  # noqa: F401,F403
from tests.support.smtp_server import SMTPSink


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """A fresh database: a SQLite file, then the PostgreSQL server of scripts/test."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'app.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def build_app(smtp_server: SMTPSink) -> Iterator[Callable[..., Flask]]:
    """Build test apps (tests/apps.py) on a given database, mailing to ``smtp_server``."""
    apps: list[Flask] = []

    def build(database_url: str, **kwargs: Any) -> Flask:
        config = {"MAIL_SERVER": smtp_server.host, "MAIL_PORT": smtp_server.port}
        config.update(kwargs.pop("config", {}))
        app = create_app(database_url, config=config, **kwargs)
        apps.append(app)
        return app

    yield build
    for app in apps:
        stop_delivery(app)
        with app.app_context():
            db.session.remove()
            db.drop_all()
            db.engine.dispose()


@pytest.fixture
def make_app(build_app: Callable[..., Flask], database_url: str) -> Callable[..., Flask]:
    """Build test apps on ``database_url`` (SQLite, then PostgreSQL)."""
    return functools.partial(build_app, database_url)


@pytest.fixture(params=["mixin", "legacy"])
def shape(request: pytest.FixtureRequest) -> str:
    """Both user-model shapes: the mixin, and the original's table with a boolean."""
    value: str = request.param
    return value


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    """The mixin-shaped app with ``sync`` delivery (pytest-flask's ``client`` uses it)."""
    return make_app()


@pytest.fixture
def clock() -> Iterator[time_machine.Coordinates]:
    """Time under the test's control: ``clock.shift(seconds)``, ``clock.move_to(...)``."""
    with time_machine.travel(1_900_000_000, tick=False) as traveller:
        yield traveller


LINK_RE = re.compile(r"https://app\.example\.com/confirm/[A-Za-z0-9_.-]+")


def link_from(mail: Any) -> str:
    """The confirmation link in a received mail's text part (checked against the HTML)."""
    text = mail.message.get_body(("plain",)).get_content()
    html = mail.message.get_body(("html",)).get_content()
    links = LINK_RE.findall(text)
    assert len(set(links)) == 1, text
    assert links[0] in html
    return str(links[0])


@pytest.fixture
def database_that_goes_away(
    build_app: Callable[..., Flask], tmp_path: Path
) -> Iterator[Callable[..., tuple[Flask, Callable[[], None]]]]:
    """Build an app on a SQLite file (``worker`` delivery, extra ``config`` merged) with a
    switch that takes the file away: ``app, go_down = database_that_goes_away(config)``."""
    folder = tmp_path / "db"

    def build(config: dict[str, Any] | None = None) -> tuple[Flask, Callable[[], None]]:
        folder.mkdir()
        settings = {"CONFIRM_MAIL_DELIVERY": "worker", **(config or {})}
        app = build_app(f"sqlite:///{folder / 'app.db'}", config=settings)

        def go_down() -> None:
            with app.app_context():
                db.session.remove()
                db.engine.dispose()
            shutil.rmtree(folder)

        return app, go_down

    yield build
    folder.mkdir(exist_ok=True)  # back (empty) for the apps' teardown
