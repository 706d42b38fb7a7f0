"""What the mailer does with a verified request, whichever endpoint it came through.

:meth:`MailerService.handle` runs the checks the original lacked, in order: one valid
recipient, a link inside the allowlist that carries the link token, a link token made
for that recipient, replay (a token sends once; again, it answers "already sent"),
the per-recipient rate limit; then it renders the email from the templates
``mailer/<template>.txt`` and ``.html`` (Flask autoescapes the HTML one, so every value
there is escaped), in the request's locale through the package's gettext catalogs, and
sends it. Every outcome is an :class:`Answer`, the JSON
``{"error": <code>, "msg": <text>, "id": <Message-ID or null>}``.
"""

from __future__ import annotations

import gettext
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from email.message import EmailMessage
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from babel.units import format_unit
from flask import Response, jsonify, render_template
from jinja2 import pass_eval_context
from jinja2.nodes import EvalContext
from markupsafe import Markup

from ..errors import DeliveryError
from ..smtp import SMTPSender, build_message, lifetime_in_units
from .caller_text import TextRefused, check_extra
from .link_policy import LinkRefused
from .rate_limit import RateLimiter
from .replay import ReplayStore, StoreUnavailable
from .settings import MailerSettings
from .wire import ErrorCode, MailRequest, RecipientRefused, check_recipient, peek_link_token

__all__ = ["LEGACY_REPLAY_WINDOW", "STORE_RETRY_AFTER", "Answer", "MailerService"]

#: The ``Retry-After`` (seconds) of the 503 answered while a shared store is unreachable.
STORE_RETRY_AFTER = 5

#: How long the replay key of a legacy token without ``exp`` is remembered, in seconds.
LEGACY_REPLAY_WINDOW = 86400

#: The app's logger (``Flask("flask_confirm_mail.mailer").logger``), which redacts tokens.
_log = logging.getLogger(__package__)

#: The package's gettext catalogs, the ones :mod:`flask_confirm_mail.i18n` reads.
_TRANSLATIONS = Path(__file__).parent.parent / "translations"
_DOMAIN = "flask_confirm_mail"


@lru_cache(maxsize=64)
def _catalog(locale: str | None) -> tuple[str, gettext.NullTranslations]:
    """The language and catalog for ``locale`` (a checked :data:`~.wire.LOCALE`): its own
    catalog, else its language's (``de_AT`` reads ``de``), else English's.

    A catalog is only read, never switched to, so concurrent requests cannot mix languages.
    """
    parts = (locale or "en").replace("-", "_").split("_")
    for language in dict.fromkeys(("_".join(parts), parts[0].lower(), "en")):
        path = _TRANSLATIONS / language / "LC_MESSAGES" / f"{_DOMAIN}.mo"
        if path.is_file():
            with path.open("rb") as file:
                return language, gettext.GNUTranslations(file)
    return "en", gettext.NullTranslations()


def _translator(catalog: gettext.NullTranslations) -> Callable[..., str]:
    """The templates' ``_``: ``catalog``'s text, then ``%``-formatted; in HTML the
    translation is markup and the values are escaped, as in the core's templates."""

    @pass_eval_context
    def translate(eval_ctx: EvalContext, string: str, **variables: Any) -> str:
        translated = catalog.gettext(string)
        if eval_ctx.autoescape:
            translated = Markup(translated)
        return translated % variables if variables else translated

    return translate


@dataclass(frozen=True)
class Answer:
    """One answer of the mailer, before it becomes an HTTP response.

    ``error`` keeps the original Variance mailer's meanings (0 sent, 1 "Problem with
    token", 2 delivery failure) and adds codes for the checks the original lacked; ``id``
    is the sent message's ``Message-ID``, ``None`` when nothing was sent.
    """

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


class MailerService:
    """The checks and the sending, shared by the v1 and the legacy endpoints."""

    def __init__(
        self,
        settings: MailerSettings,
        *,
        replay_store: ReplayStore,
        rate_limiter: RateLimiter,
        smtp: SMTPSender,
    ) -> None:
        self.settings = settings
        self.replay_store = replay_store
        self.rate_limiter = rate_limiter
        self.smtp = smtp

    def handle(self, request: MailRequest, *, app_name: str | None = None) -> Answer:
        """Check ``request`` and send its email; call inside an app context.

        :param app_name: the caller's fixed app name (``MAILER_CALLERS``,
            ``MAILER_APP_NAME_FIXED``); ``None`` lets ``extra.app_name`` choose it.
        """
        refused: RecipientRefused | None = None
        try:
            recipient = check_recipient(request)
        except RecipientRefused as exc:
            if exc.reason == "invalid":
                return Answer(400, ErrorCode.RECIPIENT_REFUSED, str(exc))
            refused = exc  # answered after the link check, which comes first
        try:
            self.settings.link_policy.check(request.link_url, request.link_token)
        except LinkRefused as exc:
            return Answer(403, ErrorCode.LINK_REFUSED, str(exc).rstrip("."))
        if refused is not None:
            return Answer(400, ErrorCode.RECIPIENT_REFUSED, str(refused))
        extra = dict(request.extra)
        if app_name is not None:
            extra.pop("app_name", None)  # the configuration's, not the caller's
        try:
            check_extra(extra, link_host=urlsplit(request.link_url).hostname)
        except TextRefused as exc:
            return Answer(400, ErrorCode.TEXT_REFUSED, str(exc).rstrip("."))
        if app_name is not None:
            extra["app_name"] = app_name
        request = replace(request, extra=extra)
        try:
            return self._reserve_and_send(request, recipient)
        except StoreUnavailable as exc:
            _log.warning("Nothing sent: %s", exc)
            return Answer(
                503,
                ErrorCode.UNAVAILABLE,
                "A shared store is unavailable; nothing was sent, retry later",
                retry_after=STORE_RETRY_AFTER,
            )

    def _reserve_and_send(self, request: MailRequest, recipient: str) -> Answer:
        key = request.replay_key
        if key:
            reservation = self.replay_store.reserve(key, self._remember_until(request))
            if reservation.state == "sent":
                return Answer(200, ErrorCode.OK, "Already sent", reservation.message_id)
            if reservation.state == "pending":
                return Answer(
                    409, ErrorCode.IN_PROGRESS, "This token is being sent; retry", retry_after=1
                )
        return self._send(request, recipient)

    def _remember_until(self, request: MailRequest) -> float:
        if request.expires_at is None:
            return time.time() + LEGACY_REPLAY_WINDOW
        return request.expires_at + self.settings.leeway

    def _send(self, request: MailRequest, recipient: str) -> Answer:
        """Send for a reserved ``request`` (its key is released unless it was sent)."""
        key = request.replay_key
        rate_key = recipient.lower()
        counted = sent = False
        message_id = f"<{secrets.token_urlsafe(18)}@{self.settings.domain}>"
        try:
            retry_after = self.rate_limiter.acquire(rate_key)
            if retry_after is not None:
                return Answer(
                    429,
                    ErrorCode.RATE_LIMITED,
                    "Too many emails to this recipient; retry later",
                    retry_after=retry_after,
                )
            counted = True
            try:
                self.smtp.send(self._render(request, recipient, message_id))
            except DeliveryError as exc:
                _log.warning("Delivery failed: %s", exc)
                status = 502 if exc.permanent else 503
                return Answer(status, ErrorCode.DELIVERY_FAILED, f"Delivery failed: {exc}")
            sent = True
        finally:
            if not sent:
                self._undo(key, rate_key if counted else None)
        if key:
            try:
                self.replay_store.complete(key, message_id)
            except StoreUnavailable as exc:
                # Sent: the key stays reserved until the token expires, so a retry of
                # this token answers 409 rather than sending a second email.
                _log.warning("Sent %s, but could not record it: %s", message_id, exc)
        return Answer(200, ErrorCode.OK, "All ok", message_id)

    def _undo(self, key: str | None, rate_key: str | None) -> None:
        """Give back the rate-limit hit and the replay key of an email not sent."""
        try:
            if rate_key is not None:
                self.rate_limiter.refund(rate_key)
        except StoreUnavailable as exc:
            _log.warning("Could not give back a rate-limit hit: %s", exc)
        try:
            if key:
                self.replay_store.release(key)
        except StoreUnavailable as exc:
            _log.warning("Could not release a token id: %s", exc)

    def _render(self, request: MailRequest, recipient: str, message_id: str) -> EmailMessage:
        """The ``request.template`` email for ``recipient``, text and HTML alternatives.

        :raises DeliveryError: (permanent) a header value could break its line.
        """
        settings, extra = self.settings, request.extra
        link = peek_link_token(request.link_token)
        lifetime = link.lifetime if link is not None else None
        app_name = extra.get("app_name") or settings.app_name
        language, catalog = _catalog(request.locale)
        words = ""
        if lifetime:
            count, unit = lifetime_in_units(timedelta(seconds=lifetime))
            words = format_unit(count, f"duration-{unit}", length="long", locale=language)
        translate = None if language == "en" else catalog.gettext
        subject = settings.subject(request.template, app_name, translate)
        context = {
            "_": _translator(catalog),
            "html_lang": language.replace("_", "-"),
            "subject": subject,
            "app_name": app_name,
            "user_name": extra.get("user_name", ""),
            "access_key": extra.get("access_key", ""),
            "code": request.code,
            "link": request.link_url,
            "lifetime": words,
            "recipient": recipient,
        }
        return build_message(
            subject=subject,
            sender=(settings.sender_name, settings.sender_address),
            recipient=recipient,
            text=render_template(f"mailer/{request.template}.txt", **context),
            html=render_template(f"mailer/{request.template}.html", **context),
            message_id=message_id,
        )
