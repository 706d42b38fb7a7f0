"""Friendly pages for HTTP errors, in CatLoader's layout (no details, no tokens)."""

from __future__ import annotations

from typing import Any

from flask import Flask, render_template
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

EXPIRED_FORM = (
    "This form has expired or did not come from CatLoader. Go back, reload the page and try again."
)


def register_error_pages(app: Flask) -> None:
    @app.errorhandler(CSRFError)
    def csrf_error(error: CSRFError) -> Any:
        return render_template("error.html", title="Form expired", message=EXPIRED_FORM), 400

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Any:
        code = error.code or 500
        if code < 400:
            return error
        page = render_template(
            "error.html", title=f"{code} {error.name}", message=error.description
        )
        return page, code
