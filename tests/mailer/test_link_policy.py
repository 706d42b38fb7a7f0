"""The link allowlist: parsed comparison, not a string prefix match."""

from __future__ import annotations

import pytest

from flask_confirm_mail.errors import ConfigurationError
from flask_confirm_mail.mailer.link_policy import LinkPolicy, LinkRefused

POLICY = LinkPolicy.from_prefixes(
    ["https://app.example/confirm/", "http://127.0.0.1:5000/confirm", "https://[::1]/c/"]
)
TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"


@pytest.mark.parametrize(
    "link",
    [
        f"https://app.example/confirm/{TOKEN}",
        f"https://APP.example/confirm/{TOKEN}",
        f"https://app.example:443/confirm/{TOKEN}",
        f"https://app.example/confirm/sub/{TOKEN}",
        f"https://app.example/confirm/?token={TOKEN}",
        f"http://127.0.0.1:5000/confirm/{TOKEN}",
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
        "https://app.example/confirm/?t=",
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


def test_prefix_without_path_allows_the_whole_origin() -> None:
    policy = LinkPolicy.from_prefixes(["https://app.example"])
    policy.check(f"https://app.example/anything/{TOKEN}", TOKEN)
    with pytest.raises(LinkRefused):
        policy.check(f"https://app.example.evil.tld/{TOKEN}", TOKEN)
