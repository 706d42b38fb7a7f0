"""The link allowlist: parsed comparison, not a string prefix match."""

from __future__ import annotations

import pytest

from flask_confirm_mail.errors import ConfigurationError
from flask_confirm_mail.mailer.link_policy import LinkPolicy, LinkRefused

POLICY = LinkPolicy.from_prefixes(
    [
        "https://app.example/confirm/",
        "http://127.0.0.1:5000/confirm",
        "https://[::1]/c/",
        "https://q.example/confirm?t=",
    ]
)
TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"


@pytest.mark.parametrize(
    "link",
    [
        f"https://app.example/confirm/{TOKEN}",
        f"https://APP.example/confirm/{TOKEN}",
        f"https://app.example:443/confirm/{TOKEN}",
        f"http://127.0.0.1:5000/confirm/{TOKEN}",
        f"https://q.example/confirm?t={TOKEN}",
        f"https://[::1]/c/{TOKEN}",
    ],
)
def test_allowed(link: str) -> None:
    POLICY.check(link, TOKEN)


@pytest.mark.parametrize(
    "link",
    [
        f"javascript:alert(1)//{TOKEN}",
        f"data:text/html;base64,PHNjcmlwdD4=/{TOKEN}",
        f"http://app.example/confirm/{TOKEN}",
        f"https://app.example.evil.tld/confirm/{TOKEN}",
        f"https://app.example@evil.tld/confirm/{TOKEN}",
        f"https://user:pw@app.example/confirm/{TOKEN}",
        f"https://app.example\\@evil.tld/confirm/{TOKEN}",
        f"https://evil.tld/https://app.example/confirm/{TOKEN}",
        f"https://app.example/confirmx/{TOKEN}",
        f"https://app.example/confirm/../admin/{TOKEN}",
        f"https://app.example/confirm/%2e%2e/admin/{TOKEN}",
        f"https://app.example/confirm/%2F/{TOKEN}",
        f"https://app.example:8443/confirm/{TOKEN}",
        f"https://app.example:99999/confirm/{TOKEN}",
        f"https://app.example/confirm/{TOKEN}#frag",
        f"https://app.example/confirm/ {TOKEN}",
        f"https://app.example/confirm/\r\n{TOKEN}",
        f"https://app.exämple/confirm/{TOKEN}",
        f"//app.example/confirm/{TOKEN}",
        f"/confirm/{TOKEN}",
        f"http://127.0.0.1:5001/confirm/{TOKEN}",
        f"https://127.0.0.1:5000/confirm/{TOKEN}",
        "https://app.example/confirm/other-token",
        f"https://app.example/confirm/x{TOKEN}",
        f"https://app.example/confirm/sub/{TOKEN}",
        f"https://app.example/confirm/phish-here/{TOKEN}",
        f"https://app.example/confirm/?token={TOKEN}",
        f"https://app.example/confirm/{TOKEN}?next=evil",
        f"https://app.example/confirm/{TOKEN}/",
        f"https://q.example/confirm/{TOKEN}",
        f"https://q.example/confirm?t=x{TOKEN}",
        f"https://q.example/confirm?a=b&t={TOKEN}",
        f"https://q.example/confirm/?t={TOKEN}",
        "",
    ],
)
def test_refused(link: str) -> None:
    with pytest.raises(LinkRefused) as info:
        POLICY.check(link, TOKEN)
    assert TOKEN not in str(info.value)


@pytest.mark.parametrize(
    "prefix",
    [
        "http://app.example/confirm/",
        "https://app.example/confirm/?a=b&t=",
        "https://app.example/confirm/?t=x",
        "https://app.example/confirm/?",
        "https://user@app.example/",
        "ftp://app.example/",
        "app.example/confirm/",
        "https://app.example/#x",
    ],
)
def test_bad_prefixes_are_refused_at_start(prefix: str) -> None:
    with pytest.raises(ConfigurationError):
        LinkPolicy.from_prefixes([prefix])


def test_no_prefix_is_refused() -> None:
    with pytest.raises(ConfigurationError):
        LinkPolicy.from_prefixes(["", ""])


def test_prefix_without_path_allows_one_segment_at_the_root() -> None:
    policy = LinkPolicy.from_prefixes(["https://app.example"])
    policy.check(f"https://app.example/{TOKEN}", TOKEN)
    for link in (f"https://app.example/anything/{TOKEN}", f"https://app.example.evil.tld/{TOKEN}"):
        with pytest.raises(LinkRefused):
            policy.check(link, TOKEN)
