"""Family 9 of security round 2: a per-client limit on resend, through Flask-Limiter.

``CONFIRM_MAIL_RESEND_LIMIT`` limits POSTs to the resend route by client address, the
same for every address submitted, so the answer still says nothing about accounts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask, request
from flask_limiter import Limiter
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import Mapped, mapped_column

from flask_confirm_mail import ConfirmableMixin, ConfirmMail
from flask_confirm_mail.errors import ConfigurationError
from flask_confirm_mail.views import client_network
from tests.apps import base_config
from tests.security.outcomes import sqlite_only
from tests.support.smtp_server import SMTPSink

LIMIT = "5/minute;50/hour"
WAITING = "waiting@example.org"


def _resend(app: Flask, client_address: str, email: str, *, as_json: bool = False) -> Any:
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = client_address
    if as_json:
        return client.post("/confirm/resend", json={"email": email}, buffered=True)
    return client.post("/confirm/resend", data={"email": email}, buffered=True)


@pytest.fixture
def limited(make_app: Callable[..., Flask], smtp_server: SMTPSink) -> Flask:
    """The test app with the limit on, and one account waiting for confirmation."""
    app = make_app(config={"CONFIRM_MAIL_RESEND_LIMIT": LIMIT, "CONFIRM_MAIL_RESEND_COOLDOWN": 0})
    assert app.test_client().post("/signup", data={"email": WAITING}).status_code == 201
    smtp_server.wait_for(1)
    smtp_server.clear()
    return app


@sqlite_only
def test_a_burst_from_one_client_is_limited_with_retry_after(
    limited: Flask, smtp_server: SMTPSink
) -> None:
    answers = [_resend(limited, "203.0.113.7", WAITING, as_json=i % 2 == 1) for i in range(150)]
    statuses = [answer.status_code for answer in answers]
    assert statuses == [202] * 5 + [429] * 145
    assert len(smtp_server.wait_for(5)) == 5, "only the allowed requests did any work"
    for answer in answers[5:]:
        assert 1 <= int(answer.headers["Retry-After"]) <= 61  # a minute, rounded up
    page, body = answers[6], answers[5]  # the form's answer is a page, JSON's is JSON
    assert page.mimetype == "text/html" and b"Too many requests" in page.data
    assert b"Traceback" not in page.data
    assert body.json["status"] == "error" and body.json["error"] == "too many requests"
    assert "Too many requests" in body.json["message"]
    assert body.json["retry_after"] == int(body.headers["Retry-After"])
    # Other clients are not affected.
    assert _resend(limited, "198.51.100.2", WAITING).status_code == 202
    assert _resend(limited, "198.51.100.3", "nobody@example.org", as_json=True).status_code == 202


@sqlite_only
def test_the_limit_answers_the_same_for_every_address(limited: Flask, clock: Any) -> None:
    def statuses(client_address: str, email: str) -> list[tuple[int, bytes]]:
        answers = [_resend(limited, client_address, email, as_json=True) for _ in range(8)]
        return [(answer.status_code, answer.data) for answer in answers]

    waiting = statuses("192.0.2.1", WAITING)
    unknown = statuses("192.0.2.2", "nobody@example.org")
    assert waiting == unknown
    assert [status for status, _ in waiting] == [202] * 5 + [429] * 3
    # Bad input counts too: a client cannot probe more by mixing in invalid addresses.
    invalid = [_resend(limited, "192.0.2.3", "not an address").status_code for _ in range(6)]
    assert invalid == [400] * 5 + [429]


@sqlite_only
def test_without_the_setting_nothing_is_limited(
    make_app: Callable[..., Flask], smtp_server: SMTPSink
) -> None:
    app = make_app(config={"CONFIRM_MAIL_RESEND_COOLDOWN": 0})  # positive control
    statuses = {_resend(app, "203.0.113.7", "nobody@example.org").status_code for _ in range(150)}
    assert statuses == {202}
    assert "limiter" not in app.extensions


@sqlite_only
def test_the_resend_page_itself_is_not_limited(limited: Flask) -> None:
    for _ in range(10):
        _resend(limited, "203.0.113.9", WAITING)
    client = limited.test_client()
    client.environ_base["REMOTE_ADDR"] = "203.0.113.9"
    assert client.get("/confirm/resend").status_code == 200


def test_the_apps_own_limiter_is_used(tmp_path: Any, smtp_server: SMTPSink) -> None:
    app = Flask(__name__)
    app.config.update(
        base_config(
            f"sqlite:///{tmp_path / 'own.db'}", smtp_server, CONFIRM_MAIL_RESEND_LIMIT="2/minute"
        )
    )
    db = SQLAlchemy(app)

    class Member(ConfirmableMixin, db.Model):  # type: ignore[name-defined,misc]
        id: Mapped[int] = mapped_column(primary_key=True)

    # The app names its clients by a header (say, set by its proxy).
    limiter = Limiter(
        lambda: request.headers.get("X-Client", "-"), app=app, storage_uri="memory://"
    )
    ConfirmMail(app, db=db, user_model=Member)
    with app.app_context():
        db.create_all()
    client = app.test_client()

    def resend(who: str) -> int:
        answer = client.post(
            "/confirm/resend", data={"email": WAITING}, headers={"X-Client": who}, buffered=True
        )
        return answer.status_code

    assert [resend("a") for _ in range(3)] == [202, 202, 429]
    assert resend("b") == 202, "the app's key function tells its clients apart"
    assert app.extensions["limiter"] == {limiter}, "no second limiter"
    with app.app_context():
        db.drop_all()
        db.engine.dispose()


@sqlite_only
@pytest.mark.parametrize("bad", ["often", "5/fortnight", "-1/minute"])
def test_a_bad_limit_is_refused_at_init_app(make_app: Callable[..., Flask], bad: str) -> None:
    with pytest.raises(ConfigurationError, match="CONFIRM_MAIL_RESEND_LIMIT"):
        make_app(config={"CONFIRM_MAIL_RESEND_LIMIT": bad})


@sqlite_only
def test_a_client_rotating_addresses_inside_its_ipv6_64_is_one_client(limited: Flask) -> None:
    rotating = [_resend(limited, f"2001:db8:1:2::{i:x}", WAITING).status_code for i in range(8)]
    assert rotating == [202] * 5 + [429] * 3
    # Positive control: another /64 is another client; an IPv4-mapped address is its IPv4.
    assert _resend(limited, "2001:db8:1:3::1", WAITING).status_code == 202
    mapped = [_resend(limited, "::ffff:192.0.2.9", WAITING).status_code for _ in range(5)]
    assert mapped == [202] * 5
    assert _resend(limited, "192.0.2.9", WAITING).status_code == 429


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("not-an-ip", "not-an-ip"),  # a unix socket's name, say: kept as it is
    ],
)
def test_the_limits_key_names_the_client(address: str, key: str) -> None:
    assert client_network(address) == key


@sqlite_only
def test_a_limiter_storage_outage_is_no_500_and_the_limit_holds(
    make_app: Callable[..., Flask], smtp_server: SMTPSink, caplog: pytest.LogCaptureFixture
) -> None:
    config = {
        "CONFIRM_MAIL_RESEND_LIMIT": LIMIT,
        "CONFIRM_MAIL_RESEND_COOLDOWN": 0,
        "RATELIMIT_STORAGE_URI": "redis://127.0.0.1:1",  # nothing listens there
    }
    app = make_app(config=config)
    statuses = [_resend(app, "203.0.113.7", WAITING).status_code for _ in range(8)]
    assert statuses == [202] * 5 + [429] * 3, "the limit goes on in the process's memory"
    assert _resend(app, "203.0.113.8", WAITING).status_code == 202  # positive control
    assert any(r.name.startswith("flask-limiter") for r in caplog.records), "the outage is logged"


@sqlite_only
def test_the_code_route_has_the_per_client_limit(make_app: Any, smtp_server: SMTPSink) -> None:
    app = make_app(config={"CONFIRM_MAIL_RESEND_LIMIT": "5/minute"})
    statuses = [_code(app, "x@example.org", "123456").status_code for _ in range(7)]
    assert statuses == [400] * 5 + [429] * 2
    assert _code(app, "x@example.org", "123456", "198.51.100.9").status_code == 400


def _code(app: Flask, email: str, code: str, client_address: str = "192.0.2.1") -> Any:
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = client_address
    return client.post("/confirm/code", json={"email": email, "code": code})
