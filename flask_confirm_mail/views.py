"""The web side: the blueprint's routes and the view decorators apps put on their views.

Routes: ``GET/POST <prefix>/<token>`` and ``GET/POST <prefix>/resend``. GET of a link shows
a page with a button that POSTs to the same URL; only the POST confirms (unless
``CONFIRM_MAIL_CONFIRM_ON_GET``), so mail scanners that fetch links confirm nothing. Every
answer is a page or, for JSON requests, a body with a stable ``status`` field; no token,
header or form value leads to a 500.

Decorators: :func:`signup_view` and :func:`confirmed_required`. Both call the view through
``current_app.ensure_sync``, so ``async def`` views work, and let OPTIONS requests through.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import math
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    current_app,
    flash,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from werkzeug.exceptions import HTTPException, ServiceUnavailable, TooManyRequests

from . import outbox
from .addresses import is_valid_address, normalize_address
from .bounces import BounceMark, records_of
from .confirmation import (
    ConfirmationFlow,
    LinkResult,
    Outcome,
    begin_signup,
    end_signup,
    get_flow,
)
from .errors import AddressError
from .i18n import gettext as _
from .redaction import redact
from .users import SIGNUP

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
INVALID_ADDRESS = "Enter a single, valid email address."
#: Seconds a client is asked to wait when the database is down.
RETRY_AFTER_OUTAGE = 30
#: Methods the decorators let through unchecked (CORS preflight), as flask-login does.
EXEMPT_METHODS = frozenset({"OPTIONS"})

F = TypeVar("F", bound=Callable[..., Any])

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


# --- the blueprint -------------------------------------------------------------------------


@blueprint.after_request
def _private_headers(response: Response) -> Response:
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Robots-Tag"] = "noindex, nofollow"
    response.headers.setdefault("X-Frame-Options", "DENY")
    return response


@blueprint.errorhandler(HTTPException)
def _http_error(error: HTTPException) -> Any:
    if error.response is not None:  # an answer built with the error (the resend limit's)
        return error.response
    code = error.code or 400
    if wants_json():
        return jsonify(status="error", error=(error.name or "error").lower()), code
    return render_template("confirm_mail/error.html", error=error), code


@blueprint.errorhandler(OperationalError)
@blueprint.errorhandler(InterfaceError)
def _database_unavailable(error: DBAPIError) -> Any:
    """A database outage is a 503 with ``Retry-After``, and its log line holds no token."""
    flow = get_flow()
    try:
        flow.db.session.rollback()
    except DBAPIError:  # the connection is gone; the pool drops it
        pass
    logger.warning(
        "Database unavailable on %s %s (%s)",
        request.method,
        redact(request.path, [flow.settings.url_prefix]),
        type(error.orig).__name__,
    )
    unavailable = ServiceUnavailable("The service is unavailable; try again in a minute.")
    response = make_response(_http_error(unavailable))
    response.headers["Retry-After"] = str(RETRY_AFTER_OUTAGE)
    return response


@blueprint.route("/<token>", methods=["GET", "POST"])
def confirm(token: str) -> Any:
    flow = get_flow()
    if request.method == "POST" or flow.settings.confirm_on_get:
        return _answer(flow.confirm_link(token), token)
    return _answer(flow.check_link(token), token)


def _answer(result: LinkResult, token: str) -> Any:
    settings = get_flow().settings
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
    page = render_template(
        f"confirm_mail/{outcome.value}.html",
        message=message,
        token=token if outcome is Outcome.PENDING else None,
        auto_submit=settings.auto_submit,
        app_name=settings.app_name,
        continue_url=(
            url_for(settings.confirmed_endpoint)
            if settings.confirmed_endpoint
            else request.script_root + "/"
        ),
    )
    return page, STATUS_CODES[outcome]


def bounce_of_current_user() -> BounceMark | None:
    """The bounce mark of the logged-in user's address waiting for confirmation, if any."""
    flow = get_flow()
    records = records_of(current_app)
    user = current_user_or_none()
    if records is None or user is None:
        return None
    address = flow.columns.pending_of(user) or flow.columns.email_of(user)
    return records.find(flow.db.session.connection(), address) if address else None


def _bounce_notice(mark: BounceMark | None) -> dict[str, Any]:
    """What the pages and JSON answers say about a bounce: ``bounced``, ``change_email_url``."""
    if mark is None:
        return {}
    endpoint = get_flow().settings.change_email_endpoint
    return {
        "bounced": {"kind": mark.kind, "since": mark.marked_at.isoformat() + "Z"},
        "change_email_url": url_for(endpoint) if endpoint else None,
    }


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
        notice = {**_bounce_notice(bounce_of_current_user()), **owner_cooldown()}
        return render_template("confirm_mail/resend.html", app_name=app_name, **notice)
    if request.is_json:
        data = request.get_json(silent=True)
        email = data.get("email") if isinstance(data, dict) else None
    else:
        email = request.form.get("email")
    cooldown = owner_cooldown(email)  # the owner learns the truth; anyone else does not
    if cooldown:
        return _cooldown_answer(cooldown, app_name)
    try:
        flow.request_resend(email)
    except AddressError:
        if wants_json():
            return jsonify(status="invalid_address", message=INVALID_ADDRESS), 400
        page = render_template("confirm_mail/resend.html", error=INVALID_ADDRESS, app_name=app_name)
        return page, 400
    if wants_json():
        return jsonify(status="resend_requested", message=RESEND_NOTICE), 202
    return render_template("confirm_mail/resend.html", notice=RESEND_NOTICE, app_name=app_name), 202


# --- decorators ----------------------------------------------------------------------------


def current_user_or_none() -> Any:
    """The logged-in user: the app's registered getter, else Flask-Login's ``current_user``."""
    flow = get_flow()
    if flow.user_getter is not None:
        return flow.user_getter()
    if getattr(current_app, "login_manager", None) is not None:
        from flask_login import current_user  # type: ignore[import-untyped]  # optional

        user = current_user._get_current_object()
        return user if getattr(user, "is_authenticated", False) else None
    return None


def signup_view(view: F) -> F:
    """Mark a sign-up view: each user it creates and commits gets a confirmation email.

    The view creates the user and commits as usual. Every new instance of the user
    model flushed while the view runs gets an outbox message in the same transaction,
    so if the view raises or rolls back, nothing is sent. When a new user's address is
    not one plain address (:class:`~flask_confirm_mail.errors.AddressError` from the
    commit), the transaction is rolled back and the request answered with a 400::

        @app.post("/signup")
        @signup_view
        def signup():
            user = User(email=request.form["email"])
            db.session.add(user)
            db.session.commit()   # the confirmation email is queued by this commit
            return redirect(url_for("home"))
    """

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        call = current_app.ensure_sync(view)
        if request.method in EXEMPT_METHODS:
            return call(*args, **kwargs)
        flow = get_flow()  # fail early and clearly without init_app
        begin_signup()
        try:
            return call(*args, **kwargs)
        except AddressError:
            flow.db.session.rollback()
            abort(400, description=INVALID_ADDRESS)
        finally:
            end_signup()

    return cast(F, wrapper)


def _in_grace_period(flow: ConfirmationFlow, user: Any) -> bool:
    """Whether an unconfirmed ``user`` signed up less than ``UNCONFIRMED_ACCESS_FOR`` ago."""
    grace = flow.settings.unconfirmed_access_for
    if not grace:
        return False
    connection = flow.db.session.connection()
    user_id = flow.columns.id_of(user)
    signed_up = outbox.first_queued_at(connection, flow.outbox_table, user_id, SIGNUP)
    return signed_up is not None and outbox.utcnow() - signed_up < grace


def confirmed_required(view: F) -> F:
    """Let only users with a confirmed address through.

    Anonymous users get Flask-Login's ``unauthorized()`` (or 401). Unconfirmed users get
    a redirect to the resend page (or ``CONFIRM_MAIL_UNCONFIRMED_ENDPOINT``) with a
    flash message, or for JSON requests a 403 ``{"status": "unconfirmed", ...}``; with
    ``CONFIRM_MAIL_UNCONFIRMED_ACCESS_FOR`` set, only once that long has passed since
    they signed up.
    """

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        call = current_app.ensure_sync(view)
        if request.method in EXEMPT_METHODS:
            return call(*args, **kwargs)
        flow = get_flow()
        user = current_user_or_none()
        if user is None:
            login_manager = getattr(current_app, "login_manager", None)
            if login_manager is not None and flow.user_getter is None:
                return login_manager.unauthorized()
            abort(401)
        if not flow.columns.is_confirmed(user) and not _in_grace_period(flow, user):
            message = flow.settings.flash_unconfirmed
            if wants_json():
                body: dict[str, Any] = {
                    "status": "unconfirmed",
                    "error": "email_unconfirmed",
                    "message": message,
                }
                body.update(_bounce_notice(bounce_of_current_user()))
                return make_response(jsonify(body), 403)
            flash(message, "warning")
            endpoint = flow.settings.unconfirmed_endpoint or "confirm_mail.resend"
            return redirect(url_for(endpoint))
        return call(*args, **kwargs)

    return cast(F, wrapper)


# --- the per-client resend limit (Flask-Limiter, optional) ---------------------------------

RESEND_ENDPOINT = "confirm_mail.resend"


def limit_resend(app: Flask, limit: str) -> None:
    """Apply ``CONFIRM_MAIL_RESEND_LIMIT`` to ``POST <prefix>/resend`` with Flask-Limiter.

    The app's own :class:`flask_limiter.Limiter` is used when it has exactly one by the
    time ``init_app`` runs (its storage, and its key function, which must name the client,
    never the submitted address). Otherwise the extension makes one for the app, keyed by
    :func:`client_network` and stored in ``RATELIMIT_STORAGE_URI`` (default: memory, per
    process); when that storage fails, the limit goes on in this process's memory (the
    error is logged by Flask-Limiter), never a 500.
    Every POST counts, whatever address it names, so the answer never depends on
    whether an address has an account. Over the limit: a 429 page or JSON answer with
    ``Retry-After``.
    """
    from flask_limiter import Limiter

    limiters = app.extensions.get("limiter") or set()
    key: Callable[[], str] | None
    if len(limiters) == 1:
        limiter, key = next(iter(limiters)), None
    else:
        limiter = Limiter(
            client_network,
            app=app,
            storage_uri=app.config.get("RATELIMIT_STORAGE_URI") or "memory://",
            default_limits_exempt_when=lambda: True,  # it limits the resend route only
            application_limits_exempt_when=lambda: True,
            swallow_errors=True,
            in_memory_fallback_enabled=True,
        )
        key = client_network
    route_limit = limiter.limit(limit, key_func=key, methods=["POST"], on_breach=_too_many)
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
