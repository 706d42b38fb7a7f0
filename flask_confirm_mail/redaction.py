"""Keeping tokens out of log lines: :func:`redact` and a :class:`logging.Filter` built on it.

A token can reach a log through a server's request line, an ``Authorization`` header or an
error message. Nothing here touches a logger until an app or the mailer asks for it.
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
_PATH = re.compile(r"/[^\s\"'<>]*")  # a URL path in a log line: up to white space or a quote


def _redact_path(raw: str, prefixes: tuple[str, ...]) -> str:
    decoded = unquote(unquote(raw))
    path = re.sub(r"/{2,}", "/", decoded.partition("?")[0]).lower()
    for prefix in (p.rstrip("/") for p in prefixes):
        base = prefix.lower() + "/"
        rest = path[len(base) :].split("/")
        if path.startswith(base) and rest[0] and rest != ["resend"]:  # resend is a route
            return f"{prefix}/{REDACTED}"
    if decoded != raw and _JWT.search(decoded):
        return _JWT.sub(REDACTED, decoded)
    return raw


def redact(text: str, path_prefixes: Iterable[str] = ()) -> str:
    """``text`` with every token replaced by ``[redacted]``: JWT-shaped text, ``Bearer`` and
    ``Basic`` credentials, token-like query parameters, and the path segment after a prefix
    however the path is spelled (percent-encoded, doubled slashes, other case).

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
            # The exception itself (its message may hold a token) is dropped, so that no
            # handler formats it again unredacted; formatters print exc_text.
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
        found = next((f for f in logger.filters if isinstance(f, RedactingFilter)), None)
        if found is None:
            logger.addFilter(RedactingFilter(prefixes))
        else:
            found.path_prefixes.extend(p for p in prefixes if p not in found.path_prefixes)
