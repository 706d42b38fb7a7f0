"""Shared pytest fixtures; ``tests/conftest.py`` star-imports this module.

Tests that need something from outside Python (PostgreSQL, Redis, Debian's chromium) call
:func:`require_ci_or_skip` when it is missing: outside CI they skip with the reason,
under ``CI=true`` they fail, so a CI run can never pass by skipping them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import NoReturn

import pytest

from tests.support.postgres import fresh_database_url
from tests.support.redis_server import RedisServer, redis_server_binary
from tests.support.smtp_server import SMTPSink

__all__ = [
    "POSTGRES_URL_ENV",
    "REDIS_URL_ENV",
    "SECURE_SMTP_AUTH",
    "in_ci",
    "postgres_url",
    "private_redis",
    "redis_url",
    "require_ci_or_skip",
    "secure_smtp_server",
    "smtp_server",
]

POSTGRES_URL_ENV = "CONFIRM_MAIL_TEST_POSTGRES_URL"
REDIS_URL_ENV = "CONFIRM_MAIL_TEST_REDIS_URL"
SECURE_SMTP_AUTH = ("mailer", "mailer-password")


def in_ci() -> bool:
    """Whether the tests run under CI (environment ``CI=true``)."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def require_ci_or_skip(reason: str) -> NoReturn:
    """Skip the current test because of ``reason``; under CI, fail it instead."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: a missing dependency is a failure)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def smtp_server() -> Iterator[SMTPSink]:
    """A started plain-text :class:`SMTPSink` on a free port of 127.0.0.1."""
    with SMTPSink() as sink:
        yield sink


@pytest.fixture
def secure_smtp_server() -> Iterator[SMTPSink]:
    """A started :class:`SMTPSink` requiring STARTTLS and AUTH as ``SECURE_SMTP_AUTH``."""
    with SMTPSink(tls=True, auth=SECURE_SMTP_AUTH) as sink:
        yield sink


@pytest.fixture(scope="session")
def postgres_url(worker_id: str) -> str:
    """A SQLAlchemy URL of an empty database, one per xdist worker, made once a session."""
    server_url = os.environ.get(POSTGRES_URL_ENV)
    if not server_url:
        require_ci_or_skip("PostgreSQL not available: run scripts/test, which starts one")
    return fresh_database_url(server_url, f"cm_test_{worker_id}")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The URL of the Redis server ``scripts/test`` started, shared by the session.

    Tests keep apart by their keys (token ids, recipients), never by flushing it.
    """
    url = os.environ.get(REDIS_URL_ENV)
    if not url:
        require_ci_or_skip("Redis not available: run scripts/test, which starts one")
    return url


@pytest.fixture
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A ``redis-server`` of the test's own, which it may stop and start again."""
    binary = redis_server_binary()
    if binary is None:
        require_ci_or_skip("redis-server not installed: run scripts/test, which installs it")
    server = RedisServer(binary, tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
