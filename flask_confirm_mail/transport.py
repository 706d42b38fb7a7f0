"""The seam between the outbox and whatever hands a message over.

A :class:`Transport` opens a :class:`TransportConnection` for a batch of messages; the
connection's :meth:`~TransportConnection.send` takes one :class:`ConfirmationEmail`
and raises :class:`~flask_confirm_mail.errors.DeliveryError` when it could not hand it
over. Both run inside an application context of the app that owns the outbox.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any


@dataclass(frozen=True)
class ConfirmationEmail:
    """Everything needed to write one confirmation email, minted at send time."""

    #: The outbox row this message comes from.
    outbox_id: int
    #: The user's primary key, as a string (the link token's ``sub``).
    user_id: str
    #: The single, validated recipient address.
    recipient: str
    #: ``"signup"`` (confirm the address of a new account) or ``"change"`` (a new address).
    purpose: str
    #: The confirm route's URL up to the token, e.g. ``https://site.example/confirm/``.
    link_prefix: str
    #: The freshly minted link token.
    link_token: str = field(repr=False)
    #: When the link stops working (naive UTC).
    expires_at: datetime
    #: How long the link works, counted from this message's sending.
    lifetime: timedelta
    #: The Message-ID header, kept across retries: ``<...@domain>``.
    message_id: str
    #: Extra values the app gave for the templates (JSON-safe).
    context: Mapping[str, Any] = field(default_factory=dict)

    @property
    def link(self) -> str:
        """The confirmation link: the prefix followed by the token."""
        return self.link_prefix + self.link_token


class TransportConnection(ABC):
    """An open channel for a batch of messages; close it when the batch is done."""

    @abstractmethod
    def send(self, email: ConfirmationEmail) -> None:
        """Hand one message over, or raise :class:`~flask_confirm_mail.errors.DeliveryError`."""

    def prepare(self, email: ConfirmationEmail) -> Any:
        """Do a message's CPU work ahead of :meth:`send_prepared` (optional).

        The delivery loop calls it in a helper thread, with an application context, while
        the previous message is on the wire; the default does nothing.
        """
        return email

    def send_prepared(self, prepared: Any) -> None:
        """Hand over what :meth:`prepare` returned."""
        self.send(prepared)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what the connection holds."""

    def __enter__(self) -> TransportConnection:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Transport(ABC):
    """A way to deliver confirmation emails (in-process SMTP, a remote mailer, ...)."""

    #: The value of ``CONFIRM_MAIL_TRANSPORT`` that selects this transport.
    name: str = ""

    @abstractmethod
    def connect(self) -> TransportConnection:
        """Open a connection for a batch; called in an application context."""
