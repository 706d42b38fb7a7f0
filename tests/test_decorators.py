"""signup_view and confirmed_required on async views, and OPTIONS let through.

Flask runs an async view with asgiref's ``async_to_sync``, which refuses a thread that
already runs an event loop; Playwright's sync API (the browser tests) leaves one running in
the test process's main thread. Like a WSGI server's worker thread, each request here runs
in a thread of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from flask import Flask
from werkzeug.test import TestResponse

from tests.apps import db, user_model
from tests.conftest import link_from
from tests.support.smtp_server import SMTPSink

T = TypeVar("T")


def in_thread(call: Callable[[], T]) -> T:
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(call).result()


class ThreadedClient:
    """The app's test client, each request in a fresh thread."""

    def __init__(self, app: Flask) -> None:
        self.client = app.test_client()

    def __getattr__(self, method: str) -> Callable[..., TestResponse]:
        request = getattr(self.client, method)
        return lambda *args, **kwargs: in_thread(lambda: request(*args, **kwargs))


def test_async_signup_view_queues_the_email(make_app: Any, smtp_server: SMTPSink) -> None:
    app: Flask = make_app()
    response = ThreadedClient(app).post("/signup-async", data={"email": "async@example.org"})
    assert response.status_code == 201
    [mail] = smtp_server.wait_for(1)
    assert mail.rcpt_tos == ["async@example.org"]
    assert link_from(mail).startswith("https://app.example.com/confirm/")


def test_async_signup_view_refuses_a_bad_address(make_app: Any, smtp_server: SMTPSink) -> None:
    app: Flask = make_app()
    response = ThreadedClient(app).post("/signup-async", data={"email": "a@x.com, b@y.com"})
    assert response.status_code == 400
    with app.app_context():
        assert db.session.query(user_model("mixin")).count() == 0
    assert smtp_server.messages == []


def test_options_passes_signup_view_without_capturing(make_app: Any, smtp_server: SMTPSink) -> None:
    app: Flask = make_app()
    response = ThreadedClient(app).options("/signup-async", data={"email": "bad, address"})
    assert response.status_code == 204
    assert smtp_server.messages == []


def test_async_confirmed_required(make_app: Any, smtp_server: SMTPSink) -> None:
    app: Flask = make_app()
    client = ThreadedClient(app)
    assert client.get("/members-async").status_code == 401
    client.post("/signup", data={"email": "member@example.org"})
    unconfirmed = client.get("/members-async", headers={"Accept": "application/json"})
    assert unconfirmed.status_code == 403 and unconfirmed.json["status"] == "unconfirmed"
    link = link_from(smtp_server.wait_for(1)[0]).removeprefix("https://app.example.com")
    assert client.post(link).status_code == 200
    confirmed = client.get("/members-async")
    assert confirmed.status_code == 200 and confirmed.text == "members only, async"


def test_options_passes_confirmed_required(make_app: Any) -> None:
    app: Flask = make_app()
    response = ThreadedClient(app).options("/members-async")
    assert response.status_code == 200 and response.text == "members only, async"
