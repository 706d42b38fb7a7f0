"""Round 2, family 3 (in part): a database outage answers 503, never a 500, and logs no token."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask

from tests.apps import db
from tests.conftest import link_from
from tests.support.smtp_server import SMTPSink


@pytest.fixture
def outage_app(
    build_app: Callable[..., Flask], tmp_path: Path, smtp_server: SMTPSink
) -> Iterator[tuple[Flask, str, Callable[[], None]]]:
    """An app on a SQLite file with one signed-up user, and a switch that takes the file away."""
    folder = tmp_path / "db"
    folder.mkdir()
    app = build_app(f"sqlite:///{folder / 'app.db'}")
    assert app.test_client().post("/signup", data={"email": "cat@example.org"}).status_code == 201
    path = link_from(smtp_server.wait_for(1)[0]).removeprefix("https://app.example.com")

    def go_down() -> None:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()
        shutil.rmtree(folder)

    yield app, path, go_down
    folder.mkdir(exist_ok=True)  # the database is back (empty) for the app's teardown


def test_the_link_page_works_before_the_outage(outage_app: tuple[Flask, str, object]) -> None:
    """Control: the same requests are served while the database is there."""
    app, path, _ = outage_app
    assert app.test_client().get(path).status_code == 200


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("accept", ["text/html", "application/json"])
def test_an_outage_is_a_503_with_retry_after_and_no_token_in_the_log(
    outage_app: tuple[Flask, str, Callable[[], None]],
    caplog: pytest.LogCaptureFixture,
    method: str,
    accept: str,
) -> None:
    app, path, go_down = outage_app
    go_down()
    token = path.rsplit("/", 1)[1]
    with caplog.at_level(logging.DEBUG):
        response = app.test_client().open(path, method=method, headers={"Accept": accept})
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "30"
    assert token not in response.get_data(as_text=True)
    if accept == "application/json":
        assert response.json == {"status": "error", "error": "service unavailable", "saved": False}
    assert any("Database unavailable" in r.getMessage() for r in caplog.records)
    assert all(
        token not in r.getMessage() and token not in (r.exc_text or "") for r in caplog.records
    )


def test_resend_during_an_outage_is_a_503(
    outage_app: tuple[Flask, str, Callable[[], None]],
) -> None:
    app, _, go_down = outage_app
    go_down()
    response = app.test_client().post("/confirm/resend", data={"email": "cat@example.org"})
    assert response.status_code == 503 and response.headers["Retry-After"] == "30"
