"""The exceptions this package raises, rooted in :class:`ConfirmMailError`.

The tree follows itsdangerous' ``BadData`` family: catch the base class to handle
everything, or a leaf to handle one case. Messages never contain a token, a secret
or the value that was expected.
"""

from __future__ import annotations


class ConfirmMailError(Exception):
    """Base class of every error raised by flask-confirm-mail."""


class ConfigurationError(ConfirmMailError):
    """A setting is missing or unsafe; raised by ``init_app`` and ``create_app``."""


class NotInitializedError(ConfirmMailError, RuntimeError):
    """The extension is used on an app that did not call ``init_app``."""


class TokenError(ConfirmMailError):
    """A token was refused. ``reason`` is a short, public, machine-readable word."""

    reason = "invalid"

    def __init__(self, message: str = "The token is not valid.", *, reason: str | None = None):
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class InvalidToken(TokenError):
    """The token is malformed, forged, of another purpose or otherwise unusable."""


class ExpiredToken(TokenError):
    """The token was genuine but its lifetime is over."""

    reason = "expired"

    def __init__(self, message: str = "The token has expired.") -> None:
        super().__init__(message, reason="expired")


class AddressError(ConfirmMailError, ValueError):
    """An email address is not a single, plain ``local@domain`` address."""


class DeliveryError(ConfirmMailError):
    """A message could not be handed over; ``permanent`` ones are not retried."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent
