"""Case 23: no token reaches a log, on the happy path or any unhappy one.

The app runs on a real werkzeug server, so its access log lines are the ones a
deployment writes. Every log record of the process is captured at DEBUG level,
SQLAlchemy's statement log included, and searched for every token the app minted
(seen through a spy on the signer) and every token sent to it. Only the SMTP server's
own log is left out: it receives the email, link and all.
"""

from __future__ import annotations

import logging
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask import Flask

from tests.apps import LINK_SECRET, SECRET_KEY
from tests.conftest import link_from
from tests.security.broken_app import break_confirm_route, spellings
from tests.security.forgery import forge_link, link_header
from tests.security.live_server import raw_request, serve
from tests.security.outcomes import app_log_texts
from tests.support.smtp_server import SMTPSink


def _request(url: str, method: str = "GET", data: bytes | None = None) -> int:
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as error:
        with error:
            return int(error.code)


def test_no_token_or_secret_in_any_log(
    make_app: Callable[..., Flask],
    smtp_server: SMTPSink,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = make_app(config={"CONFIRM_MAIL_RESEND_COOLDOWN": 0})
    signer = app.extensions["confirm_mail"].signer
    minted: list[str] = []
    issue = signer.issue

    def spy(*args: Any, **kwargs: Any) -> Any:
        token = issue(*args, **kwargs)
        minted.append(token)
        return token

    monkeypatch.setattr(signer, "issue", spy)
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.INFO, logger="sqlalchemy.engine")
    sent: list[str] = []
    with serve(app) as base:
        assert _request(f"{base}/signup", "POST", b"email=cat%40example.org") == 201
        path = urlsplit(link_from(smtp_server.wait_for(1)[0])).path
        assert _request(f"{base}{path}") == 200
        assert _request(f"{base}{path}?next=/x", "POST") == 200
        assert _request(f"{base}{path}", "POST") == 200

        forged = forge_link(1, "cat@example.org", key=b"guessed-secret-0123456789abcdef-xx")
        unsigned = forge_link(1, "cat@example.org", header=link_header(alg="none"), key=b"")
        oversized = forge_link(1, "cat@example.org", pad="p" * 8000)
        sent += [forged, unsigned, oversized]
        for token in sent:
            assert _request(f"{base}/confirm/{token}", "POST") == 400
            assert _request(f"{base}/confirm/{token}/") == 404
        cancel = signer.issue("1", "cat@example.org", cancel=True)  # the spy keeps it too
        assert _request(f"{base}/confirm/cancel/{cancel}") == 200
        assert _request(f"{base}/confirm/cancel/{cancel}", "POST") == 200  # nothing pending

        resend = b"email=cat%40example.org"
        assert _request(f"{base}/signup", "POST", b"email=dog%40example.org") == 201
        smtp_server.fail_next(1, 451)
        assert _request(f"{base}/confirm/resend", "POST", b"email=dog%40example.org") == 202
        smtp_server.stop()
        assert _request(f"{base}/confirm/resend", "POST", b"email=dog%40example.org") == 202
        smtp_server.start()
        # Last for dog: a 5xx marks the address undeliverable, and resends to it stop.
        smtp_server.fail_next(1, 550)
        assert _request(f"{base}/confirm/resend", "POST", b"email=dog%40example.org") == 202
        assert _request(f"{base}/confirm/resend", "POST", resend) == 202

    assert len(minted) >= 5, "the spy saw the minted tokens"
    access_lines = [r.getMessage() for r in caplog.records if r.name == "werkzeug"]
    assert any("/confirm/[redacted]" in line for line in access_lines), access_lines
    assert any("Delivery of outbox message" in r.getMessage() for r in caplog.records)
    assert any(r.name.startswith("sqlalchemy.engine") for r in caplog.records)
    texts = app_log_texts(caplog)
    for token in (*minted, *sent):
        for part in (token, token.rsplit(".", 1)[1]):
            assert not any(part in text for text in texts), "a token is in the log"
    for secret in (LINK_SECRET, SECRET_KEY):
        assert not any(secret in text for text in texts), "a secret is in the log"


# --- family 3 of security round 2: an exception on the confirm route ----------------------


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("prefix", ["/confirm", "/account/verify"])
def test_an_exception_on_the_confirm_route_logs_no_token(
    make_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture, prefix: str
) -> None:
    app = make_app(
        config={
            "TESTING": False,
            "PROPAGATE_EXCEPTIONS": False,
            "CONFIRM_MAIL_URL_PREFIX": prefix,
        }
    )
    token = app.extensions["confirm_mail"].signer.issue("1", "cat@example.org")
    break_confirm_route(app)
    caplog.set_level(logging.DEBUG)
    with serve(app) as base:
        statuses = [raw_request(base, *spelling) for spelling in spellings(prefix, token)]
        assert raw_request(base, "GET", f"{prefix}/resend", {}) == 200
    assert statuses.count(500) >= 7, statuses  # the route ran, and raised, for most spellings
    assert all(status in (404, 405, 308, 500) for status in statuses), statuses
    exceptions = [r for r in caplog.records if r.getMessage().startswith("Exception on")]
    assert len(exceptions) == statuses.count(500)
    # Positive control: the log still says where it failed, and what failed.
    assert all(f"{prefix}/[redacted]" in r.getMessage() for r in exceptions)
    assert all("RuntimeError: the database went away" in (r.exc_text or "") for r in exceptions)
    access = [r.getMessage() for r in caplog.records if r.name == "werkzeug"]
    assert any(f"{prefix}/resend" in line for line in access), "route names stay readable"
    signature = token.rsplit(".", 1)[1]
    for text in app_log_texts(caplog):
        assert token not in text and signature not in text, text


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_an_app_mounted_under_a_script_name_logs_no_token(
    make_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    """The app behind a path of its own (SCRIPT_NAME ``/shop``, as a proxy or a
    DispatcherMiddleware sets it): the request line holds ``/shop/confirm/<token>``."""
    from werkzeug.middleware.dispatcher import DispatcherMiddleware

    app = make_app(config={"TESTING": False, "PROPAGATE_EXCEPTIONS": False})
    token = app.extensions["confirm_mail"].signer.issue("1", "cat@example.org")
    break_confirm_route(app)
    caplog.set_level(logging.DEBUG)
    mounted = DispatcherMiddleware(Flask("front"), {"/shop": app})
    with serve(mounted) as base:
        statuses = [
            raw_request(base, method, f"/shop{target}", headers)
            for method, target, headers in spellings("/confirm", token)
            if target.startswith("/")
        ]
        assert raw_request(base, "GET", "/shop/confirm/resend", {}) == 200
    assert statuses.count(500) >= 6, statuses  # positive control: the route ran and raised
    exceptions = [r for r in caplog.records if r.getMessage().startswith("Exception on")]
    assert exceptions and all("/confirm/[redacted]" in r.getMessage() for r in exceptions)
    access = [r.getMessage() for r in caplog.records if r.name == "werkzeug"]
    assert any("/shop/confirm/resend" in line for line in access)
    signature = token.rsplit(".", 1)[1]
    for text in app_log_texts(caplog):
        assert token not in text and signature not in text, text
