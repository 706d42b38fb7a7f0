"""Friendly pages for HTTP errors, in CatLoader's layout (no details, no tokens)."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, jsonify, render_template, request
from flask_wtf.csrf import CSRFError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from werkzeug.exceptions import HTTPException

from .models import db

#: Seconds a client is asked to wait when the database is unavailable.
RETRY_AFTER = 30
UNAVAILABLE = "CatLoader cannot reach its database right now, so nothing was saved. Try again soon."

logger = logging.getLogger(__name__)

EXPIRED_FORM = (
    "This form has expired or did not come from CatLoader. Go back, reload the page and try again."
)


def register_error_pages(app: Flask) -> None:
    @app.errorhandler(CSRFError)
    def csrf_error(error: CSRFError) -> Any:
        return render_template("error.html", title="Form expired", message=EXPIRED_FORM), 400

    @app.errorhandler(OperationalError)
    @app.errorhandler(InterfaceError)
    def database_unavailable(error: DBAPIError) -> Any:
        # The transaction is rolled back whole, so no half sign-up or upload is left; the
        # pool drops the broken connection and the next request opens a new one. The page
        # does not extend layout.html, which would ask the database for the current user.
        try:
            db.session.rollback()
        except DBAPIError:
            pass
        logger.warning(
            "Database unavailable on %s %s (%s)",
            request.method,
            request.endpoint or "-",  # the endpoint, not the path: no token in the log
            type(error.orig).__name__,
        )
        best = request.accept_mimetypes.best_match(["text/html", "application/json"])
        if request.is_json or best == "application/json":
            response = jsonify(status="error", error="service unavailable", message=UNAVAILABLE)
        else:
            response = app.make_response(render_template("unavailable.html", message=UNAVAILABLE))
        response.status_code = 503
        response.headers["Retry-After"] = str(RETRY_AFTER)
        return response

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Any:
        code = error.code or 500
        if code < 400:
            return error
        page = render_template(
            "error.html", title=f"{code} {error.name}", message=error.description
        )
        return page, code
