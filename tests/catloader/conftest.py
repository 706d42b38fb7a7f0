"""Fixtures for the CatLoader tests: apps in temporary instance folders, clients."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from example_catloader import create_app
from example_catloader.extensions import db
from flask_confirm_mail import stop_delivery
from tests.catloader.web_client import CatLoaderClient
from tests.support.fixtures import require_ci_or_skip

EXTERNAL_URL = "http://catloader.test"
TEST_CONFIG: dict[str, Any] = {
    "TESTING": True,
    "SECRET_KEY": "catloader-test-secret-key-0123456789abcdef",
    "CONFIRM_MAIL_EXTERNAL_URL": EXTERNAL_URL,
    "CONFIRM_MAIL_DELIVERY": "sync",
    "CATLOADER_MAILBOX_PAGE": True,
    # A real hash, just cheaper than scrypt: the tests sign up many users.
    "CATLOADER_PASSWORD_HASH_METHOD": "pbkdf2:sha256:1000",
}


@pytest.fixture(autouse=True)
def _no_flask_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """CatLoader reads FLASK_* variables: keep the developer's own out of the tests."""
    for name in list(os.environ):
        if name.startswith("FLASK_"):
            monkeypatch.delenv(name)


@pytest.fixture
def instance(tmp_path: Path) -> Path:
    """The instance folder of the test's app."""
    return tmp_path / "instance"


@pytest.fixture
def make_catloader(instance: Path) -> Iterator[Callable[..., Flask]]:
    """Build CatLoader apps with :data:`TEST_CONFIG` plus ``config``; tears them down.

    ``bare=True`` passes only ``config``: the embedded defaults and the environment rule.
    """
    apps: list[Flask] = []

    def make(
        config: dict[str, Any] | None = None,
        *,
        instance_path: Path | None = None,
        bare: bool = False,
    ) -> Flask:
        settings = dict(config or {}) if bare else {**TEST_CONFIG, **(config or {})}
        app = create_app(settings, instance_path=str(instance_path or instance))
        apps.append(app)
        return app

    yield make
    for app in apps:
        stop_delivery(app)
        with app.app_context():
            db.session.remove()
            if not app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
                db.drop_all()
            db.engine.dispose()


@pytest.fixture
def catloader(make_catloader: Callable[..., Flask]) -> Flask:
    """CatLoader with the local mailbox and ``sync`` delivery."""
    return make_catloader()


@pytest.fixture
def cat_client(catloader: Flask) -> CatLoaderClient:
    return CatLoaderClient(catloader)


# --- the browser (tests/catloader/test_browser.py, test_code_entry.py) ---------------------

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """One headless Chromium per test module: Playwright's sync API keeps an event loop
    running in the thread while it is open, so a later test of an async view in the same
    process (Flask's ``ensure_sync``) would fail with "You cannot use AsyncToSync"."""
    if not os.access(CHROMIUM, os.X_OK):
        require_ci_or_skip(f"{CHROMIUM} is missing: scripts/test installs Debian's chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require_ci_or_skip("Playwright for Python is missing: pip install -e '.[test]'")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()
