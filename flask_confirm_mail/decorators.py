"""View decorators: :func:`signup_view` and :func:`confirmed_required`."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast

from flask import abort, current_app, flash, jsonify, make_response, redirect, url_for

from .errors import AddressError
from .session_hooks import begin_signup_capture, end_signup_capture
from .state import get_state

#: The description of the 400 a sign-up view answers when a new user's address is refused.
INVALID_SIGNUP_ADDRESS = "Enter a single, valid email address."

F = TypeVar("F", bound=Callable[..., Any])


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
        state = get_state()  # fail early and clearly without init_app
        begin_signup_capture()
        try:
            return view(*args, **kwargs)
        except AddressError:
            state.db.session.rollback()
            abort(400, description=INVALID_SIGNUP_ADDRESS)
        finally:
            end_signup_capture()

    return cast(F, wrapper)


def current_user_or_none() -> Any:
    """The logged-in user: the app's registered getter, else Flask-Login's ``current_user``."""
    state = get_state()
    if state.user_getter is not None:
        return state.user_getter()
    if getattr(current_app, "login_manager", None) is not None:
        from flask_login import current_user  # type: ignore[import-untyped]

        user = current_user._get_current_object()
        return user if getattr(user, "is_authenticated", False) else None
    return None


def confirmed_required(view: F) -> F:
    """Let only users with a confirmed address through.

    Anonymous users get Flask-Login's ``unauthorized()`` (or 401). Unconfirmed users get
    a redirect to the resend page (or ``CONFIRM_MAIL_UNCONFIRMED_ENDPOINT``) with a
    flash message, or for JSON requests a 403 ``{"status": "unconfirmed", ...}``.
    """

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from .views import wants_json

        state = get_state()
        user = current_user_or_none()
        if user is None:
            login_manager = getattr(current_app, "login_manager", None)
            if login_manager is not None and state.user_getter is None:
                return login_manager.unauthorized()
            abort(401)
        if not state.columns.is_confirmed(user):
            message = state.settings.flash_unconfirmed
            if wants_json():
                body = {"status": "unconfirmed", "error": "email_unconfirmed", "message": message}
                return make_response(jsonify(body), 403)
            flash(message, "warning")
            endpoint = state.settings.unconfirmed_endpoint or "confirm_mail.resend"
            return redirect(url_for(endpoint))
        return view(*args, **kwargs)

    return cast(F, wrapper)
