"""Which links the mailer agrees to put in an email: the allowlist of link prefixes.

A raw ``str.startswith`` would let ``https://app.example@evil.tld/`` and
``https://app.example.evil.tld/`` pass as ``https://app.example``. Links and prefixes
are therefore parsed with :mod:`urllib.parse` and compared part by part: scheme, host
(exactly), port (with the scheme's default), then the path, segment-wise. Anything a
browser might read differently from :mod:`urllib` is refused outright: user info,
back slashes, white space, control or non-ASCII characters, dot segments, encoded
dots or slashes, fragments.

A link is then exactly an allowed prefix followed by the link token, as one path
segment: ``https://app.example/confirm/`` allows ``https://app.example/confirm/<token>``
and nothing longer, no other segment and no query. A query string is allowed only
where a prefix is configured with one, ending in ``?<name>=``:
``https://app.example/confirm?t=`` allows ``https://app.example/confirm?t=<token>``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from ..errors import ConfigurationError
from .wire import is_loopback_host

__all__ = ["AllowedPrefix", "LinkPolicy", "LinkRefused"]

_DEFAULT_PORTS = {"https": 443, "http": 80}
#: Printable ASCII without space, back slash, quotes and angle brackets.
_SAFE_URL = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+")
_ENCODED_SEPARATORS = re.compile(r"%(?:2e|2f|5c|00)", re.IGNORECASE)
_MAX_LINK_LENGTH = 4096
#: The query a prefix may end with: one parameter whose value is the link token.
_QUERY_PREFIX = re.compile(r"[A-Za-z0-9_-]{1,32}=")


class LinkRefused(ValueError):
    """The link is not one the mailer will send; the message says why, without the link."""


@dataclass(frozen=True)
class AllowedPrefix:
    """One allowed prefix, parsed: links must share scheme, host and port, and the path."""

    scheme: str
    host: str
    port: int
    #: Ends with ``/`` unless :attr:`query` is set; the token follows it.
    path: str
    #: ``"<name>="`` when the token is a query parameter's value, else ``""``.
    query: str = ""

    def __str__(self) -> str:
        default = _DEFAULT_PORTS[self.scheme]
        port = "" if self.port == default else f":{self.port}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        query = f"?{self.query}" if self.query else ""
        return f"{self.scheme}://{host}{port}{self.path}{query}"

    def allows(self, parts: SplitResult, link_token: str) -> bool:
        """Whether the link ``parts`` is this prefix followed by exactly ``link_token``."""
        if (parts.scheme, parts.hostname or "", _port(parts)) != (
            self.scheme,
            self.host,
            self.port,
        ):
            return False
        if self.query:
            return parts.path == self.path and parts.query == self.query + link_token
        return parts.path == self.path + link_token and not parts.query


def _split(url: str) -> SplitResult:
    if not url or len(url) > _MAX_LINK_LENGTH or _SAFE_URL.fullmatch(url) is None:
        raise LinkRefused("The link holds characters that are not allowed.")
    parts = urlsplit(url)
    if parts.scheme not in _DEFAULT_PORTS:
        raise LinkRefused("The link's scheme is not allowed.")
    if "@" in parts.netloc or parts.username is not None or parts.password is not None:
        raise LinkRefused("The link must not hold user information.")
    if not parts.hostname:
        raise LinkRefused("The link has no host.")
    if parts.fragment or "#" in url:
        raise LinkRefused("The link must not have a fragment.")
    try:
        _ = parts.port
    except ValueError:
        raise LinkRefused("The link's port is not valid.") from None
    segments = parts.path.split("/")
    if any(segment in (".", "..") for segment in segments):
        raise LinkRefused("The link's path must not hold dot segments.")
    if _ENCODED_SEPARATORS.search(parts.path):
        raise LinkRefused("The link's path must not hold encoded dots or slashes.")
    return parts


def _port(parts: SplitResult) -> int:
    return parts.port if parts.port is not None else _DEFAULT_PORTS[parts.scheme]


class LinkPolicy:
    """The allowlist: a link passes when it matches one :class:`AllowedPrefix`.

    :param prefixes: the parsed prefixes; see :meth:`from_prefixes`.
    """

    def __init__(self, prefixes: Iterable[AllowedPrefix]) -> None:
        self.prefixes = tuple(prefixes)
        if not self.prefixes:
            raise ConfigurationError("MAILER_ALLOWED_LINK_PREFIXES lists no prefix.")

    def __repr__(self) -> str:
        return f"LinkPolicy({', '.join(map(str, self.prefixes))})"

    @classmethod
    def from_prefixes(cls, prefixes: Iterable[str]) -> LinkPolicy:
        """Parse configured prefixes: ``https://host[:port]/path/``, or ``http://`` only
        for a loopback host (development). No user info or fragment; a query only as
        ``?<name>=`` at the end, for links that carry the token as its value.

        :raises ConfigurationError: a prefix is not one of those.
        """
        parsed = []
        for raw in prefixes:
            if not raw:
                continue
            try:
                parts = _split(raw)
            except LinkRefused as exc:
                raise ConfigurationError(
                    f"MAILER_ALLOWED_LINK_PREFIXES: a prefix is not valid ({exc})"
                ) from None
            host = parts.hostname or ""
            if parts.scheme != "https" and not is_loopback_host(host):
                raise ConfigurationError(
                    "MAILER_ALLOWED_LINK_PREFIXES: prefixes must use https "
                    "(http only for a loopback host)."
                )
            query = ""
            if parts.query or raw.endswith("?"):
                if _QUERY_PREFIX.fullmatch(parts.query) is None:
                    raise ConfigurationError(
                        "MAILER_ALLOWED_LINK_PREFIXES: a prefix's query must be one "
                        "?<name>= at its end."
                    )
                query = parts.query
            path = parts.path or "/"
            if not query and not path.endswith("/"):
                path += "/"
            parsed.append(AllowedPrefix(parts.scheme, host, _port(parts), path, query))
        return cls(parsed)

    def check(self, link: str, link_token: str) -> None:
        """Pass if ``link`` is an allowed prefix followed by exactly ``link_token``.

        So the link the user clicks carries the token the app minted, and the caller
        can add nothing of its own to it.

        :raises LinkRefused: with a message that never repeats the link.
        """
        parts = _split(link)
        if not link_token or "/" in link_token or not link.endswith(link_token):
            raise LinkRefused("The link does not end with the link token.")
        if not any(prefix.allows(parts, link_token) for prefix in self.prefixes):
            raise LinkRefused("The link is not an allowed prefix followed by the link token.")
