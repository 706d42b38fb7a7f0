"""signup_view and confirmed_required on async views, and OPTIONS let through; and
confirmed_required in an app with Flask-Login's session and token logins.

Flask runs an async view with asgiref's ``async_to_sync``, which refuses a thread that
already runs an event loop; Playwright's sync API (the browser tests) leaves one running in
the test process's main thread. Like a WSGI server's worker thread, each request here runs
in a thread of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest
from flask import Flask
from werkzeug.test import TestResponse

from tests.apps import EXTERNAL_URL, User, add_flask_login, db, user_model
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


# --- Flask-Login: session and token users, web pages and API routes ----------------------

JSON = {"Accept": "application/json"}
GETTER = pytest.mark.parametrize("getter", [True, False], ids=["user_getter", "no_getter"])


@pytest.fixture
def mixed_app(make_app: Any, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Flask]:
    """Build the test app with :func:`~tests.apps.add_flask_login` (``getter=False``: its
    ``user_getter`` taken away, Flask-Login alone)."""
    monkeypatch.setattr(User, "is_authenticated", True, raising=False)
    monkeypatch.setattr(User, "is_active", True, raising=False)
    monkeypatch.setattr(User, "get_id", lambda self: str(self.id), raising=False)

    def build(*, getter: bool = True) -> Flask:
        app: Flask = make_app()
        add_flask_login(app)
        if not getter:
            app.extensions["confirm_mail"].user_getter = None
        return app

    return build


def sign_up(app: Flask, smtp_server: SMTPSink, email: str, *, confirm: bool) -> int:
    """A new user's id, signed up (and confirmed by its link) from a client of its own."""
    client = app.test_client()
    uid: int = client.post("/signup", data={"email": email}).json["id"]
    if confirm:
        mail = next(m for m in smtp_server.wait_for(1) if m.rcpt_tos == [email])
        assert client.post(link_from(mail).removeprefix(EXTERNAL_URL)).status_code == 200
    return uid


def bearer(uid: int) -> dict[str, str]:
    return {"Authorization": f"Bearer token-{uid}", **JSON}


@GETTER
def test_a_confirmed_token_user_gets_the_api_route(
    mixed_app: Callable[..., Flask], smtp_server: SMTPSink, getter: bool
) -> None:
    app = mixed_app(getter=getter)
    uid = sign_up(app, smtp_server, "token@example.org", confirm=True)
    response = app.test_client().get("/api/members", headers=bearer(uid))
    assert response.status_code == 200 and response.json == {"members": "only"}


@GETTER
def test_an_unconfirmed_token_user_gets_the_json_403(
    mixed_app: Callable[..., Flask], smtp_server: SMTPSink, getter: bool
) -> None:
    app = mixed_app(getter=getter)
    uid = sign_up(app, smtp_server, "waiting@example.org", confirm=False)
    response = app.test_client().get("/api/members", headers=bearer(uid))
    assert response.status_code == 403 and response.json["status"] == "unconfirmed"


@GETTER
def test_an_anonymous_browser_gets_the_login_redirect(
    mixed_app: Callable[..., Flask], smtp_server: SMTPSink, getter: bool
) -> None:
    app = mixed_app(getter=getter)
    client = app.test_client()
    response = client.get("/members")
    assert response.status_code == 302
    assert response.headers["Location"] == "/login-page?next=%2Fmembers"
    uid = sign_up(app, smtp_server, "web@example.org", confirm=True)
    client.post(f"/flask-login/{uid}")  # Flask-Login's session, not the getter's
    assert client.get("/members").data == b"members only"


@GETTER
def test_an_anonymous_json_client_gets_a_json_401(
    mixed_app: Callable[..., Flask], getter: bool
) -> None:
    client = mixed_app(getter=getter).test_client()
    for headers in (JSON, {"Authorization": "Bearer token-404", **JSON}):
        response = client.get("/api/members", headers=headers)
        assert response.status_code == 401, headers
        assert response.json == {"status": "unauthenticated", "error": "login_required"}


def test_an_anonymous_json_client_gets_a_json_401_without_flask_login(make_app: Any) -> None:
    client = make_app().test_client()
    response = client.get("/members", headers=JSON)
    assert response.status_code == 401
    assert response.json == {"status": "unauthenticated", "error": "login_required"}
    assert client.get("/members").status_code == 401  # a page: Flask's 401, as before


@GETTER
def test_the_apps_unauthorized_handler_answers_every_anonymous_client(
    mixed_app: Callable[..., Flask], getter: bool
) -> None:
    app = mixed_app(getter=getter)
    app.login_manager.unauthorized_handler(  # type: ignore[attr-defined]
        lambda: ({"app": "says no"}, 401)
    )
    client = app.test_client()
    for path, headers in (("/api/members", JSON), ("/members", {})):
        response = client.get(path, headers=headers)
        assert response.status_code == 401 and response.json == {"app": "says no"}, path


def test_a_getter_returning_flask_logins_anonymous_user_means_nobody(
    mixed_app: Callable[..., Flask],
) -> None:
    from flask_login import current_user

    app = mixed_app()
    app.extensions["confirm_mail"].user_getter = lambda: current_user._get_current_object()
    response = app.test_client().get("/members")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login-page")
