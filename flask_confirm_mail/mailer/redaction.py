"""Keeps tokens out of log lines: a :class:`logging.Filter` for every request log.

The legacy endpoints carry the wrapping token in the URL path and the v1 endpoint in
the ``Authorization`` header; either may reach a log line through gunicorn's access
log (``%(r)s``, ``%(U)s``, ``%({authorization}i)s``), werkzeug's development-server log,
or an error message. :func:`install_log_redaction` puts :class:`RedactingFilter` on
those loggers, which rewrites each record's final text before any handler sees it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

__all__ = ["REDACTED", "RedactingFilter", "install_log_redaction", "redact"]

REDACTED = "[redacted]"

_PATTERNS = (
    # Authorization header values, whatever their shape.
    (re.compile(r"(?i)\b(bearer|basic)(\s+)[^\s\"',]+"), rf"\1\2{REDACTED}"),
    # The token segment of the legacy paths: /emailservice[-x]/[service/]<token>.
    (re.compile(r"(/emailservice[\w-]*/(?:[^/\s?\"]+/)?)[^/\s?\"]+"), rf"\1{REDACTED}"),
    # Token-like query parameters.
    (re.compile(r"(?i)\b((?:token|jwt|access_token)=)[^&\s\"]+"), rf"\1{REDACTED}"),
    # Anything shaped like a JWT (its base64url JSON header starts with "eyJ").
    (re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]*)?"), REDACTED),
)


def redact(text: str) -> str:
    """``text`` with every token-bearing part replaced by ``[redacted]``."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFilter(logging.Filter):
    """Rewrites a record's message (and traceback text) through :func:`redact`."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to logging's own error path
            return True
        record.msg = redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


#: The loggers that write request lines: gunicorn's and werkzeug's.
SERVER_LOGGERS = ("gunicorn.access", "gunicorn.error", "werkzeug")


def install_log_redaction(names: Iterable[str] = ()) -> None:
    """Put one :class:`RedactingFilter` on the server loggers and on ``names``."""
    for name in (*SERVER_LOGGERS, *names):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactingFilter) for f in logger.filters):
            logger.addFilter(RedactingFilter())
