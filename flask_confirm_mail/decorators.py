"""The view decorators apps put on their views: :func:`signup_view` and
:func:`confirmed_required`.

Both call the view through ``current_app.ensure_sync``, so ``async def`` views work, and
let OPTIONS requests through, as flask-login's ``login_required`` does.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast

from flask import abort, current_app, flash, jsonify, make_response, redirect, request, url_for
from sqlalchemy.exc import SQLAlchemyError

from . import outbox
from .confirmation import ConfirmationFlow, get_flow
from .errors import AddressError, is_database_fault
from .i18n import N_
from .i18n import gettext as _
from .outbox import Purpose
from .responses import answer_database_fault, wants_json
from .signup import begin_signup, end_signup

#: Methods the decorators let through unchecked (CORS preflight), as flask-login does.
EXEMPT_METHODS = frozenset({"OPTIONS"})
INVALID_ADDRESS = N_("Enter a single, valid email address.")
UNCONFIRMED = N_("Please confirm your email address first.")

F = TypeVar("F", bound=Callable[..., Any])


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
        except SQLAlchemyError as error:  # an outage: no half sign-up, nothing queued
            if not is_database_fault(error):
                raise
            return answer_database_fault(error)
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
        except SQLAlchemyError as error:  # the user or its sign-up date could not be read
            if not is_database_fault(error):
                raise
            return answer_database_fault(error)
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
    message = _(UNCONFIRMED)
    if wants_json():
        body: dict[str, Any] = {
            "status": "unconfirmed",
            "error": "email_unconfirmed",
            "message": message,
        }
        body.update(bounce_notice(bounce_of_current_user()))
        return make_response(jsonify(body), 403)
    flash(message, "warning")
    endpoint = flow.settings.unconfirmed_endpoint or "confirm_mail.resend"
    return redirect(url_for(endpoint))


def bounce_of_current_user() -> Any:
    """Why the logged-in user's address waiting for confirmation is not mailed (a bounce
    mark, :attr:`ConfirmationFlow.mail_blockers`), if it is not."""
    flow = get_flow()
    user = current_user_or_none()
    if user is None or not flow.mail_blockers:
        return None
    address = flow.columns.pending_of(user) or flow.columns.email_of(user)
    return flow.blocked(address) if address else None


def bounce_notice(mark: Any) -> dict[str, Any]:
    """What the pages and JSON answers say about a bounce: ``bounced``, ``change_email_url``."""
    if mark is None:
        return {}
    endpoint = get_flow().settings.change_email_endpoint
    return {
        "bounced": {"kind": mark.kind, "since": mark.marked_at.isoformat() + "Z"},
        "change_email_url": url_for(endpoint) if endpoint else None,
    }
