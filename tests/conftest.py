"""Fixtures: databases (SQLite and PostgreSQL), SMTP servers, apps, a clock; and the lanes.

Lanes: ``pytest`` runs the fast lane, ``addopts`` in pyproject.toml deselecting the markers
below; ``scripts/test`` (CI) runs everything. :func:`pytest_collection_modifyitems` adds the
markers from the tables here, so that the test modules need no marker lines.
"""

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

# ------------------------------------------------------------------------------- lanes
#: Tests that use one of these fixtures need the service behind it.
MARKS_BY_FIXTURE = {
    "postgres_url": "postgres",
    "redis_url": "redis",
    "private_redis": "redis",
    "chromium": "browser",
}
#: Whole files, by file name wherever they sit under tests/ (and every file in tests/faults/).
MARKS_BY_FILE = {
    "test_benchmarks_smoke.py": "slow",  # runs the benchmarks, some in child processes
    "test_gunicorn_logs.py": "slow",  # a gunicorn per test
    "test_celery.py": "celery",  # celery workers on redis-server
    "test_rq.py": "rq",  # rq workers on redis-server
    "test_outages.py": "faults",
}
#: Single tests, by function name (parameters aside): each takes a second or more, mostly a
#: child process of its own; a faster test of the same feature stays in the fast lane.
MARKS_BY_TEST = {
    # benchmarks and timing
    "test_the_resend_timing_benchmark_runs": "slow",
    "test_delay_does_not_block_other_clients": "slow",
    # a process of their own: worker, `flask` command, gunicorn, `flask run`
    "test_send_in_thread_mode_has_sent_the_email_when_it_exits": "slow",
    "test_two_worker_processes_never_send_one_reminder_twice": "slow",
    "test_a_running_worker_sends_reminders_as_they_come_due": "slow",
    "test_a_worker_process_delivers_the_notice": "slow",
    "test_worker_process_delivers_to_the_shared_mailbox": "slow",
    "test_init_db_creates_the_tables": "slow",
    "test_init_app_redacts_flask_and_werkzeug_logs_and_a_failed_delivery_is_printed": "slow",
    "test_legacy_off_is_404_under_flask_run": "slow",
    "test_starttls_and_auth": "slow",
    "test_a_live_mailer_answers_fuzzed_requests_without_an_internal_error": "slow",
    "test_failed_sends_do_not_count_against_the_rate_limit": "slow",  # SMTP retry waits
    # faults under real processes: a database going away, SIGTERM, a killed worker
    "test_a_server_started_on_a_read_only_file_serves_once_its_mode_is_restored": "faults",
    "test_postgresql_down_under_load_is_503_never_500_and_recovers": "faults",
    "test_a_batch_that_outlasts_its_lease_is_sent_once": "faults",
    "test_sigterm_finishes_the_emails_on_the_wire_and_gives_back_the_rest": "faults",
    "test_thread_mode_gives_back_its_batch_at_process_exit": "faults",
    "test_a_database_restart_after_sending_does_not_send_the_batch_again": "faults",
    "test_a_worker_logs_each_failed_batch_and_outbox_shows_the_last_error": "faults",
    "test_killed_worker_leaves_messages_for_the_next": "faults",
}


_UNMATCHED = pytest.StashKey[list[str]]()


def _lane_marks(item: pytest.Item) -> set[str]:
    fixtures = getattr(item, "fixturenames", ())
    marks = {mark for fixture, mark in MARKS_BY_FIXTURE.items() if fixture in fixtures}
    if item.path.name in MARKS_BY_FILE:
        marks.add(MARKS_BY_FILE[item.path.name])
    if item.path.parent.name == "faults":
        marks.add("faults")
    function = getattr(item, "originalname", item.name)
    if function in MARKS_BY_TEST:
        marks.add(MARKS_BY_TEST[function])
    return marks


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the tests of the slower lanes (see the tables above)."""
    for item in items:
        for mark in sorted(_lane_marks(item)):
            item.add_marker(mark)
    # A renamed test would fall back into the fast lane: say so when collecting everything.
    if config.args_source is pytest.Config.ArgsSource.TESTPATHS:
        found = {getattr(item, "originalname", item.name) for item in items}
        config.stash[_UNMATCHED] = sorted(set(MARKS_BY_TEST) - found)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    for name in config.stash.get(_UNMATCHED, []):
        terminalreporter.write_line(f"tests/conftest.py MARKS_BY_TEST: no test is named {name}")


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
