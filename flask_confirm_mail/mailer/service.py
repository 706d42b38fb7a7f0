"""What the mailer does with a verified request, whichever endpoint it came through.

:meth:`MailerService.handle` runs the checks the original lacked, in order: one valid
recipient, a link inside the allowlist that carries the link token, a link token made
for that recipient, replay (a token sends once; again, it answers "already sent"),
the per-recipient rate limit; then it renders and sends the email.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..addresses import normalize_address
from ..errors import AddressError, DeliveryError
from ..wrapping_token import UnverifiedLink, peek_link_token
from .answers import Answer, ErrorCode
from .link_policy import LinkRefused
from .messages import build_email
from .rate_limit import RateLimiter
from .replay import ReplayStore
from .settings import MailerSettings
from .smtp_pool import SMTPSessionPool

__all__ = ["LEGACY_REPLAY_WINDOW", "MailRequest", "MailerService"]

#: How long the ``jti`` of a legacy token without ``exp`` is remembered, in seconds.
LEGACY_REPLAY_WINDOW = 86400

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MailRequest:
    """One verified request to send an email, from either kind of token."""

    recipient: str
    template: str
    link_url: str = field(repr=False)
    link_token: str = field(repr=False)
    extra: Mapping[str, str] = field(default_factory=dict, repr=False)
    #: ``None`` only for legacy tokens without ``jti`` (no replay protection).
    jti: str | None = None
    #: The token's ``exp`` (epoch seconds); ``None`` only for legacy tokens.
    expires_at: int | None = None


class MailerService:
    """The checks and the sending, shared by the v1 and the legacy endpoints."""

    def __init__(
        self,
        settings: MailerSettings,
        *,
        replay_store: ReplayStore,
        rate_limiter: RateLimiter,
        smtp_pool: SMTPSessionPool,
    ) -> None:
        self.settings = settings
        self.replay_store = replay_store
        self.rate_limiter = rate_limiter
        self.smtp_pool = smtp_pool

    def handle(self, request: MailRequest) -> Answer:
        """Check ``request`` and send its email; call inside an app context."""
        try:
            recipient = normalize_address(request.recipient)
        except AddressError:
            return Answer(
                400, ErrorCode.RECIPIENT_REFUSED, "The recipient is not one valid address"
            )
        link = self._check_link(request, recipient)
        if isinstance(link, Answer):
            return link
        if request.jti is not None:
            reservation = self.replay_store.reserve(request.jti, self._remember_until(request))
            if reservation.state == "sent":
                return Answer(200, ErrorCode.OK, "Already sent", reservation.message_id)
            if reservation.state == "pending":
                return Answer(
                    409, ErrorCode.IN_PROGRESS, "This token is being sent; retry", retry_after=1
                )
        return self._send(request, recipient, link.lifetime)

    def _check_link(self, request: MailRequest, recipient: str) -> UnverifiedLink | Answer:
        """The link token's unverified payload if the link passes, else the refusal."""
        try:
            self.settings.link_policy.check(request.link_url, request.link_token)
        except LinkRefused as exc:
            return Answer(403, ErrorCode.LINK_REFUSED, str(exc).rstrip("."))
        link = peek_link_token(request.link_token)
        if link is None or link.email is None:
            return Answer(
                400, ErrorCode.RECIPIENT_REFUSED, "The link token does not name its recipient"
            )
        try:
            link_email = normalize_address(link.email)
        except AddressError:
            link_email = ""
        if link_email.lower() != recipient.lower():
            return Answer(
                400,
                ErrorCode.RECIPIENT_REFUSED,
                "The recipient is not the one the link was made for",
            )
        return link

    def _remember_until(self, request: MailRequest) -> float:
        if request.expires_at is None:
            return time.time() + LEGACY_REPLAY_WINDOW
        return request.expires_at + self.settings.leeway

    def _send(self, request: MailRequest, recipient: str, lifetime: int | None) -> Answer:
        jti = request.jti
        rate_key = recipient.lower()
        retry_after = self.rate_limiter.acquire(rate_key)
        if retry_after is not None:
            if jti is not None:
                self.replay_store.release(jti)
            return Answer(
                429,
                ErrorCode.RATE_LIMITED,
                "Too many emails to this recipient; retry later",
                retry_after=retry_after,
            )
        sent = False
        try:
            email = build_email(
                self.settings,
                recipient=recipient,
                template=request.template,
                link=request.link_url,
                lifetime=lifetime,
                extra=request.extra,
            )
            self.smtp_pool.send(email.sender, email.recipient, email.data)
            sent = True
        except DeliveryError as exc:
            _log.warning("Delivery failed: %s", exc)
            status = 502 if exc.permanent else 503
            return Answer(status, ErrorCode.DELIVERY_FAILED, f"Delivery failed: {exc}")
        finally:
            if not sent:
                self.rate_limiter.refund(rate_key)
                if jti is not None:
                    self.replay_store.release(jti)
        if jti is not None:
            self.replay_store.complete(jti, email.message_id)
        return Answer(200, ErrorCode.OK, "All ok", email.message_id)
