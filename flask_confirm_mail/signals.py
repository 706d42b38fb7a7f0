"""Signals sent by flask-confirm-mail on one blinker namespace, with the application as
sender (``current_app._get_current_object()``)."""

from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

confirmation_requested = _signals.signal(
    "confirmation-requested",
    doc="""A confirmation email was queued in the outbox, in the caller's transaction.

    Arguments: ``user``, ``email``, ``purpose`` (``signup``, ``change``, ``change_notice`` to
    the old address, or ``reminder``), ``outbox`` (the row; its id is set once the session
    flushes, at once in a sign-up).""",
)

confirmation_sent = _signals.signal(
    "confirmation-sent",
    doc="""A confirmation email was handed to the transport. Arguments: ``user_id``
    (string), ``email``, ``purpose``, ``message_id``.""",
)

email_confirmed = _signals.signal(
    "email-confirmed",
    doc="""An address was confirmed; sent exactly once per confirmation. Arguments:
    ``user`` (reloaded), ``email``, ``purpose``.""",
)

email_change_requested = _signals.signal(
    "email-change-requested",
    doc="""A user asked to change address; the new one waits for confirmation.
    Arguments: ``user``, ``old_email``, ``new_email``.""",
)

email_change_cancelled = _signals.signal(
    "email-change-cancelled",
    doc="""The old address's link cancelled a pending change; sent once. Lock the account or
    alert its owner here. Arguments: ``user``, ``old_email``, ``new_email``.""",
)

message_delivered = _signals.signal(
    "message-delivered",
    doc="""An outbox message was delivered. Arguments: ``outbox_id``, ``attempt`` (1 for
    the first), ``message_id``, ``recipient``.""",
)

delivery_failed = _signals.signal(
    "delivery-failed",
    doc="""An outbox message could not be delivered on this attempt.

    Arguments: ``outbox_id``, ``attempt``, ``dead`` (no retry left), ``error`` (short, no
    secret), ``recipient``, ``permanent`` (refused for good: not retried), ``bounced`` (the
    recipient or message refused: 5xx to ``RCPT`` or after ``DATA``), ``message_id``.""",
)

confirmation_bounced = _signals.signal(
    "confirmation-bounced",
    doc="""An address was marked undeliverable (a permanent SMTP refusal, or a provider's
    bounce or complaint webhook); sent once per mark.

    Arguments: ``user_id`` (string), ``email``, ``kind`` (``bounce`` or ``complaint``),
    ``reason``, ``source`` (``smtp``, ``postmark``, ``mailgun``, ``sendgrid`` or ``ses``),
    ``message_id``.""",
)

unconfirmed_account_pruned = _signals.signal(
    "unconfirmed-account-pruned",
    doc="""``flask confirm-mail prune --yes`` is about to delete a never-confirmed account.

    Sent in the deleting transaction, before the delete: delete what hangs off the user in
    the same session. Arguments: ``user``, ``email``.""",
)
