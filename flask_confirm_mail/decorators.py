"""The view decorators :func:`signup_view` and :func:`confirmed_required`.

Both call views through ``ensure_sync`` and let OPTIONS through, as ``login_required`` does."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast

from flask import abort, current_app, flash, jsonify, make_response, redirect, request, url_for
from sqlalchemy.exc import SQLAlchemyError

from . import outbox
from .confirmation import get_flow
from .errors import AddressError
from .i18n import N_
from .i18n import gettext as _
from .responses import answer_database_fault, wants_json
from .signup import begin_signup, end_signup

INVALID_ADDRESS = N_("Enter a single, valid email address.")
F = TypeVar("F", bound=Callable[..., Any])


def current_user_or_none() -> Any:
    """The logged-in user: the app's registered getter's, else Flask-Login's ``current_user``
    (from the session or a ``request_loader``); ``None`` for an anonymous visitor."""
    flow = get_flow()
    user = flow.user_getter() if flow.user_getter is not None else None
    if user is None and getattr(current_app, "login_manager", None) is not None:
        from flask_login import current_user  # type: ignore[import-untyped]  # optional

        user = current_user._get_current_object()
    return user if getattr(user, "is_authenticated", True) else None


def signup_view(view: F) -> F:
    """Mark a sign-up view: each new user it commits gets a confirmation email, queued in
    the same transaction (nothing is sent if the view raises or rolls back). An
    :class:`~flask_confirm_mail.errors.AddressError` from the commit (not one plain address)
    rolls back and answers 400; a database outage, 503."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        call = current_app.ensure_sync(view)
        if request.method == "OPTIONS":
            return call(*args, **kwargs)
        flow = get_flow()  # fail early and clearly without init_app
        begin_signup()
        try:
            return call(*args, **kwargs)
        except AddressError:
            flow.db.session.rollback()
            abort(400, description=_(INVALID_ADDRESS))
        except SQLAlchemyError as error:  # no half sign-up, nothing queued
            return answer_database_fault(error)
        finally:
            end_signup()

    return cast(F, wrapper)


def confirmed_required(view: F) -> F:
    """Let only users with a confirmed address through. Anonymous users get Flask-Login's
    ``unauthorized()`` (or 401; JSON: 401 ``{"status": "unauthenticated"}``); unconfirmed ones
    (once ``CONFIRM_MAIL_UNCONFIRMED_ACCESS_FOR`` after sign-up has passed) a flash and redirect
    to the resend page (or ``CONFIRM_MAIL_UNCONFIRMED_ENDPOINT``), or for JSON a 403
    ``{"status": "unconfirmed"}``."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        call = current_app.ensure_sync(view)
        if request.method == "OPTIONS":
            return call(*args, **kwargs)
        try:
            refusal = _refuse_unconfirmed()
        except SQLAlchemyError as error:  # the user or its sign-up date could not be read
            return answer_database_fault(error)
        return refusal if refusal is not None else call(*args, **kwargs)

    return cast(F, wrapper)


def _refuse_unconfirmed() -> Any:
    """What :func:`confirmed_required` answers instead of the view, or ``None``."""
    flow = get_flow()
    user = current_user_or_none()
    if user is None:
        manager = getattr(current_app, "login_manager", None)
        # JSON clients get JSON, not a login page, unless the app set an unauthorized_handler.
        if manager is not None and (manager.unauthorized_callback or not wants_json()):
            return manager.unauthorized()
        if wants_json():
            return make_response(jsonify(status="unauthenticated", error="login_required"), 401)
        abort(401)
    if flow.columns.is_confirmed(user):
        return None
    if grace := flow.settings.unconfirmed_access_for:
        connection = flow.db.session.connection()
        user_id = flow.columns.id_of(user)
        signed_up = outbox.signed_up_at(connection, flow.state_table, user_id)
        if signed_up is not None and outbox.utcnow() - signed_up < grace:
            return None
    message = _("Please confirm your email address first.")
    if wants_json():
        body = {"status": "unconfirmed", "error": "email_unconfirmed", "message": message}
        return make_response(jsonify({**body, **bounce_notice()}), 403)
    flash(message, "warning")
    return redirect(url_for(flow.settings.unconfirmed_endpoint or "confirm_mail.resend"))


def bounce_notice() -> dict[str, Any]:
    """``bounced`` and ``change_email_url`` when the logged-in user's waiting address is
    blocked (:attr:`ConfirmationFlow.mail_blockers`, a bounce mark); else empty."""
    flow = get_flow()
    user = current_user_or_none()
    if user is None or not flow.mail_blockers:
        return {}
    address = flow.columns.pending_of(user) or flow.columns.email_of(user)
    mark = flow.blocked(address) if address else None
    if mark is None:
        return {}
    endpoint = flow.settings.change_email_endpoint
    return {
        "bounced": {"kind": mark.kind, "since": mark.marked_at.isoformat() + "Z"},
        "change_email_url": url_for(endpoint) if endpoint else None,
    }
