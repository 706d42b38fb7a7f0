"""How the extension answers: a page or JSON, the same ``status`` words either way.

Holds the one reader of JSON bodies (:func:`load_json`, :func:`request_json`), the
error answers, and the 503 of a database outage (:func:`database_unavailable`), used by
the blueprint's routes and by the view decorators.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from flask import Response, current_app, jsonify, make_response, render_template, request
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from werkzeug.exceptions import BadRequest

from .confirmation import ConfirmationFlow, get_flow
from .errors import DATABASE_FAULTS
from .i18n import gettext as _
from .i18n import template_context
from .redaction import redact

#: Seconds a client is asked to wait when the database is down.
RETRY_AFTER_OUTAGE = 30
#: Deepest JSON accepted from the outside (providers' documented bodies nest 4-5 levels).
MAX_JSON_DEPTH = 32

logger = logging.getLogger("flask_confirm_mail")


def wants_json() -> bool:
    """Whether the client asked for JSON (a JSON body, or JSON preferred over HTML)."""
    if request.is_json:
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return (
        best == "application/json"
        and request.accept_mimetypes[best] > request.accept_mimetypes["text/html"]
    )


def load_json(body: bytes | str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse untrusted JSON nested at most ``max_depth`` levels deep.

    :raises ValueError: not JSON (or not UTF-8/16/32), nested deeper, or holding a lone
        surrogate (``"\\ud800"``, which no later ``.encode()`` survives); JSON nested past
        the interpreter's recursion limit is refused here instead of raising
        :class:`RecursionError`.
    """
    try:
        value = json.loads(body)
    except RecursionError:
        raise ValueError("The JSON is nested too deeply.") from None
    try:  # one pass in C over every string, keys included
        json.dumps(value, ensure_ascii=False).encode()
    except RecursionError:
        raise ValueError("The JSON is nested too deeply.") from None
    level: list[Any] = [value]
    for _level in range(max_depth):
        level = [
            item
            for container in level
            if isinstance(container, (dict, list))
            for item in (container.values() if isinstance(container, dict) else container)
        ]
        if not level:
            return value
    if any(isinstance(item, (dict, list)) for item in level):
        raise ValueError("The JSON is nested too deeply.")
    return value


def request_json() -> dict[str, Any]:
    """The request's JSON object body (:func:`load_json`); ``{}`` for a body that is JSON
    but not an object.

    :raises BadRequest: the body is not JSON, or nested too deeply (a 400, never a 500).
    """
    try:
        data = load_json(request.get_data(cache=True))
    except ValueError:
        raise BadRequest(_("The body is not JSON.")) from None
    return data if isinstance(data, dict) else {}


def database_unavailable(error: SQLAlchemyError) -> Response:
    """Answer a database outage or fault: ``503`` with ``Retry-After``, a page or JSON.

    The session's transaction is rolled back first, so nothing of the request is left
    half saved, and its log line names the path with any token redacted. The
    blueprint's routes, :func:`~flask_confirm_mail.signup_view` and
    :func:`~flask_confirm_mail.confirmed_required` answer with it; an app can register
    it for its own views::

        for fault in flask_confirm_mail.errors.DATABASE_FAULTS:
            app.register_error_handler(fault, database_unavailable)
    """
    flow = get_flow()
    roll_back(flow)
    cause = error.orig if isinstance(error, DBAPIError) else error
    logger.warning(
        "Database unavailable on %s %s (%s)",
        request.method,
        redact(request.path, [flow.settings.url_prefix]),
        type(cause).__name__,
    )
    message = _("The service cannot reach its database; nothing was saved. Try again in a minute.")
    if wants_json():
        response = jsonify(status="error", error="service unavailable")
    else:
        try:
            # The extension's ``_`` also when an app registered this for its own views.
            context = {**template_context(), "message": message}
            page = render_template("confirm_mail/unavailable.html", **context)
            response = make_response(page)
        except DATABASE_FAULTS:  # an app's template read the database after all
            roll_back(flow)
            response = make_response(message, {"Content-Type": "text/plain; charset=utf-8"})
    response.status_code = 503
    response.headers["Retry-After"] = str(RETRY_AFTER_OUTAGE)
    return response


def roll_back(flow: ConfirmationFlow) -> None:
    """Roll the request's session back, even when its connection is gone."""
    try:
        flow.db.session.rollback()
    except SQLAlchemyError:  # the connection is gone; the pool drops it
        pass


def answer_database_fault(error: SQLAlchemyError) -> Response:
    """A decorator's answer to a fault: the app's own handler if it has one, else ours."""
    if current_app._find_error_handler(error, request.blueprints) is not None:
        roll_back(get_flow())
        raise error
    return database_unavailable(error)
