"""flask-confirm-mail: the whole email-confirmation flow for Flask (its public API)."""

from __future__ import annotations

from .addresses import is_valid_address, normalize_address
from .confirmation import (
    Outcome,
    change_email,
    deliver,
    deliver_due,
    find_user,
    is_confirmed,
    link_base_url,
    redact_request_logs,
    send_confirmation,
    stop_delivery,
)
from .decorators import confirmed_required, signup_view
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
from .signals import (
    confirmation_bounced,
    confirmation_requested,
    confirmation_sent,
    delivery_failed,
    email_change_cancelled,
    email_change_requested,
    email_confirmed,
    message_delivered,
    unconfirmed_account_pruned,
)
from .transport import ConfirmationEmail, Transport
from .users import ConfirmableMixin

__version__ = "0.1.0"

__all__ = [
    "AddressError",
    "ConfigurationError",
    "ConfirmMail",
    "ConfirmMailError",
    "ConfirmableMixin",
    "ConfirmationEmail",
    "DeliveryError",
    "ExpiredToken",
    "InvalidToken",
    "NotInitializedError",
    "Outcome",
    "TokenError",
    "Transport",
    "change_email",
    "deliver",
    "deliver_due",
    "find_user",
    "confirmation_bounced",
    "confirmation_requested",
    "confirmation_sent",
    "confirmed_required",
    "delivery_failed",
    "email_change_cancelled",
    "email_change_requested",
    "email_confirmed",
    "unconfirmed_account_pruned",
    "is_confirmed",
    "is_valid_address",
    "link_base_url",
    "message_delivered",
    "normalize_address",
    "redact_request_logs",
    "send_confirmation",
    "signup_view",
    "stop_delivery",
]
