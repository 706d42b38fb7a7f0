"""CatLoader's settings: embedded defaults, FLASK_* variables, the instance folder."""

from __future__ import annotations

import stat
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask

from example_catloader.config import instance_secret_key
from flask_confirm_mail.confirmation import get_flow
from flask_confirm_mail.mailer.remote import RemoteTransport
from flask_confirm_mail.transport import SMTPTransport


def test_embedded_defaults(make_catloader: Callable[..., Flask], instance: Path) -> None:
    app = make_catloader(bare=True)

    assert app.config["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{instance / 'catloader.db'}"
    assert (instance / "catloader.db").is_file()
    settings = get_flow(app).settings
    assert settings.link_prefix == "http://127.0.0.1:5000/confirm/"
    assert settings.delivery == "thread"
    assert settings.app_name == "CatLoader"
    assert settings.confirmed_endpoint == "bl_backoffice.listuploads"
    assert isinstance(get_flow(app).transport, SMTPTransport)
    assert app.config["CATLOADER_MAILBOX"] is True
    assert app.config["MAIL_SUPPRESS_SEND"] is True
    assert app.config["CATLOADER_MAILBOX_PAGE"] is False
    assert app.config["MAX_CONTENT_LENGTH"] > app.config["CATLOADER_MAX_PICTURE_BYTES"]


def test_generated_secret_key_is_kept_in_the_instance(
    make_catloader: Callable[..., Flask], instance: Path
) -> None:
    first = make_catloader(bare=True)
    key_file = instance / "secret_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(first.config["SECRET_KEY"]) >= 32
    assert key_file.read_text().strip() == first.config["SECRET_KEY"]

    second = make_catloader(bare=True)
    assert second.config["SECRET_KEY"] == first.config["SECRET_KEY"]

    other = make_catloader(bare=True, instance_path=instance.parent / "elsewhere")
    assert other.config["SECRET_KEY"] != first.config["SECRET_KEY"]


def test_configured_secret_key_writes_no_file(
    make_catloader: Callable[..., Flask], instance: Path
) -> None:
    app = make_catloader({"SECRET_KEY": "configured-secret-0123456789abcdefghij"}, bare=True)
    assert app.config["SECRET_KEY"] == "configured-secret-0123456789abcdefghij"
    assert not (instance / "secret_key").exists()


def test_processes_starting_together_share_one_key(tmp_path: Path) -> None:
    keys: list[str] = []
    barrier = threading.Barrier(8)

    def start() -> None:
        barrier.wait()
        keys.append(instance_secret_key(tmp_path))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(keys) == 8 and len(set(keys)) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["secret_key"]


def test_settings_from_the_environment(
    make_catloader: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    database = tmp_path / "from-env.db"
    monkeypatch.setenv("FLASK_SQLALCHEMY_DATABASE_URI", f"sqlite:///{database}")
    monkeypatch.setenv("FLASK_MAIL_SERVER", "smtp.example.com")
    monkeypatch.setenv("FLASK_MAIL_PORT", "2525")
    monkeypatch.setenv("FLASK_MAIL_USE_TLS", "true")
    monkeypatch.setenv("FLASK_CONFIRM_MAIL_EXTERNAL_URL", "https://cats.example.org")
    monkeypatch.setenv("FLASK_CONFIRM_MAIL_DELIVERY", "worker")
    monkeypatch.setenv("FLASK_CATLOADER_MAX_PICTURE_BYTES", "1000000")

    app = make_catloader(bare=True)

    assert database.is_file()
    assert app.config["MAIL_SERVER"] == "smtp.example.com"
    assert app.config["MAIL_PORT"] == 2525
    assert app.config["MAIL_USE_TLS"] is True
    assert app.config["CATLOADER_MAILBOX"] is False
    assert app.config["MAIL_SUPPRESS_SEND"] is False
    assert app.config["CATLOADER_MAX_PICTURE_BYTES"] == 1_000_000
    assert app.config["MAX_CONTENT_LENGTH"] == 1_000_000 + 64 * 1024
    settings = get_flow(app).settings
    assert settings.link_prefix == "https://cats.example.org/confirm/"
    assert settings.delivery == "worker"


def test_remote_transport_from_the_environment(
    make_catloader: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLASK_CONFIRM_MAIL_MAILER_URL", "http://127.0.0.1:5001/")
    monkeypatch.setenv(
        "FLASK_CONFIRM_MAIL_MAILER_SECRET", "mailer-secret-for-tests-0123456789abcdef"
    )

    app = make_catloader(bare=True)

    assert isinstance(get_flow(app).transport, RemoteTransport)
    assert app.config["CATLOADER_MAILBOX"] is False


def test_instance_folder_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from example_catloader import create_app

    folder = tmp_path / "env-instance"
    monkeypatch.setenv("FLASK_CATLOADER_INSTANCE_PATH", str(folder))
    app = create_app()
    try:
        assert app.instance_path == str(folder)
        assert (folder / "catloader.db").is_file() and (folder / "secret_key").is_file()
    finally:
        with app.app_context():
            from example_catloader.extensions import db

            db.engine.dispose()
