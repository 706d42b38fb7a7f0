"""The blueprint: ``GET/POST <prefix>/<token>`` and ``GET/POST <prefix>/resend``.

GET of a link shows a page with a button that POSTs to the same URL; only the POST
confirms (unless ``CONFIRM_MAIL_CONFIRM_ON_GET``), so mail scanners that fetch links
confirm nothing. Every answer is a page or, for JSON requests, a body with a stable
``status`` field; no token, header or form value leads to a 500.
"""

from __future__ import annotations

from typing import Any

from flask import (
    Blueprint,
    Response,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from werkzeug.exceptions import HTTPException

from .confirmation import LinkResult, Outcome, check_link, confirm_link, request_resend
from .errors import AddressError
from .state import get_state

blueprint = Blueprint("confirm_mail", __name__, template_folder="templates")

#: HTTP status of each outcome.
STATUS_CODES = {
    Outcome.PENDING: 200,
    Outcome.CONFIRMED: 200,
    Outcome.ALREADY_CONFIRMED: 200,
    Outcome.EXPIRED: 410,
    Outcome.INVALID: 400,
}
RESEND_NOTICE = "If that address is waiting for confirmation, a new link is on its way."


def wants_json() -> bool:
    """Whether the client asked for JSON (a JSON body, or JSON preferred over HTML)."""
    if request.is_json:
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return (
        best == "application/json"
        and request.accept_mimetypes[best] > request.accept_mimetypes["text/html"]
    )


@blueprint.after_request
def _private_headers(response: Response) -> Response:
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Robots-Tag"] = "noindex, nofollow"
    response.headers.setdefault("X-Frame-Options", "DENY")
    return response


@blueprint.errorhandler(HTTPException)
def _http_error(error: HTTPException) -> Any:
    code = error.code or 400
    if wants_json():
        return jsonify(status="error", error=(error.name or "error").lower()), code
    return render_template("confirm_mail/error.html", error=error), code


@blueprint.route("/<token>", methods=["GET", "POST"])
def confirm(token: str) -> Any:
    state = get_state()
    if request.method == "POST" or state.settings.confirm_on_get:
        return _answer(confirm_link(state, token), token)
    return _answer(check_link(state, token), token)


def _answer(result: LinkResult, token: str) -> Any:
    settings = get_state().settings
    outcome = result.outcome
    messages = {
        Outcome.PENDING: "Confirm your email address.",
        Outcome.CONFIRMED: settings.flash_confirmed,
        Outcome.ALREADY_CONFIRMED: "This email address is already confirmed.",
        Outcome.EXPIRED: settings.flash_invalid,
        Outcome.INVALID: settings.flash_invalid,
    }
    message = messages[outcome]
    if wants_json():
        body: dict[str, Any] = {"status": outcome.value, "message": message}
        if outcome is Outcome.EXPIRED:
            body["resend_url"] = url_for("confirm_mail.resend")
        return jsonify(body), STATUS_CODES[outcome]
    if outcome is Outcome.CONFIRMED and settings.confirmed_endpoint:
        flash(message, "success")
        return redirect(url_for(settings.confirmed_endpoint), 303)
    template = f"confirm_mail/{outcome.value}.html"
    page = render_template(
        template,
        message=message,
        token=token if outcome is Outcome.PENDING else None,
        auto_submit=settings.auto_submit,
        app_name=settings.app_name,
    )
    return page, STATUS_CODES[outcome]


@blueprint.route("/resend", methods=["GET", "POST"])
def resend() -> Any:
    state = get_state()
    if request.method == "GET":
        return render_template("confirm_mail/resend.html", app_name=state.settings.app_name)
    if request.is_json:
        data = request.get_json(silent=True)
        email = data.get("email") if isinstance(data, dict) else None
    else:
        email = request.form.get("email")
    try:
        request_resend(state, email)
    except AddressError:
        error = "Enter a single, valid email address."
        if wants_json():
            return jsonify(status="invalid_address", message=error), 400
        page = render_template(
            "confirm_mail/resend.html", error=error, app_name=state.settings.app_name
        )
        return page, 400
    if wants_json():
        return jsonify(status="resend_requested", message=RESEND_NOTICE), 202
    page = render_template(
        "confirm_mail/resend.html", notice=RESEND_NOTICE, app_name=state.settings.app_name
    )
    return page, 202
