"""Keep link tokens out of request logs.

Werkzeug's development server (and gunicorn's access log, when this filter is added to
``gunicorn.access``) write the request line, which holds ``/confirm/<token>``. The
filter replaces the token part with ``[redacted]`` before any handler sees it.
"""

from __future__ import annotations

import logging
import re

REDACTED = "[redacted]"


class TokenRedactingFilter(logging.Filter):
    """Redact the path segment after any of ``prefixes`` in a log record's text."""

    def __init__(self, prefixes: list[str]) -> None:
        super().__init__()
        self.prefixes = prefixes
        self._compile()

    def _compile(self) -> None:
        alternatives = "|".join(re.escape(p.rstrip("/")) for p in self.prefixes)
        self._pattern = re.compile(rf"((?:{alternatives})/)(?!resend\b)[^\s/?\"']+")

    def add_prefix(self, prefix: str) -> None:
        if prefix not in self.prefixes:
            self.prefixes.append(prefix)
            self._compile()

    def redact(self, text: str) -> str:
        return self._pattern.sub(rf"\g<1>{REDACTED}", text)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = self.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


_filters: dict[str, TokenRedactingFilter] = {}


def install_request_log_redaction(
    prefix: str, logger_names: tuple[str, ...] = ("werkzeug",)
) -> None:
    """Add (once per logger) a filter redacting tokens after ``prefix``."""
    for name in logger_names:
        existing = _filters.get(name)
        if existing is None:
            _filters[name] = TokenRedactingFilter([prefix])
            logging.getLogger(name).addFilter(_filters[name])
        else:
            existing.add_prefix(prefix)
