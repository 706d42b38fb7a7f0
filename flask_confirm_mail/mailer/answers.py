"""The mailer's answers: one JSON shape, ``{"error": <code>, "msg": <text>, "id": <id>}``.

``error`` keeps the original Variance mailer's meanings (0 sent, 1 "Problem with token",
2 delivery failure) and adds codes for the checks the original lacked. ``id`` is the
sent message's ``Message-ID``, ``null`` when nothing was sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from flask import Response, jsonify

__all__ = ["Answer", "ErrorCode"]


class ErrorCode(IntEnum):
    """The ``error`` member of every answer."""

    #: The email was sent (or had already been sent for this token).
    OK = 0
    #: The token is missing, forged, expired, of another kind or lacks a claim.
    BAD_TOKEN = 1
    #: The SMTP server did not take the email; retry later.
    DELIVERY_FAILED = 2
    #: The link is outside the allowlist or does not carry the link token.
    LINK_REFUSED = 3
    #: The recipient is not one valid address, or not the one the link was made for.
    RECIPIENT_REFUSED = 4
    #: Too many emails to this recipient lately; see ``Retry-After``.
    RATE_LIMITED = 5
    #: Another request is sending this very token right now; retry shortly.
    IN_PROGRESS = 6
    #: The HTTP request itself is wrong (unknown path, wrong method, ...).
    BAD_REQUEST = 7
    #: An unexpected failure inside the mailer; retry later.
    INTERNAL = 8


@dataclass(frozen=True)
class Answer:
    """One answer of the mailer, before it becomes an HTTP response."""

    status: int
    error: ErrorCode
    msg: str
    id: str | None = None
    retry_after: int | None = None

    def to_response(self) -> Response:
        """The JSON response, with ``Retry-After`` when set and never cached."""
        response = jsonify({"error": int(self.error), "msg": self.msg, "id": self.id})
        response.status_code = self.status
        response.headers["Cache-Control"] = "no-store"
        if self.retry_after is not None:
            response.headers["Retry-After"] = str(self.retry_after)
        if self.status == 401:
            response.headers["WWW-Authenticate"] = "Bearer"
        return response
