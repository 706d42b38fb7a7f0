"""The mailer's HTTP surface: ``POST /v1/messages`` and, when enabled, the legacy GETs.

``v1`` takes the wrapping token from ``Authorization: Bearer``, never from the URL.
``legacy`` reproduces the original Variance mailer's ``GET /emailservice.../<token>``
routes for apps written against it; it is registered only with
``MAILER_LEGACY_ENDPOINTS=1``, so otherwise those paths answer 404.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from flask import Blueprint, Response, current_app, request

from ..errors import InvalidToken, TokenError
from .redis_replay import RedisReplayStore
from .replay import MemoryReplayStore
from .service import STORE_RETRY_AFTER, Answer, MailerService
from .wire import ErrorCode, MailRequest, verify_legacy_token, verify_wrapping_token

__all__ = ["EXTENSION_KEY", "LEGACY_PATH_PREFIXES", "legacy", "v1"]

#: Where :func:`~flask_confirm_mail.mailer.create_app` keeps the :class:`MailerService`.
EXTENSION_KEY = "confirm_mail_mailer"

#: The legacy routes whose next path segment is a wrapping token (redacted in logs).
LEGACY_PATH_PREFIXES = (
    "/emailservice",
    "/emailservice-cat/signup",
    "/emailservice-cat/change",
    "/emailservice-usr/signup",
    "/emailservice-usr/change",
)

v1 = Blueprint("mailer_v1", __name__)
legacy = Blueprint("mailer_legacy", __name__)

_TOKEN_STATUS = {"bad_claims": 400}


def _service() -> MailerService:
    service: MailerService = current_app.extensions[EXTENSION_KEY]
    return service


def _token_refused(exc: TokenError, *, detail: bool) -> Response:
    msg = f"Problem with token ({exc.reason})" if detail else "Problem with token"
    return Answer(_TOKEN_STATUS.get(exc.reason, 401), ErrorCode.BAD_TOKEN, msg).to_response()


def _verify(
    service: MailerService, verify: Callable[[Sequence[bytes]], MailRequest]
) -> tuple[MailRequest, str | None]:
    """The request ``verify`` reads with the first caller's keys that sign it, and that
    caller's fixed app name.

    :raises TokenError: no caller's key signs it, or the signed token is not valid.
    """
    callers = service.settings.all_callers
    for caller in callers[:-1]:
        try:
            return verify(caller.secrets), caller.app_name
        except InvalidToken as exc:
            if exc.reason != "bad_signature":
                raise
    return verify(callers[-1].secrets), callers[-1].app_name


def _bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


@v1.post("/v1/messages")
def send_message() -> Response:
    """Send the email a v1 wrapping token asks for."""
    token = _bearer_token()
    if token is None:
        return Answer(
            401, ErrorCode.BAD_TOKEN, "Problem with token (send it as Authorization: Bearer)"
        ).to_response()
    service = _service()
    leeway = service.settings.leeway
    try:
        mail_request, app_name = _verify(
            service, lambda keys: verify_wrapping_token(token, keys, leeway=leeway)
        )
    except TokenError as exc:
        return _token_refused(exc, detail=True)
    return service.handle(mail_request, app_name=app_name).to_response()


@v1.get("/v1/health")
def health() -> Response:
    """Answers while the service runs; for load balancers and start-up probes.

    ``msg`` says where the stores live: ``ok; stores shared (redis)`` or ``ok; stores
    per process``; a 503 while Redis cannot be reached.
    """
    store = _service().replay_store
    if isinstance(store, RedisReplayStore):
        if not store.ping():
            return Answer(
                503, ErrorCode.UNAVAILABLE, "Redis unavailable", retry_after=STORE_RETRY_AFTER
            ).to_response()
        return Answer(200, ErrorCode.OK, "ok; stores shared (redis)").to_response()
    if isinstance(store, MemoryReplayStore):
        return Answer(200, ErrorCode.OK, "ok; stores per process").to_response()
    return Answer(200, ErrorCode.OK, "ok").to_response()


def _legacy_send(token: str, template: str) -> Response:
    service = _service()
    leeway = service.settings.leeway
    try:
        mail_request, app_name = _verify(
            service,
            lambda keys: verify_legacy_token(token, keys, template=template, leeway=leeway),
        )
    except TokenError as exc:
        return _token_refused(exc, detail=False)
    return service.handle(mail_request, app_name=app_name).to_response()


@legacy.get("/emailservice/<token>")
def legacy_article(token: str) -> Response:
    """The article's version: always the sign-up email."""
    return _legacy_send(token, "signup")


@legacy.get("/emailservice-cat/<any(signup, change):service>/<token>")
@legacy.get("/emailservice-usr/<any(signup, change):service>/<token>")
def legacy_service(service: str, token: str) -> Response:
    """CatLoader's and Minimal+User's versions: ``signup`` or ``change``."""
    return _legacy_send(token, service)
