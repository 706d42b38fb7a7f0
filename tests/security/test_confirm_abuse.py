"""Using genuine links against their purpose: replay, stale addresses, races, sessions, scanners.

Cases 12-17 of the adversarial list (OWASP Forgot Password and Unvalidated Redirects
cheat sheets; the original's confirm-on-GET and replayable links).
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest
from flask import Flask
from werkzeug.test import TestResponse

from flask_confirm_mail import change_email, email_confirmed
from tests.apps import db
from tests.conftest import link_from
from tests.security.live_server import serve
from tests.security.outcomes import JSON, assert_no_leak, unchanged
from tests.security.victims import Victim, sign_up
from tests.support.smtp_server import SMTPSink


def _post(app: Flask, path: str, **kwargs: Any) -> TestResponse:
    return app.test_client().post(path, headers=JSON, **kwargs)


def _state(v: Victim) -> tuple[str, bool, str | None]:
    """The user's address, whether it is confirmed, and the pending address."""
    columns = v.app.extensions["confirm_mail"].columns
    row = v.row()
    return columns.email_of(row), columns.is_confirmed(row), columns.pending_of(row)


def _change_address(v: Victim, new: str) -> str:
    """Change the victim's address as the app would; return the path mailed to ``new``."""
    before = len(v.sink.messages)
    with v.app.app_context():
        user = db.session.get(v.app.extensions["confirm_mail"].columns.model, v.uid)
        assert change_email(user, new) is True
        db.session.commit()
    # The link to ``new``; a confirmed old address also gets a change notice (a cancel link).
    for count in (before + 1, before + 2):
        mails = [m for m in v.sink.wait_for(count)[before:] if m.rcpt_tos == [new]]
        if mails:
            break
    [mail] = mails
    return urlsplit(link_from(mail)).path


# --- 12. the same link twice ---------------------------------------------------------------------


def test_second_use_is_already_confirmed_and_logs_nobody_in(
    make_app: Callable[..., Flask], smtp_server: SMTPSink, shape: str
) -> None:
    victim = sign_up(make_app(shape=shape), smtp_server)
    fired: list[str] = []
    client = victim.app.test_client()
    with email_confirmed.connected_to(lambda sender, **kw: fired.append(kw["email"]), victim.app):
        first = client.post(victim.path, headers=JSON)
        assert first.status_code == 200 and first.json["status"] == "confirmed"
        with unchanged(victim.app, smtp_server):
            second = client.post(victim.path, headers=JSON)
            page = client.post(victim.path)
    assert second.status_code == 200 and second.json["status"] == "already_confirmed"
    assert b"Already confirmed" in page.data
    assert fired == [victim.email]
    with client.session_transaction() as session:
        assert "uid" not in session, "a confirmation link logged somebody in"
    assert client.get("/members").status_code == 401


# --- 13. the address changed after the link was sent ---------------------------------------------


def test_old_link_after_a_replacing_change_confirms_nothing(
    make_app: Callable[..., Flask], smtp_server: SMTPSink
) -> None:
    """Legacy table (no pending column): the change replaces the address at once."""
    victim = sign_up(make_app(shape="legacy"), smtp_server, "first@example.org")
    new_link = _change_address(victim, "second@example.org")
    with unchanged(victim.app, smtp_server):
        answer = _post(victim.app, victim.path)
    assert answer.status_code == 400 and answer.json["status"] == "invalid"
    assert _state(victim) == ("second@example.org", False, None)
    assert_no_leak(answer.get_data(as_text=True), "second@example.org")
    assert _post(victim.app, new_link).json["status"] == "confirmed"
    assert _state(victim) == ("second@example.org", True, None)
    assert _post(victim.app, victim.path).json["status"] == "invalid"


def test_links_confirm_only_the_address_they_were_mailed_to(
    make_app: Callable[..., Flask], smtp_server: SMTPSink
) -> None:
    """Pending column: a superseded pending address can no longer be confirmed."""
    victim = sign_up(make_app(), smtp_server, "first@example.org")
    assert _post(victim.app, victim.path).json["status"] == "confirmed"
    to_second = _change_address(victim, "second@example.org")
    to_third = _change_address(victim, "third@example.org")
    with unchanged(victim.app, smtp_server):
        stale = _post(victim.app, to_second)
    assert stale.status_code == 400 and stale.json["status"] == "invalid"
    assert _state(victim) == ("first@example.org", True, "third@example.org")
    assert _post(victim.app, to_third).json["status"] == "confirmed"
    assert _state(victim) == ("third@example.org", True, None)
    for old in (victim.path, to_second):
        with unchanged(victim.app, smtp_server):
            answer = _post(victim.app, old)
        assert answer.json["status"] == "invalid"
    assert _state(victim) == ("third@example.org", True, None)


def test_a_freed_address_is_not_confirmed_for_its_new_owner_by_the_old_link(
    make_app: Callable[..., Flask], smtp_server: SMTPSink
) -> None:
    app = make_app()
    first_owner = sign_up(app, smtp_server, "shared@example.org")
    _post(app, _change_address(first_owner, "moved@example.org"))
    assert _state(first_owner)[0] == "moved@example.org"
    new_owner = sign_up(app, smtp_server, "shared@example.org")
    with unchanged(app, smtp_server):
        answer = _post(app, first_owner.path)
    assert answer.json["status"] == "invalid"
    assert not new_owner.is_confirmed()


# --- 14. concurrency -----------------------------------------------------------------------------


def _http_post_json(url: str) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=b"", method="POST", headers=JSON)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read() or b"{}")


def test_twenty_parallel_posts_confirm_once_and_signal_once(
    make_app: Callable[..., Flask], smtp_server: SMTPSink
) -> None:
    victim = sign_up(make_app(), smtp_server)
    fired: list[str] = []
    results: list[tuple[int, str]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(20)

    def post(url: str) -> None:
        try:
            barrier.wait(timeout=30)
            status, body = _http_post_json(url)
            results.append((status, body.get("status", "")))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    with (
        email_confirmed.connected_to(lambda sender, **kw: fired.append(kw["email"]), victim.app),
        serve(victim.app) as base,
    ):
        threads = [threading.Thread(target=post, args=(base + victim.path,)) for _ in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
    assert sorted(results) == [(200, "already_confirmed")] * 19 + [(200, "confirmed")]
    assert fired == [victim.email]
    assert victim.is_confirmed()


def _confirm_in_another_thread(app: Flask, path: str) -> str:
    """POST ``path`` from another thread (its own app context and session); its status."""
    outcome: list[str] = []
    thread = threading.Thread(target=lambda: outcome.append(_post(app, path).json["status"]))
    thread.start()
    thread.join()
    return outcome[0]


@pytest.mark.parametrize("link_first", [True, False], ids=["link-then-change", "change-then-link"])
def test_confirm_racing_an_email_change_never_confirms_the_new_address(
    make_app: Callable[..., Flask], smtp_server: SMTPSink, shape: str, link_first: bool
) -> None:
    """The change loads the user, the old link is used, then the change commits.

    The interleaving is forced, not hoped for: the change's session holds the loaded
    user while another thread confirms with the link to the old address.
    """
    victim = sign_up(make_app(shape=shape), smtp_server, "old@example.org")
    columns = victim.app.extensions["confirm_mail"].columns
    with victim.app.app_context():
        user = db.session.get(columns.model, victim.uid)
        assert not columns.is_confirmed(user)
        if link_first:
            assert _confirm_in_another_thread(victim.app, victim.path) == "confirmed"
            assert change_email(user, "new@example.org") is True
        else:
            assert change_email(user, "new@example.org") is True
            assert _confirm_in_another_thread(victim.app, victim.path) == "confirmed"
        db.session.commit()
    email, confirmed, pending = _state(victim)
    if shape == "legacy":
        assert (email, confirmed) == ("new@example.org", False), "unverified address confirmed"
    else:
        assert (email, confirmed, pending) == ("old@example.org", True, "new@example.org")


def test_old_link_after_a_committed_change_never_confirms_the_new_address(
    make_app: Callable[..., Flask], smtp_server: SMTPSink, shape: str
) -> None:
    victim = sign_up(make_app(shape=shape), smtp_server, "old@example.org")
    _change_address(victim, "new@example.org")
    answer = _post(victim.app, victim.path)
    email, confirmed, _ = _state(victim)
    if shape == "legacy":
        assert answer.json["status"] == "invalid"
        assert (email, confirmed) == ("new@example.org", False)
    else:
        assert answer.json["status"] == "confirmed", "the old address is still the login"
        assert (email, confirmed) == ("old@example.org", True)


# --- 15. a logged-in user opening somebody else's link -------------------------------------------


def test_opening_another_users_link_keeps_the_session_as_it_was(
    make_app: Callable[..., Flask], smtp_server: SMTPSink
) -> None:
    app = make_app()
    alice = sign_up(app, smtp_server, "alice@example.org")
    bob = sign_up(app, smtp_server, "bob@example.org")
    client = app.test_client()
    assert client.post(f"/login/{alice.uid}").status_code == 200
    answer = client.post(bob.path, headers=JSON)
    assert answer.json["status"] == "confirmed"
    with client.session_transaction() as session:
        assert session["uid"] == alice.uid, "the session changed user"
    assert bob.is_confirmed() and not alice.is_confirmed()
    assert client.get("/members", headers=JSON).status_code == 403, "still Alice, unconfirmed"
    stranger = app.test_client()
    stranger.post(bob.path)
    with stranger.session_transaction() as session:
        assert "uid" not in session, "opening Bob's link logged the opener in as Bob"
    assert stranger.get("/members").status_code == 401


# --- 16. mail scanners fetching the link ---------------------------------------------------------

SCANNER_REQUESTS = {
    "GET": ("GET", {}),
    "GET as a scanner": ("GET", {"User-Agent": "Mozilla/5.0 (compatible; SafeLinks)"}),
    "GET asking for JSON": ("GET", JSON),
    "GET with Accept */*": ("GET", {"Accept": "*/*"}),
    "HEAD": ("HEAD", {}),
    "OPTIONS": ("OPTIONS", {}),
}


@pytest.mark.parametrize(
    "method,headers", list(SCANNER_REQUESTS.values()), ids=list(SCANNER_REQUESTS)
)
def test_fetching_the_link_confirms_nothing(
    victim: Victim, method: str, headers: dict[str, str]
) -> None:
    client = victim.app.test_client()
    with unchanged(victim.app, victim.sink):
        for _ in range(3):
            response = client.open(victim.path, method=method, headers=headers)
            assert response.status_code < 400
    assert not victim.is_confirmed()
    page = client.get(victim.path)
    assert b"<script" not in page.data, "the page would confirm for scanners that run scripts"
    assert b'method="post"' in page.data


# --- 17. redirect parameters ---------------------------------------------------------------------

EVIL_TARGETS = [
    "//evil.com",
    "/\\evil.com",
    "\\\\\\evil.com",
    "https://evil.com",
    "https:evil.com",
    "javascript:alert(1)",
    "/%2F/evil.com",
    "/\t/evil.com",
    "%2F%2Fevil.com",
]
PARAMETERS = ["next", "redirect", "return_to", "url", "continue"]


def _assert_stays_on_site(response: TestResponse) -> None:
    location = response.headers.get("Location")
    if location is not None:
        assert location.startswith("/") and not location.startswith(("//", "/\\")), location
        target = urlsplit(urljoin("http://localhost/confirm/x", location))
        assert (target.scheme, target.hostname) == ("http", "localhost"), location
    assert "evil" not in json.dumps(dict(response.headers)).lower()
    assert "evil" not in response.get_data(as_text=True).lower()


@pytest.mark.parametrize("target", EVIL_TARGETS)
@pytest.mark.parametrize("endpoint", [None, "members"], ids=["no endpoint", "CONFIRMED_ENDPOINT"])
def test_redirect_parameters_never_leave_the_site(
    make_app: Callable[..., Flask], smtp_server: SMTPSink, target: str, endpoint: str | None
) -> None:
    app = make_app(config={"CONFIRM_MAIL_CONFIRMED_ENDPOINT": endpoint})
    victim = sign_up(app, smtp_server)
    query = {name: target for name in PARAMETERS}
    client = app.test_client()
    for method, headers in (("GET", {}), ("POST", {}), ("POST", JSON), ("POST", {})):
        response = client.open(victim.path, method=method, headers=headers, query_string=query)
        assert response.status_code < 500
        _assert_stays_on_site(response)
    assert victim.is_confirmed()
    for path in ("/confirm/resend", "/members", "/confirm/not-a-token"):
        for method in ("GET", "POST"):
            response = client.open(path, method=method, query_string=query, data=query)
            assert response.status_code < 500
            _assert_stays_on_site(response)
