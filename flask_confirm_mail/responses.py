"""Pages or JSON: the one reader of JSON bodies and the 503 of a database outage."""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Any

from flask import Response, current_app, g, jsonify, make_response, render_template, request
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from werkzeug.exceptions import BadRequest
from werkzeug.wsgi import LimitedStream

from .confirmation import ConfirmationFlow, get_flow
from .errors import DATABASE_FAULTS, is_database_fault
from .i18n import gettext as _
from .i18n import template_context
from .redaction import redact
from .signup import COMMITTED

#: Seconds a client is asked to wait when the database is down.
RETRY_AFTER_OUTAGE = 30

logger = logging.getLogger("flask_confirm_mail")


def wants_json() -> bool:
    """Whether the client sent JSON or prefers JSON to HTML."""
    accept = request.accept_mimetypes
    best = accept.best_match(["text/html", "application/json"])
    return request.is_json or (best == "application/json" and accept[best] > accept["text/html"])


def load_json(body: bytes | str, max_depth: int = 32) -> Any:
    """Parse untrusted JSON nested at most ``max_depth`` levels deep.

    :raises ValueError: not JSON (or not UTF-8/16/32), nested deeper, or holding a lone
        surrogate, which no later ``.encode()`` survives."""
    try:
        value = json.loads(body)
        json.dumps(value, ensure_ascii=False).encode()  # one pass in C over every string
    except RecursionError:
        raise ValueError("The JSON is nested too deeply.") from None
    containers = [value] if isinstance(value, (dict, list)) else []
    for _depth in range(max_depth):
        containers = [
            item
            for container in containers
            for item in (container.values() if isinstance(container, dict) else container)
            if isinstance(item, (dict, list))
        ]
    if containers:
        raise ValueError("The JSON is nested too deeply.")
    return value


def request_json() -> dict[str, Any]:
    """The request's JSON body if it is an object, else ``{}``.

    :raises BadRequest: the body is not JSON, or nested too deeply (a 400, never a 500)."""
    try:
        data = load_json(request.get_data(cache=True))
    except ValueError:
        raise BadRequest(_("The body is not JSON.")) from None
    return data if isinstance(data, dict) else {}


def database_unavailable(error: SQLAlchemyError) -> Response:
    """Answer a database fault with ``503``, a page or JSON, after rolling the session back
    (nothing half saved) and logging the path, tokens redacted. Before the request committed
    anything, it says nothing was saved and sends ``Retry-After``; after a commit (a sign-up
    saved, its email queued), it says the request went through, so nobody signs up twice.
    An app may register it for :data:`~flask_confirm_mail.errors.DATABASE_FAULTS`."""
    flow = get_flow()
    roll_back(flow)
    cause = type(error.orig if isinstance(error, DBAPIError) else error).__name__
    path = redact(request.path, [flow.settings.url_prefix])
    saved = bool(g.get(COMMITTED))
    after = " after a commit" if saved else ""
    logger.warning("Database unavailable on %s %s%s (%s)", request.method, path, after, cause)
    message = _("The service cannot reach its database; nothing was saved. Try again in a minute.")
    if saved:
        message = _(
            "Your request went through, but this page could not be shown. If you signed up, "
            "a confirmation email is on its way: open its link to continue."
        )
    if wants_json():
        response = jsonify(status="error", error="service unavailable", saved=saved)
    else:
        try:
            # The extension's ``_`` also when an app registered this for its own views.
            context = {**template_context(), "message": message}
            response = make_response(render_template("confirm_mail/unavailable.html", **context))
        except DATABASE_FAULTS:  # an app's template read the database after all
            roll_back(flow)
            response = make_response(message, {"Content-Type": "text/plain; charset=utf-8"})
    response.status_code = 503
    if not saved:
        response.headers["Retry-After"] = str(RETRY_AFTER_OUTAGE)
    return response


def roll_back(flow: ConfirmationFlow) -> None:
    """Roll the request's session back, even when its connection is gone (the pool drops it)."""
    with contextlib.suppress(SQLAlchemyError):
        flow.db.session.rollback()


def answer_database_fault(error: SQLAlchemyError) -> Response:
    """A view decorator's answer to ``error``: :func:`database_unavailable` for a database
    fault the app has no handler for; anything else is raised again."""
    if not is_database_fault(error):
        raise error
    if current_app._find_error_handler(error, request.blueprints) is not None:
        roll_back(get_flow())
        raise error
    return database_unavailable(error)


def bound_stream(limit: int) -> None:
    """Make reading more than ``limit`` bytes of the request body a 413, as setting
    ``request.max_content_length`` does from Flask 3.1 (Flask 3.0 has no setter for it).
    Call it before anything reads the body."""
    request.environ["wsgi.input"] = LimitedStream(request.environ["wsgi.input"], limit, is_max=True)
