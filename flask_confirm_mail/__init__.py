"""flask-confirm-mail: the whole email-confirmation flow for Flask.

Sign-up hook, link tokens, a transactional outbox with in-process or remote delivery,
and the ``/confirm/<token>`` route that marks the user confirmed.
"""

from __future__ import annotations

from .addresses import is_valid_address, normalize_address
from .confirmation import Outcome, change_email, is_confirmed, send_confirmation
from .decorators import confirmed_required, signup_view
from .delivery import BatchReport
from .errors import (
    AddressError,
    ConfigurationError,
    ConfirmMailError,
    DeliveryError,
    ExpiredToken,
    InvalidToken,
    NotInitializedError,
    TokenError,
)
from .extension import ConfirmMail
from .flask_mail_transport import FlaskMailTransport
from .log_redaction import install_request_log_redaction
from .remote_transport import RemoteTransport
from .settings import derive_link_secret
from .signals import (
    confirmation_requested,
    confirmation_sent,
    delivery_failed,
    email_change_requested,
    email_confirmed,
    message_delivered,
)
from .state import get_state
from .transport import ConfirmationEmail, Transport, TransportConnection
from .user_model import ConfirmableMixin

__version__ = "0.1.0.dev0"

__all__ = [
    "AddressError",
    "BatchReport",
    "ConfigurationError",
    "ConfirmMail",
    "ConfirmMailError",
    "ConfirmableMixin",
    "ConfirmationEmail",
    "DeliveryError",
    "ExpiredToken",
    "FlaskMailTransport",
    "InvalidToken",
    "NotInitializedError",
    "Outcome",
    "RemoteTransport",
    "TokenError",
    "Transport",
    "TransportConnection",
    "change_email",
    "confirmation_requested",
    "confirmation_sent",
    "confirmed_required",
    "delivery_failed",
    "derive_link_secret",
    "email_change_requested",
    "email_confirmed",
    "get_state",
    "install_request_log_redaction",
    "is_valid_address",
    "is_confirmed",
    "message_delivered",
    "normalize_address",
    "send_confirmation",
    "signup_view",
]
