"""Account enumeration, resend abuse, poisoned links, predictable tokens, leaky pages.

Cases 18-22 of the adversarial list (OWASP Authentication and Forgot Password cheat
sheets: identical answers; host-header poisoning of emailed links; Referrer-Policy).
"""

from __future__ import annotations

import json
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.test import TestResponse

from flask_confirm_mail import change_email, send_confirmation
from tests.apps import EXTERNAL_URL, db
from tests.security.forgery import b64url_decode
from tests.security.live_server import serve
from tests.security.outcomes import JSON
from tests.security.victims import Victim, sign_up
from tests.support.smtp_server import ReceivedMail, SMTPSink

URL_RE = re.compile(r"""(?:https?:)?//[^\s"'<>]+""")


def _resend(app: Flask, address: str, as_json: bool) -> TestResponse:
    client = app.test_client()
    if as_json:
        return client.post("/confirm/resend", json={"email": address}, buffered=True)
    return client.post("/confirm/resend", data={"email": address}, buffered=True)


def _comparable(response: TestResponse) -> tuple[int, bytes, tuple[tuple[str, str], ...]]:
    headers = sorted((k, v) for k, v in response.headers.items() if k.lower() != "date")
    return response.status_code, response.data, tuple(headers)


# --- 18. one answer for every address ------------------------------------------------------------


@pytest.mark.parametrize("as_json", [False, True], ids=["form", "json"])
@pytest.mark.parametrize("cooldown", [0, 60])
def test_resend_answers_the_same_for_every_kind_of_address(
    make_app: Callable[..., Flask], smtp_server: SMTPSink, as_json: bool, cooldown: int
) -> None:
    app = make_app(config={"CONFIRM_MAIL_RESEND_COOLDOWN": cooldown})
    sign_up(app, smtp_server, "waiting@example.org")
    done = sign_up(app, smtp_server, "done@example.org")
    assert app.test_client().post(done.path).status_code == 200
    mover = sign_up(app, smtp_server, "mover@example.org")
    app.test_client().post(mover.path)
    with app.app_context():
        user = db.session.get(app.extensions["confirm_mail"].columns.model, mover.uid)
        change_email(user, "pending@example.org")
        db.session.commit()
    addresses = [
        "nobody@example.org",
        "waiting@example.org",
        "done@example.org",
        "pending@example.org",
        "mover@example.org",
        "Waiting@example.org",
        "waiting@EXAMPLE.org",
    ]
    answers = {address: _comparable(_resend(app, address, as_json)) for address in addresses}
    first = answers[addresses[0]]
    assert first[0] == 202
    for address, answer in answers.items():
        assert answer == first, f"the answer for {address} differs"


# --- 19. resend flooding -------------------------------------------------------------------------


def test_fifty_resends_send_at_most_one_email_per_cooldown(
    clock: Any, make_app: Callable[..., Flask], smtp_server: SMTPSink
) -> None:
    app = make_app(config={"CONFIRM_MAIL_RESEND_COOLDOWN": 60})
    victim = sign_up(app, smtp_server)
    smtp_server.clear()
    bodies = {_comparable(_resend(app, victim.email, False)) for _ in range(50)}
    assert smtp_server.messages == [], "the sign-up email starts the cooldown"
    clock.shift(61)
    bodies |= {_comparable(_resend(app, victim.email, False)) for _ in range(50)}
    assert len(smtp_server.messages) == 1
    clock.shift(59)
    bodies |= {_comparable(_resend(app, victim.email, False)) for _ in range(50)}
    assert len(smtp_server.messages) == 1
    assert len(bodies) == 1, "the answers differ"


def _http_resend(url: str, address: str, cookie: str = "") -> int:
    data = json.dumps({"email": address}).encode()
    headers = {"Content-Type": "application/json", **({"Cookie": cookie} if cookie else {})}
    request = urllib.request.Request(url, data=data, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        with error:
            return int(error.code)


@pytest.mark.parametrize("waiting", ["signup", "change"])
def test_fifty_parallel_resends_send_at_most_one_email(
    make_app: Callable[..., Flask], smtp_server: SMTPSink, waiting: str
) -> None:
    """Ten clients at once, five resends each, for an address the cooldown does not hold."""
    app = make_app(config={"CONFIRM_MAIL_RESEND_COOLDOWN": 3600})
    victim = sign_up(app, smtp_server)
    address = victim.email
    if waiting == "change":
        app.test_client().post(victim.path)
        address = "changed@example.org"
        with app.app_context():
            user = db.session.get(app.extensions["confirm_mail"].columns.model, victim.uid)
            change_email(user, address)
            db.session.commit()
    with app.app_context():
        table = app.extensions["confirm_mail"].outbox_table
        db.session.execute(table.delete())  # as if the earlier emails were long gone
        db.session.commit()
    smtp_server.clear()
    cookie = ""
    if waiting == "change":  # a change's link is resent to its account only: its session
        owner = app.test_client()
        assert owner.post(f"/login/{victim.uid}").status_code == 200
        session_cookie = owner.get_cookie("session")
        assert session_cookie is not None
        cookie = f"session={session_cookie.value}"
    statuses: list[int] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(10)

    def flood(url: str) -> None:
        try:
            barrier.wait(timeout=30)
            for _ in range(5):
                statuses.append(_http_resend(url, address, cookie))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    with serve(app) as base:
        threads = [
            threading.Thread(target=flood, args=(f"{base}/confirm/resend",)) for _ in range(10)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
    if cookie:  # the owner is told the cooldown (429) once the first email is queued
        assert len(statuses) == 50 and set(statuses) <= {202, 429} and 202 in statuses
    else:
        assert statuses == [202] * 50
    assert [m.rcpt_tos for m in smtp_server.messages] == [[address]]


# --- 20. poisoned Host headers -------------------------------------------------------------------

POISON = {
    "Host": {"base_url": "http://evil.com"},
    "X-Forwarded-Host": {"headers": {"X-Forwarded-Host": "evil.com", "X-Forwarded-Proto": "http"}},
    "Forwarded": {"headers": {"Forwarded": "host=evil.com;proto=http"}},
    "all at once": {
        "base_url": "http://evil.com:8080",
        "headers": {
            "X-Forwarded-Host": "evil.com",
            "X-Forwarded-Server": "evil.com",
            "X-Forwarded-Port": "8443",
            "X-Original-Host": "evil.com",
            "X-Host": "evil.com",
        },
    },
}


def _links(mail: ReceivedMail) -> list[str]:
    parts = [mail.message.get_body((kind,)).get_content() for kind in ("plain", "html")]
    return [url for part in parts for url in URL_RE.findall(part)]


def _assert_links_use_the_configured_base(mail: ReceivedMail, base: str) -> None:
    links = _links(mail)
    assert links, "no link in the email"
    for link in links:
        assert link.startswith(f"{base}/confirm/"), link
    assert "evil" not in mail.raw.decode("utf-8", "replace").lower()


@pytest.mark.parametrize("proxied", [False, True], ids=["direct", "behind ProxyFix"])
@pytest.mark.parametrize("poison", list(POISON.values()), ids=list(POISON))
def test_emailed_links_ignore_the_request_host(
    make_app: Callable[..., Flask], smtp_server: SMTPSink, poison: dict[str, Any], proxied: bool
) -> None:
    app = make_app(config={"CONFIRM_MAIL_RESEND_COOLDOWN": 0})
    if proxied:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1, x_port=1)  # type: ignore[method-assign]
    client = app.test_client()
    answer = client.post("/signup", data={"email": "cat@example.org"}, **poison)
    assert answer.status_code == 201
    _assert_links_use_the_configured_base(smtp_server.wait_for(1)[0], EXTERNAL_URL)
    resend = client.post(
        "/confirm/resend", data={"email": "cat@example.org"}, buffered=True, **poison
    )
    assert resend.status_code == 202
    _assert_links_use_the_configured_base(smtp_server.wait_for(2)[1], EXTERNAL_URL)


def test_links_built_from_server_name_ignore_the_request_host(
    make_app: Callable[..., Flask], smtp_server: SMTPSink
) -> None:
    app = make_app(
        config={
            "CONFIRM_MAIL_EXTERNAL_URL": None,
            "SERVER_NAME": "www.example.net",
            "PREFERRED_URL_SCHEME": "https",
        }
    )
    client = app.test_client()
    response = client.post(
        "/signup",
        data={"email": "cat@example.org"},
        base_url="http://www.example.net",
        headers={"X-Forwarded-Host": "evil.com"},
    )
    assert response.status_code == 201
    _assert_links_use_the_configured_base(smtp_server.wait_for(1)[0], "https://www.example.net")


# --- 21. random token ids ------------------------------------------------------------------------


def _claims(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = json.loads(b64url_decode(token.split(".")[1]))
    return claims


def test_tokens_issued_in_the_same_second_differ(victim: Victim, clock: Any) -> None:
    signer = victim.app.extensions["confirm_mail"].signer
    tokens = [signer.issue(str(victim.uid), victim.email) for _ in range(200)]
    assert len({_claims(t)["iat"] for t in tokens}) == 1, "the clock moved"
    assert len(set(tokens)) == 200
    jtis = [_claims(t)["jti"] for t in tokens]
    assert len(set(jtis)) == 200
    assert all(len(b64url_decode(j)) >= 16 for j in jtis), "jti under 128 bits"


def test_two_emails_in_the_same_second_carry_different_links(victim: Victim, clock: Any) -> None:
    with victim.app.app_context():
        user = victim.row()
        db.session.add(user)
        send_confirmation(user)
        send_confirmation(user)
        db.session.commit()
    first, second = victim.sink.wait_for(3)[1:]
    link_a, link_b = _links(first)[0], _links(second)[0]
    assert link_a != link_b
    assert _claims(link_a.rsplit("/", 1)[1])["iat"] == _claims(link_b.rsplit("/", 1)[1])["iat"]


# --- 22. private pages: no referrer, no cache, nothing third-party -------------------------------


class ResourceCollector(HTMLParser):
    """Every URL a browser would load or send the page's address to."""

    ATTRIBUTES = {"src", "href", "action", "formaction", "srcset", "data", "poster", "background"}

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for name, value in attrs:
            if name in self.ATTRIBUTES and value is not None:
                self.urls.extend(part.split()[0] for part in value.split(",") if part.strip())
            if name == "style" and value:
                self.urls.extend(re.findall(r"url\(([^)]*)\)", value))
        if tag == "meta" and (values.get("http-equiv") or "").lower() == "refresh":
            self.urls.append((values.get("content") or "").partition("url=")[2] or "x:refresh")
        self._in_style = tag == "style"

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.urls.extend(re.findall(r"url\(([^)]*)\)", data))
            self.urls.extend(re.findall(r"@import\s+['\"]?([^'\";\s]+)", data))

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False


def _assert_private_page(response: TestResponse) -> None:
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert "no-store" in response.headers["Cache-Control"]
    if response.mimetype != "text/html":
        return
    collector = ResourceCollector()
    collector.feed(response.get_data(as_text=True))
    for url in collector.urls:
        parts = urlsplit(url.strip("'\" "))
        assert not parts.scheme and not parts.netloc, f"the page loads {url}"
    assert '<meta name="referrer" content="no-referrer">' in response.get_data(as_text=True)


def test_every_page_of_the_flow_is_private(
    make_app: Callable[..., Flask], smtp_server: SMTPSink, clock: Any
) -> None:
    victim = sign_up(make_app(), smtp_server)
    client = victim.app.test_client()
    pages = {
        "pending": client.get(victim.path),
        "pending JSON": client.get(victim.path, headers=JSON),
        "invalid": client.get("/confirm/not-a-token"),
        "invalid POST": client.post("/confirm/not-a-token"),
        "resend form": client.get("/confirm/resend"),
        "resend sent": client.post("/confirm/resend", data={"email": "x@example.org"}),
        "resend refused": client.post("/confirm/resend", data={"email": "x"}),
        "resend JSON": client.post("/confirm/resend", json={"email": "x@example.org"}),
    }
    expected_status = {"pending": 200, "invalid": 400, "resend refused": 400, "resend sent": 202}
    expired_client = victim.app.test_client()
    clock.shift(49 * 3600)
    pages["expired"] = expired_client.post(victim.path)
    pages["expired JSON"] = expired_client.post(victim.path, headers=JSON)
    clock.shift(-49 * 3600)
    pages["confirmed"] = client.post(victim.path)
    pages["already confirmed"] = client.post(victim.path)
    expected_status |= {"expired": 410, "confirmed": 200, "already confirmed": 200}
    for name, response in pages.items():
        if name in expected_status:
            assert response.status_code == expected_status[name], name
        _assert_private_page(response)
    assert b"Email confirmed" in pages["confirmed"].data


def test_collector_finds_third_party_resources() -> None:
    """The control: the page check can fail."""
    collector = ResourceCollector()
    collector.feed(
        '<img src="https://cdn.example/x.png"><link href="//fonts.example/css">'
        '<style>@import "https://evil.example/a.css"; b{background:url(//t.example/p)}</style>'
        '<meta http-equiv="refresh" content="0;url=https://evil.example/">'
    )
    assert all(urlsplit(u.strip("'\"")).netloc for u in collector.urls)
    assert len(collector.urls) == 5
