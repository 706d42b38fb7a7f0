"""CatLoader while its database is gone: a 503 with Retry-After, nothing half saved, and
service again once the database is back, without a restart."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask

from example_catloader.extensions import db
from example_catloader.models import User
from tests.catloader.web_client import CatLoaderClient


def _users(app: Flask) -> list[str]:
    with app.app_context():
        emails = [user.email for user in db.session.query(User).all()]
        db.session.remove()
        return emails


def test_an_outage_is_a_503_then_service_resumes(
    make_catloader: Callable[..., Flask], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    database = folder / "catloader.db"
    app = make_catloader({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{database}"})
    client = CatLoaderClient(app)
    token = client.csrf()  # the form came from a page served before the outage
    assert client.signup("before@example.org").status_code == 303  # control
    client.logout()
    saved = tmp_path / "saved.db"
    with app.app_context():
        db.session.remove()
        db.engine.dispose()
    shutil.copy(database, saved)
    shutil.rmtree(folder)  # the database goes away

    form = {"csrf_token": token, "email": "during@example.org", "password": "x" * 12}
    with caplog.at_level(logging.WARNING):
        page = client.http.post("/auth/signup", data=form)
        answer = client.http.post("/auth/signup", data=form, headers={"Accept": "application/json"})
    assert page.status_code == 503 and page.headers["Retry-After"] == "30"
    assert "Back in a minute" in page.get_data(as_text=True)
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "30"
    assert answer.json is not None and answer.json["error"] == "service unavailable"
    assert any("Database unavailable" in r.getMessage() for r in caplog.records)

    folder.mkdir()
    shutil.copy(saved, database)  # the database is back
    assert client.signup("after@example.org").status_code == 303
    assert sorted(_users(app)) == ["after@example.org", "before@example.org"]
