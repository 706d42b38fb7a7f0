"""Signals sent by flask-confirm-mail, on one blinker namespace.

Each is sent with the application as sender (``current_app._get_current_object()``).
"""

from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

confirmation_requested = _signals.signal(
    "confirmation-requested",
    doc="""A confirmation email was queued in the outbox (in the caller's transaction).

    Arguments: ``user`` (the model instance), ``email``, ``purpose`` (``signup`` or
    ``change``), ``outbox`` (the outbox row; its id is set once the session flushes).
    """,
)

confirmation_sent = _signals.signal(
    "confirmation-sent",
    doc="""A confirmation email was handed to the transport.

    Arguments: ``user_id`` (string), ``email``, ``purpose``, ``message_id``.
    """,
)

email_confirmed = _signals.signal(
    "email-confirmed",
    doc="""An address was confirmed; sent exactly once per confirmation.

    Arguments: ``user`` (the model instance, reloaded), ``email``, ``purpose``.
    """,
)

email_change_requested = _signals.signal(
    "email-change-requested",
    doc="""A user asked to change address; the new one waits for confirmation.

    Arguments: ``user``, ``old_email``, ``new_email``.
    """,
)

message_delivered = _signals.signal(
    "message-delivered",
    doc="""An outbox message was delivered.

    Arguments: ``outbox_id``, ``attempt`` (1 for the first try), ``message_id``,
    ``recipient`` (the address it went to).
    """,
)

delivery_failed = _signals.signal(
    "delivery-failed",
    doc="""An outbox message could not be delivered on this attempt.

    Arguments: ``outbox_id``, ``attempt``, ``dead`` (``True`` when no retry is left),
    ``error`` (a short text with no secret in it), ``recipient`` (the address),
    ``permanent`` (``True`` when the server refused it for good, a 5xx answer: a bounce).
    """,
)
