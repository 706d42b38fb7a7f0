"""The blueprint's routes, ``<prefix>/<token>``, ``/resend`` and ``/code``: each answers a page
or, for JSON requests, a body with a stable ``status``; never a 500."""

from __future__ import annotations

import ipaddress
import math
import time
from typing import Any

from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    flash,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from werkzeug.exceptions import HTTPException, TooManyRequests

from . import outbox
from .addresses import canonical_or_none
from .confirmation import CODE_ALPHABET, CODE_MAX_TRIES, Outcome, get_flow
from .decorators import INVALID_ADDRESS, bounce_notice, current_user_or_none
from .errors import DATABASE_FAULTS, AddressError, ConfigurationError
from .i18n import N_, lazy_gettext, ngettext, template_context
from .i18n import gettext as _
from .resend import request_resend
from .responses import bound_stream, database_unavailable, request_json, wants_json

blueprint = Blueprint("confirm_mail", __name__, template_folder="templates")
blueprint.context_processor(template_context)  # the extension's catalog, not the app's
for _fault in DATABASE_FAULTS:
    blueprint.register_error_handler(_fault, database_unavailable)

#: Each outcome's HTTP status and message (English; translated where used).
OUTCOMES = {
    Outcome.PENDING: (200, N_("Confirm your email address.")),
    Outcome.CONFIRMED: (200, N_("Your email address is confirmed.")),
    Outcome.ALREADY_CONFIRMED: (200, N_("This email address is already confirmed.")),
    Outcome.EXPIRED: (410, N_("This confirmation link has expired.")),
    Outcome.INVALID: (400, N_("This confirmation link is not valid.")),
}
#: The same for a change notice's cancel link; "nothing pending" whoever's the change was.
CANCEL_OUTCOMES = {
    Outcome.CANCEL: (200, N_("Cancel the change of your email address.")),
    Outcome.CANCELLED: (200, N_("The change of your email address is cancelled.")),
    Outcome.NOTHING_PENDING: (200, N_("There is no change of address to cancel.")),
    Outcome.EXPIRED: (410, N_("This link has expired.")),
    Outcome.INVALID: (400, N_("This link is not valid.")),
}
RESEND_NOTICE = N_("If that address is waiting for confirmation, a new link is on its way.")
#: Error page titles in the reader's language (werkzeug's names are English).
ERROR_TITLES = {
    400: lazy_gettext("Bad request"),
    404: lazy_gettext("Page not found"),
    405: lazy_gettext("Method not allowed"),
    413: lazy_gettext("Request too large"),
    429: lazy_gettext("Too many requests"),
    503: lazy_gettext("Service unavailable"),
}
#: Largest request body the routes read: a resend form or a confirm button.
MAX_BODY_BYTES = 16 * 1024
#: The code field's keyboard: digits for an all-digit alphabet.
CODE_INPUTMODE = "numeric" if CODE_ALPHABET.isdigit() else "text"


@blueprint.after_request
def _private_headers(response: Response) -> Response:
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Robots-Tag"] = "noindex, nofollow"
    response.headers.setdefault("X-Frame-Options", "DENY")
    return response


@blueprint.before_request
def _bound_body() -> None:
    """Refuse a method no route takes (405), and a body over ``MAX_BODY_BYTES`` (413)
    whether it says its length or streams."""
    if request.method not in METHODS:
        abort(405, valid_methods=list(METHODS))
    bound_stream(MAX_BODY_BYTES)
    chunked = request.content_length is None
    if chunked:  # read it now, so going over the limit is a 413 here, not an empty form
        request.get_data(cache=True)  # stops at the limit; one byte more says it was over
    if (request.content_length or 0) > MAX_BODY_BYTES or (chunked and request.stream.read(1)):
        abort(413)


#: Methods the routes take; any other under the prefix is this blueprint's 405 (page or JSON).
METHODS = ("GET", "HEAD", "POST", "OPTIONS")
_ANY_METHOD = ["GET", "POST", "PUT", "PATCH", "DELETE"]  # HEAD and OPTIONS come with GET


@blueprint.route("/", defaults={"rest": ""}, methods=_ANY_METHOD)
@blueprint.route("/<path:rest>", methods=_ANY_METHOD)
def _elsewhere(rest: str) -> Any:
    """A path under the prefix that no route takes: this blueprint's 404, not the app's."""
    abort(404)


@blueprint.errorhandler(HTTPException)
def _http_error(error: HTTPException) -> Any:
    if error.response is not None:  # an answer built with the error (the resend limit's)
        return error.response
    code = error.code or 400
    headers = [(k, v) for k, v in error.get_headers() if k != "Content-Type"]  # 405's Allow
    if wants_json():
        return jsonify(status="error", error=(error.name or "error").lower()), code, headers
    title = ERROR_TITLES.get(code, error.name)
    return render_template("confirm_mail/error.html", error=error, title=title), code, headers


def _page(template: str, code: int = 200, json: Any = None, **context: Any) -> Response:
    """The page ``template``; or ``json``, if given, for a client that wants JSON."""
    if json is not None and wants_json():
        return make_response(jsonify(json), code)
    context["app_name"] = get_flow().settings.app_name
    return make_response(render_template(f"confirm_mail/{template}.html", **context), code)


@blueprint.route("/<token>", methods=_ANY_METHOD)
def confirm(token: str) -> Any:
    flow = get_flow()
    # GET shows a button that POSTs here: mail scanners fetch links, and must confirm nothing.
    confirms = request.method == "POST" or flow.settings.confirm_on_get
    return _answer((flow.confirm_link if confirms else flow.check_link)(token).outcome, token)


@blueprint.route("/cancel/<token>", methods=_ANY_METHOD)
def cancel(token: str) -> Any:
    """The change notice's link: GET shows a button (mail scanners fetch links), POST cancels."""
    outcome = get_flow().cancel_change(token, use=request.method == "POST").outcome
    code, message = CANCEL_OUTCOMES[outcome][0], _(CANCEL_OUTCOMES[outcome][1])
    pending = token if outcome is Outcome.CANCEL else None
    body = {"status": outcome.value, "message": message}
    return _page("cancel", code, body, message=message, token=pending, outcome=outcome.value)


def _answer(outcome: Outcome, token: str) -> Any:
    code, message = OUTCOMES[outcome][0], _(OUTCOMES[outcome][1])
    home = get_flow().settings.confirmed_endpoint
    if wants_json():
        resend_url = {"resend_url": url_for(".resend")} if outcome is Outcome.EXPIRED else {}
        return jsonify(status=outcome.value, message=message, **resend_url), code
    if outcome is Outcome.CONFIRMED and home:
        flash(message, "success")
        return redirect(url_for(home), 303)
    home_url = url_for(home) if home else request.script_root + "/"
    token_or_none = token if outcome is Outcome.PENDING else None
    return _page(outcome.value, code, message=message, token=token_or_none, continue_url=home_url)


def owner_cooldown(email: object = None) -> dict[str, Any]:
    """``cooldown`` (``sent_seconds_ago``, ``retry_after``) and ``cooldown_message`` while
    the logged-in user's waiting address (``email``, if given, must be it) got an email less
    than ``RESEND_COOLDOWN`` ago; else empty, so nothing is told about other addresses."""
    flow = get_flow()
    user = current_user_or_none()
    if user is None:
        return {}
    own = flow.columns.pending_of(user)
    if own is None and not flow.columns.is_confirmed(user):
        own = flow.columns.email_of(user)
    if own is None or (email is not None and canonical_or_none(email) != own):
        return {}
    last = outbox.last_queued_at(flow.db.session.connection(), flow.outbox_table, own)
    cooldown = flow.settings.resend_cooldown
    if last is None or (age := outbox.utcnow() - last) >= cooldown:
        return {}
    ago, wait = int(age.total_seconds()), math.ceil((cooldown - age).total_seconds())
    message = _(
        "A link was sent %(ago)s s ago; you can ask for another one in %(wait)s s.",
        ago=ago,
        wait=wait,
    )
    return {"cooldown": {"sent_seconds_ago": ago, "retry_after": wait}, "cooldown_message": message}


@blueprint.route("/resend", methods=_ANY_METHOD)
def resend() -> Any:
    flow = get_flow()
    if request.method == "GET":
        return _page("resend", **bounce_notice(), **owner_cooldown())
    email = request_json().get("email") if request.is_json else request.form.get("email")
    if cooldown := owner_cooldown(email):  # the owner learns the truth; anyone else does not
        wait = cooldown["cooldown"]
        body = {"status": "cooldown", "message": cooldown["cooldown_message"], **wait}
        response = _page("resend", 429, body, **cooldown)
        response.headers["Retry-After"] = str(wait["retry_after"])
        return response
    user = current_user_or_none()
    try:
        request_resend(flow, email, requester=None if user is None else flow.columns.id_of(user))
    except AddressError:
        error = _(INVALID_ADDRESS)
        return _page("resend", 400, {"status": "invalid_address", "message": error}, error=error)
    notice = _(RESEND_NOTICE)
    return _page("resend", 202, {"status": "resend_requested", "message": notice}, notice=notice)


@blueprint.route("/code", methods=_ANY_METHOD)
def code() -> Any:
    """Confirm with the code from the email, on any device: address and code, no session."""
    flow = get_flow()
    if request.method == "GET":
        return _page("code", code_inputmode=CODE_INPUTMODE)
    fields = request_json() if request.is_json else request.form
    email = fields.get("email")
    try:
        result = flow.confirm_code(email, fields.get("code"))
    except AddressError:
        status, error = "invalid_address", _(INVALID_ADDRESS)
    else:
        if result.outcome is Outcome.CONFIRMED:
            return _answer(result.outcome, "")
        status = "invalid_code"
        error = ngettext(
            "That code does not confirm that address. A code works for the newest email only, "
            "until its link expires, and stops after %(tries)d wrong try. If you already "
            "confirmed with the link, there is nothing else to do; otherwise ask for a new email.",
            "That code does not confirm that address. A code works for the newest email only, "
            "until its link expires, and stops after %(tries)d wrong tries. If you already "
            "confirmed with the link, there is nothing else to do; otherwise ask for a new email.",
            CODE_MAX_TRIES,
            tries=CODE_MAX_TRIES,
        )
    body = {"status": status, "message": error, "resend_url": url_for(".resend")}
    typed = email if isinstance(email, str) and len(email) <= 254 else ""
    return _page("code", 400, body, error=error, email=typed, code_inputmode=CODE_INPUTMODE)


def limit_resend(app: Flask, limit: str) -> None:
    """Apply ``limit`` per client to ``POST <prefix>/resend`` and ``/code`` (a count each) with
    the app's one ``Limiter`` (``Limiter(client_network, app=app)``), never per address, so
    the answer tells nothing of accounts; 429 with ``Retry-After`` over it. Else raises
    :class:`ConfigurationError`."""
    limiters = app.extensions.get("limiter") or set()
    if len(limiters) != 1:
        raise ConfigurationError(
            "CONFIRM_MAIL_RESEND_LIMIT needs the app's one Flask-Limiter Limiter, created "
            "before init_app: Limiter(flask_confirm_mail.views.client_network, app=app)."
        )
    route_limit = next(iter(limiters)).limit(limit, methods=["POST"], on_breach=_too_many)
    app.view_functions["confirm_mail.resend"] = route_limit(resend)
    app.view_functions["confirm_mail.code"] = route_limit(code)


def client_network(address: str | None = None) -> str:
    """The limit's key: the client's IPv4 address (default ``request.remote_addr``; behind a
    proxy, ``ProxyFix``), or its IPv6 ``/64``, one subscriber's (RFC 6177)."""
    address = address if address is not None else (request.remote_addr or "127.0.0.1")
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ip.ipv4_mapped or ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def _too_many(limit: Any) -> Response:
    wait = max(1, math.ceil(limit.reset_at - time.time()))
    message = _(
        "Too many requests from your address: try again in %(seconds)d seconds.", seconds=wait
    )
    json = jsonify(status="error", error="too many requests", message=message, retry_after=wait)
    response = make_response((json, 429) if wants_json() else _http_error(TooManyRequests(message)))
    response.headers["Retry-After"] = str(wait)
    return response
