"""The web side: the blueprint's routes and the view decorators apps put on their views.

Routes: ``GET/POST <prefix>/<token>``, ``GET/POST <prefix>/resend`` and
``GET/POST <prefix>/code`` (the code from the email, with its address). GET of a link shows
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
import json
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
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException, TooManyRequests

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
from .i18n import N_, lazy_gettext, ngettext, template_context
from .i18n import gettext as _
from .outbox import Purpose
from .redaction import redact

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
#: The resend route's and the address check's words (English; translated where used).
RESEND_NOTICE = N_("If that address is waiting for confirmation, a new link is on its way.")
INVALID_ADDRESS = N_("Enter a single, valid email address.")
#: Titles of the error pages in the reader's language (werkzeug's names are English).
ERROR_TITLES = {
    400: lazy_gettext("Bad request"),
    404: lazy_gettext("Page not found"),
    405: lazy_gettext("Method not allowed"),
    413: lazy_gettext("Request too large"),
    429: lazy_gettext("Too many requests"),
    503: lazy_gettext("Service unavailable"),
}
#: Seconds a client is asked to wait when the database is down.
RETRY_AFTER_OUTAGE = 30
#: Largest request body the blueprint's routes read: a resend form or a confirm button.
MAX_BODY_BYTES = 16 * 1024
#: Deepest JSON accepted from the outside (providers' documented bodies nest 4-5 levels).
MAX_JSON_DEPTH = 32
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


# --- the blueprint -------------------------------------------------------------------------


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
    request.max_content_length = MAX_BODY_BYTES
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


#: What a database outage or fault raises, answered 503: a connection refused, lost or
#: gone stale, a full or read-only file, a lock not granted within the busy timeout, and
#: no free connection in the pool in time. Errors in the data or the SQL (``IntegrityError``,
#: ``ProgrammingError``) are not outages and keep their own handling.
DATABASE_FAULTS: tuple[type[SQLAlchemyError], ...] = (OperationalError, InterfaceError, PoolTimeout)


_CAUGHT_FAULTS: tuple[type[SQLAlchemyError], ...] = (*DATABASE_FAULTS, DBAPIError)


def is_database_fault(error: BaseException) -> bool:
    """Whether ``error`` is an outage (:data:`DATABASE_FAULTS`), or any driver error that
    SQLAlchemy took for a lost connection (a cut mid-query can surface as another class)."""
    if isinstance(error, DATABASE_FAULTS):
        return True
    return isinstance(error, DBAPIError) and bool(error.connection_invalidated)


@blueprint.errorhandler(OperationalError)
@blueprint.errorhandler(InterfaceError)
@blueprint.errorhandler(PoolTimeout)
def database_unavailable(error: SQLAlchemyError) -> Response:
    """Answer a database outage or fault: ``503`` with ``Retry-After``, a page or JSON.

    The session's transaction is rolled back first, so nothing of the request is left
    half saved, and its log line names the path with any token redacted. The
    blueprint's routes, :func:`signup_view` and :func:`confirmed_required` answer with
    it; an app can register it for its own views::

        for fault in flask_confirm_mail.views.DATABASE_FAULTS:
            app.register_error_handler(fault, database_unavailable)
    """
    flow = get_flow()
    _roll_back(flow)
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
            _roll_back(flow)
            response = make_response(message, {"Content-Type": "text/plain; charset=utf-8"})
    response.status_code = 503
    response.headers["Retry-After"] = str(RETRY_AFTER_OUTAGE)
    return response


def _roll_back(flow: ConfirmationFlow) -> None:
    try:
        flow.db.session.rollback()
    except SQLAlchemyError:  # the connection is gone; the pool drops it
        pass


def _answer_database_fault(error: SQLAlchemyError) -> Response:
    """A decorator's answer to a fault: the app's own handler if it has one, else ours."""
    if current_app._find_error_handler(error, request.blueprints) is not None:
        _roll_back(get_flow())
        raise error
    return database_unavailable(error)


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
        Outcome.PENDING: _("Confirm your email address."),
        Outcome.CONFIRMED: settings.flash_confirmed,
        Outcome.ALREADY_CONFIRMED: _("This email address is already confirmed."),
        Outcome.EXPIRED: settings.flash_invalid,
        Outcome.INVALID: settings.flash_invalid,
    }
    message = str(messages[outcome])
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
        try:
            data = load_json(request.get_data(cache=True))
        except ValueError:
            abort(400, description=_("The body is not JSON."))
        email = data.get("email") if isinstance(data, dict) else None
    else:
        email = request.form.get("email")
    cooldown = owner_cooldown(email)  # the owner learns the truth; anyone else does not
    if cooldown:
        return _cooldown_answer(cooldown, app_name)
    user = current_user_or_none()
    requester = None if user is None else flow.columns.id_of(user)
    try:
        flow.request_resend(email, requester=requester)
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
    tries = get_flow().settings.code_max_tries
    return ngettext(
        "That code does not confirm that address. A code works for the newest email only, "
        "until its link expires, and stops after %(tries)d wrong try. If you already "
        "confirmed with the link, there is nothing else to do; otherwise ask for a new email.",
        "That code does not confirm that address. A code works for the newest email only, "
        "until its link expires, and stops after %(tries)d wrong tries. If you already "
        "confirmed with the link, there is nothing else to do; otherwise ask for a new email.",
        tries,
        tries=tries,
    )


def _code_page(flow: ConfirmationFlow) -> dict[str, Any]:
    """The code field's keyboard: digits for an all-digit alphabet."""
    return {"code_inputmode": "numeric" if flow.settings.code_alphabet.isdigit() else "text"}


@blueprint.route("/code", methods=["GET", "POST"])
def code() -> Any:
    """Confirm with the code from the email, on any device: address and code, no session."""
    flow = get_flow()
    app_name = flow.settings.app_name
    if request.method == "GET":
        return render_template("confirm_mail/code.html", app_name=app_name, **_code_page(flow))
    if request.is_json:
        data = request.get_json(silent=True)
        fields = data if isinstance(data, dict) else {}
    else:
        fields = request.form
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
        "confirm_mail/code.html", app_name=app_name, error=error, email=typed, **_code_page(flow)
    )
    return page, 400


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
            abort(400, description=_(INVALID_ADDRESS))
        except _CAUGHT_FAULTS as error:  # no half sign-up: rolled back, nothing queued
            if not is_database_fault(error):
                raise
            return _answer_database_fault(error)
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
    signed_up = outbox.first_queued_at(connection, flow.outbox_table, user_id, Purpose.SIGNUP)
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
        try:
            refusal = _refuse_unconfirmed()
        except _CAUGHT_FAULTS as error:  # the user or the sign-up date could not be read
            if not is_database_fault(error):
                raise
            return _answer_database_fault(error)
        return refusal if refusal is not None else call(*args, **kwargs)

    return cast(F, wrapper)


def _refuse_unconfirmed() -> Any:
    """The answer :func:`confirmed_required` gives instead of the view, or ``None``."""
    flow = get_flow()
    user = current_user_or_none()
    if user is None:
        login_manager = getattr(current_app, "login_manager", None)
        if login_manager is not None and flow.user_getter is None:
            return login_manager.unauthorized()
        abort(401)
    if flow.columns.is_confirmed(user) or _in_grace_period(flow, user):
        return None
    message = str(flow.settings.flash_unconfirmed)
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
