"""The exceptions flask-confirm-mail raises, rooted in :class:`ConfirmMailError`.

Messages never contain a token, a secret or the value that was expected.
"""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout


class ConfirmMailError(Exception):
    """Base class of every error raised by flask-confirm-mail."""


class ConfigurationError(ConfirmMailError):
    """Settings are missing or unsafe; raised by ``init_app`` and the mailer's ``create_app``.
    ``errors`` holds one message per problem; the message lists them, one a line."""

    def __init__(self, *errors: str) -> None:
        self.errors = list(errors)
        many = f"{len(errors)} configuration errors:" + "".join(f"\n- {e}" for e in errors)
        super().__init__(*errors if len(errors) < 2 else [many])


class NotInitializedError(ConfirmMailError, RuntimeError):
    """The extension is used on an app that did not call ``init_app``."""


class AddressError(ConfirmMailError, ValueError):
    """An email address is not a single, plain ``local@domain`` address."""


class TokenError(ConfirmMailError):
    """A token was refused. ``reason`` is a short, public, machine-readable word:
    ``malformed``, ``wrong_kind``, ``bad_signature``, ``bad_claims`` or ``expired``."""

    reason = "invalid"

    def __init__(self, message: str = "The token is not valid.", *, reason: str | None = None):
        super().__init__(message)
        self.reason = reason or self.reason


class InvalidToken(TokenError):
    """The token cannot be used: malformed, forged, of another kind, or with bad claims."""


class ExpiredToken(InvalidToken):
    """The token is genuine but its lifetime is over."""

    reason = "expired"

    def __init__(self, message: str = "The token has expired.") -> None:
        super().__init__(message)


class DeliveryError(ConfirmMailError):
    """A message could not be handed over; ``permanent`` ones are not retried. ``bounced``:
    the server refused the recipient or the message for good (5xx to ``RCPT`` or after
    ``DATA``); implies ``permanent``. ``outcome_unknown``: the answer to the message was lost,
    so it may have been delivered; it is retried with the same Message-ID.
    ``connection_refused``: the server would not open a new connection (421, or refused)."""

    def __init__(
        self, message: str, *, permanent: bool = False, bounced: bool = False,
        outcome_unknown: bool = False, connection_refused: bool = False,
    ) -> None:  # fmt: skip
        super().__init__(message)
        self.permanent = permanent or bounced
        self.bounced = bounced
        self.outcome_unknown = outcome_unknown
        self.connection_refused = connection_refused


#: A database outage (pages answer 503, delivery retries): a connection refused, lost or
#: stale, a full or read-only file, a lock or a pool connection not granted in time. Errors
#: in the data or the SQL are not outages.
DATABASE_FAULTS: tuple[type[SQLAlchemyError], ...] = (OperationalError, InterfaceError, PoolTimeout)


def is_database_fault(error: BaseException) -> bool:
    """Whether ``error`` is in :data:`DATABASE_FAULTS`, or any driver error that SQLAlchemy
    took for a lost connection (a cut mid-query can surface as another class)."""
    if isinstance(error, DATABASE_FAULTS):
        return True
    return isinstance(error, DBAPIError) and bool(error.connection_invalidated)
