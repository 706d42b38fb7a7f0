"""Keeping tokens out of log lines: :func:`redact` and a :class:`logging.Filter` built on it.

A token can reach a log line through a server's request line (werkzeug's development
server, gunicorn's access and debug logs), an ``Authorization`` header, or an error
message. :func:`redact` replaces, in any text: every path segment after one of the given
path prefixes, however the path is spelled (percent-encoded, doubled slashes, other
case), anything shaped like a JWT, ``Bearer``/``Basic`` credentials, and token-like query
parameters. Nothing here touches a logger until an app or the mailer asks for it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from urllib.parse import unquote

REDACTED = "[redacted]"

#: The loggers that write request lines: werkzeug's and gunicorn's.
SERVER_LOGGERS = ("werkzeug", "gunicorn.access", "gunicorn.error")

#: Anything shaped like a JWT (its base64url JSON header starts with "eyJ").
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]*)?")
_CREDENTIALS = re.compile(r"(?i)\b(bearer|basic)(\s+)[^\s\"',]+")
_TOKEN_PARAMETER = re.compile(r"(?i)\b((?:token|jwt|access_token)=)[^&\s\"]+")
#: A URL path as it appears in a log line: up to white space or a quote.
_PATH = re.compile(r"/[^\s\"'<>]*")
#: Segments after a prefix that name a route, not a token.
_ROUTE_SEGMENTS = frozenset({"resend"})


def _redact_path(raw: str, prefixes: tuple[str, ...]) -> str:
    decoded = unquote(unquote(raw))
    path = re.sub(r"/{2,}", "/", decoded.partition("?")[0]).lower()
    for prefix in prefixes:
        base = prefix.rstrip("/").lower() + "/"
        if path.startswith(base):
            rest = path[len(base) :].split("/")
            if rest[0] and not (len(rest) == 1 and rest[0] in _ROUTE_SEGMENTS):
                return prefix.rstrip("/") + "/" + REDACTED
    if decoded != raw and _JWT.search(decoded):
        return _JWT.sub(REDACTED, decoded)
    return raw


def redact(text: str, path_prefixes: Iterable[str] = ()) -> str:
    """``text`` with every token-bearing part replaced by ``[redacted]``.

    :param path_prefixes: routes whose next path segment is a token, e.g. ``/confirm``.
    """
    prefixes = tuple(path_prefixes)
    if prefixes:
        text = _PATH.sub(lambda match: _redact_path(match.group(0), prefixes), text)
    text = _CREDENTIALS.sub(rf"\1\2{REDACTED}", text)
    text = _TOKEN_PARAMETER.sub(rf"\1{REDACTED}", text)
    return _JWT.sub(REDACTED, text)


class RedactingFilter(logging.Filter):
    """Rewrites a record's message (and traceback text) through :func:`redact`."""

    def __init__(self, path_prefixes: Iterable[str] = ()) -> None:
        super().__init__()
        self.path_prefixes = list(path_prefixes)

    def add_prefixes(self, prefixes: Iterable[str]) -> None:
        self.path_prefixes.extend(p for p in prefixes if p not in self.path_prefixes)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to logging's own error path
            return True
        record.msg = redact(message, self.path_prefixes)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.path_prefixes)
            # Formatters print exc_text; the exception itself (its message may hold a
            # token) is dropped so that no handler formats it again unredacted.
            record.exc_info = None
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self.path_prefixes)
        return True


def install_log_redaction(
    logger_names: Iterable[str] = SERVER_LOGGERS, path_prefixes: Iterable[str] = ()
) -> None:
    """Put one :class:`RedactingFilter` on each named logger (again: add the prefixes)."""
    prefixes = list(path_prefixes)
    for name in logger_names:
        logger = logging.getLogger(name)
        existing = next((f for f in logger.filters if isinstance(f, RedactingFilter)), None)
        if existing is None:
            logger.addFilter(RedactingFilter(prefixes))
        else:
            existing.add_prefixes(prefixes)
