"""The blueprint's routes: the link, the code and the resend page.

Routes: ``GET/POST <prefix>/<token>``, ``GET/POST <prefix>/resend`` and
``GET/POST <prefix>/code`` (the code from the email, with its address). GET of a link shows
a page with a button that POSTs to the same URL; only the POST confirms (unless
``CONFIRM_MAIL_CONFIRM_ON_GET``), so mail scanners that fetch links confirm nothing. Every
answer is a page or, for JSON requests, a body with a stable ``status`` field; no token,
header, form value or JSON body leads to a 500.
"""

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
from .addresses import is_valid_address, normalize_address
from .confirmation import (
    CODE_ALPHABET,
    CODE_MAX_TRIES,
    LinkResult,
    Outcome,
    get_flow,
)
from .decorators import INVALID_ADDRESS, bounce_notice, bounce_of_current_user, current_user_or_none
from .errors import DATABASE_FAULTS, AddressError, ConfigurationError
from .i18n import N_, lazy_gettext, ngettext, template_context
from .i18n import gettext as _
from .resend import request_resend
from .responses import database_unavailable, request_json, wants_json

blueprint = Blueprint("confirm_mail", __name__, template_folder="templates")
#: The blueprint's templates translate with the extension's catalog (see i18n).
blueprint.context_processor(template_context)

#: HTTP status of each outcome.
STATUS_CODES = {
    Outcome.PENDING: 200,
    Outcome.CONFIRMED: 200,
    Outcome.ALREADY_CONFIRMED: 200,
    Outcome.EXPIRED: 410,
    Outcome.INVALID: 400,
}
#: What each outcome says (English; translated where used).
MESSAGES = {
    Outcome.PENDING: N_("Confirm your email address."),
    Outcome.CONFIRMED: N_("Your email address is confirmed."),
    Outcome.ALREADY_CONFIRMED: N_("This email address is already confirmed."),
    Outcome.EXPIRED: N_("This confirmation link is not valid."),
    Outcome.INVALID: N_("This confirmation link is not valid."),
}
#: The resend route's and the address check's words (English; translated where used).
RESEND_NOTICE = N_("If that address is waiting for confirmation, a new link is on its way.")
#: Titles of the error pages in the reader's language (werkzeug's names are English).
ERROR_TITLES = {
    400: lazy_gettext("Bad request"),
    404: lazy_gettext("Page not found"),
    405: lazy_gettext("Method not allowed"),
    413: lazy_gettext("Request too large"),
    429: lazy_gettext("Too many requests"),
    503: lazy_gettext("Service unavailable"),
}
#: Largest request body the blueprint's routes read: a resend form or a confirm button.
MAX_BODY_BYTES = 16 * 1024
for _fault in DATABASE_FAULTS:
    blueprint.register_error_handler(_fault, database_unavailable)


@blueprint.after_request
def _private_headers(response: Response) -> Response:
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Robots-Tag"] = "noindex, nofollow"
    response.headers.setdefault("X-Frame-Options", "DENY")
    return response


@blueprint.before_request
def _bound_body() -> None:
    """Refuse a body over ``MAX_BODY_BYTES`` (413), whether it says its length or streams."""
    try:
        request.max_content_length = MAX_BODY_BYTES
    except AttributeError:  # Werkzeug 3.0: no setter; the app's MAX_CONTENT_LENGTH bounds it
        pass
    if (request.content_length or 0) > MAX_BODY_BYTES:
        abort(413)
    if request.content_length is None:
        # A streamed (chunked) body: read it now, so going over the limit is a 413 here
        # rather than an empty form that the form parser silently makes of it.
        request.get_data(cache=True)  # stops at the limit; one byte more says it was over
        if request.stream.read(1):
            abort(413)


@blueprint.errorhandler(HTTPException)
def _http_error(error: HTTPException) -> Any:
    if error.response is not None:  # an answer built with the error (the resend limit's)
        return error.response
    code = error.code or 400
    if wants_json():
        return jsonify(status="error", error=(error.name or "error").lower()), code
    title = ERROR_TITLES.get(code, error.name)
    return render_template("confirm_mail/error.html", error=error, title=title), code


@blueprint.route("/<token>", methods=["GET", "POST"])
def confirm(token: str) -> Any:
    flow = get_flow()
    if request.method == "POST" or flow.settings.confirm_on_get:
        return _answer(flow.confirm_link(token), token)
    return _answer(flow.check_link(token), token)


def _answer(result: LinkResult, token: str) -> Any:
    settings = get_flow().settings
    outcome = result.outcome
    message = _(MESSAGES[outcome])
    if wants_json():
        body: dict[str, Any] = {"status": outcome.value, "message": message}
        if outcome is Outcome.EXPIRED:
            body["resend_url"] = url_for("confirm_mail.resend")
        return jsonify(body), STATUS_CODES[outcome]
    if outcome is Outcome.CONFIRMED and settings.confirmed_endpoint:
        flash(message, "success")
        return redirect(url_for(settings.confirmed_endpoint), 303)
    page = render_template(
        f"confirm_mail/{outcome.value}.html",
        message=message,
        token=token if outcome is Outcome.PENDING else None,
        app_name=settings.app_name,
        continue_url=(
            url_for(settings.confirmed_endpoint)
            if settings.confirmed_endpoint
            else request.script_root + "/"
        ),
    )
    return page, STATUS_CODES[outcome]


def owner_cooldown(email: object = None) -> dict[str, Any]:
    """The truth about the resend cooldown, for the logged-in owner of ``email`` only.

    When the logged-in user's address waiting for confirmation (``email``, when given,
    must be it) got an email less than ``RESEND_COOLDOWN`` ago: ``cooldown`` (seconds
    since, seconds to wait) and ``cooldown_message``. Empty for anyone else, so the
    uniform answer of the resend route reveals nothing about other addresses.
    """
    flow = get_flow()
    user = current_user_or_none()
    if user is None:
        return {}
    columns = flow.columns
    own = columns.pending_of(user)
    if own is None and not columns.is_confirmed(user):
        own = columns.email_of(user)
    if own is None:
        return {}
    if email is not None and (not is_valid_address(email) or normalize_address(email) != own):
        return {}
    last = outbox.last_queued_at(flow.db.session.connection(), flow.outbox_table, own)
    age = outbox.utcnow() - last if last is not None else None
    if age is None or age >= flow.settings.resend_cooldown:
        return {}
    ago = int(age.total_seconds())
    wait = math.ceil((flow.settings.resend_cooldown - age).total_seconds())
    message = _(
        "A link was sent %(ago)s s ago; you can ask for another one in %(wait)s s.",
        ago=ago,
        wait=wait,
    )
    return {"cooldown": {"sent_seconds_ago": ago, "retry_after": wait}, "cooldown_message": message}


def _cooldown_answer(cooldown: dict[str, Any], app_name: str | None) -> Any:
    """The resend route's answer to the owner inside the cooldown: 429 and ``Retry-After``."""
    if wants_json():
        message = cooldown["cooldown_message"]
        response = make_response(
            jsonify(status="cooldown", message=message, **cooldown["cooldown"]), 429
        )
    else:
        page = render_template("confirm_mail/resend.html", app_name=app_name, **cooldown)
        response = make_response(page, 429)
    response.headers["Retry-After"] = str(cooldown["cooldown"]["retry_after"])
    return response


@blueprint.route("/resend", methods=["GET", "POST"])
def resend() -> Any:
    flow = get_flow()
    app_name = flow.settings.app_name
    if request.method == "GET":
        notice = {**bounce_notice(bounce_of_current_user()), **owner_cooldown()}
        return render_template("confirm_mail/resend.html", app_name=app_name, **notice)
    email = request_json().get("email") if request.is_json else request.form.get("email")
    cooldown = owner_cooldown(email)  # the owner learns the truth; anyone else does not
    if cooldown:
        return _cooldown_answer(cooldown, app_name)
    user = current_user_or_none()
    requester = None if user is None else flow.columns.id_of(user)
    try:
        request_resend(flow, email, requester=requester)
    except AddressError:
        if wants_json():
            return jsonify(status="invalid_address", message=_(INVALID_ADDRESS)), 400
        error = _(INVALID_ADDRESS)
        page = render_template("confirm_mail/resend.html", error=error, app_name=app_name)
        return page, 400
    if wants_json():
        return jsonify(status="resend_requested", message=_(RESEND_NOTICE)), 202
    words = _(RESEND_NOTICE)
    return render_template("confirm_mail/resend.html", notice=words, app_name=app_name), 202


def _invalid_code_message() -> str:
    return ngettext(
        "That code does not confirm that address. A code works for the newest email only, "
        "until its link expires, and stops after %(tries)d wrong try. If you already "
        "confirmed with the link, there is nothing else to do; otherwise ask for a new email.",
        "That code does not confirm that address. A code works for the newest email only, "
        "until its link expires, and stops after %(tries)d wrong tries. If you already "
        "confirmed with the link, there is nothing else to do; otherwise ask for a new email.",
        CODE_MAX_TRIES,
        tries=CODE_MAX_TRIES,
    )


#: The code field's keyboard: digits for an all-digit alphabet.
CODE_PAGE = {"code_inputmode": "numeric" if CODE_ALPHABET.isdigit() else "text"}


@blueprint.route("/code", methods=["GET", "POST"])
def code() -> Any:
    """Confirm with the code from the email, on any device: address and code, no session."""
    flow = get_flow()
    app_name = flow.settings.app_name
    if request.method == "GET":
        return render_template("confirm_mail/code.html", app_name=app_name, **CODE_PAGE)
    fields = request_json() if request.is_json else request.form
    email = fields.get("email")
    try:
        result = flow.confirm_code(email, fields.get("code"))
    except AddressError:
        error, status = _(INVALID_ADDRESS), "invalid_address"
    else:
        if result.outcome is Outcome.CONFIRMED:
            return _answer(result, "")
        error, status = _invalid_code_message(), "invalid_code"
    if wants_json():
        return jsonify(status=status, message=error, resend_url=url_for(".resend")), 400
    typed = email if isinstance(email, str) and len(email) <= 254 else ""
    page = render_template(
        "confirm_mail/code.html", app_name=app_name, error=error, email=typed, **CODE_PAGE
    )
    return page, 400


# --- the per-client resend limit (Flask-Limiter, optional) ---------------------------------

RESEND_ENDPOINT = "confirm_mail.resend"


def limit_resend(app: Flask, limit: str) -> None:
    """Apply ``CONFIRM_MAIL_RESEND_LIMIT`` to ``POST <prefix>/resend`` with the app's
    Flask-Limiter ``Limiter`` (its storage and key function; key by client, never by the
    submitted address, e.g. ``Limiter(client_network, app=app)``).

    Every POST counts, whatever address it names, so the answer never depends on
    whether an address has an account. Over the limit: a 429 page or JSON answer with
    ``Retry-After``.

    :raises ConfigurationError: the app has no ``Limiter``, or several.
    """
    limiters = app.extensions.get("limiter") or set()
    if len(limiters) != 1:
        raise ConfigurationError(
            "CONFIRM_MAIL_RESEND_LIMIT needs the app's one Flask-Limiter Limiter, created "
            "before init_app: Limiter(flask_confirm_mail.views.client_network, app=app)."
        )
    limiter = next(iter(limiters))
    route_limit = limiter.limit(limit, methods=["POST"], on_breach=_too_many)
    app.view_functions[RESEND_ENDPOINT] = route_limit(app.view_functions[RESEND_ENDPOINT])


def client_network(address: str | None = None) -> str:
    """The resend limit's key: the client's IPv4 address, or its IPv6 ``/64`` network.

    ``address`` defaults to ``request.remote_addr`` (use werkzeug's ``ProxyFix`` behind a
    proxy). Flask-Limiter's ``get_remote_address`` keys each IPv6 address on its own, but
    one subscriber is given a whole ``/64`` (RFC 6177), so a client rotating addresses
    inside it would get a fresh limit for each: its ``/64`` is one client.
    """
    address = address if address is not None else (request.remote_addr or "127.0.0.1")
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def _too_many(limit: Any) -> Response:
    """The 429 answer (page or JSON, like the others) with the seconds to wait."""
    wait = max(1, math.ceil(limit.reset_at - time.time()))
    message = _(
        "Too many requests from your address: try again in %(seconds)d seconds.", seconds=wait
    )
    if wants_json():
        body = jsonify(status="error", error="too many requests", message=message, retry_after=wait)
        response = make_response(body, 429)
    else:
        response = make_response(_http_error(TooManyRequests(message)))
    response.headers["Retry-After"] = str(wait)
    return response
