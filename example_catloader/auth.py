"""Accounts: sign up, log in, log out, and change the email address (``bl_auth``)."""

from __future__ import annotations

import functools
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required, login_user, logout_user
from sqlalchemy.exc import IntegrityError
from werkzeug.security import check_password_hash, generate_password_hash

from flask_confirm_mail import AddressError, change_email, signup_view

from .extensions import db
from .forms import ChangeEmailForm, LoginForm, SignupForm
from .models import User

bp = Blueprint("bl_auth", __name__, url_prefix="/auth")

TAKEN = "That address already has a CatLoader account. Log in instead."
BAD_LOGIN = "Wrong email or password."


def _hashed(password: str, method: str | None) -> str:
    if method:
        return generate_password_hash(password, method)
    return generate_password_hash(password)


def hash_password(password: str) -> str:
    """``password`` hashed with ``CATLOADER_PASSWORD_HASH_METHOD`` (werkzeug's default: scrypt)."""
    return _hashed(password, current_app.config["CATLOADER_PASSWORD_HASH_METHOD"])


@functools.lru_cache(maxsize=4)
def _decoy_hash(method: str | None) -> str:
    return _hashed("not a password", method)


def find_user(email: str) -> User | None:
    user: User | None = db.session.execute(
        sa.select(User).where(User.email == email)
    ).scalar_one_or_none()
    return user


def safe_next(target: str | None) -> str | None:
    """``target`` when it is a path on this site, else ``None`` (no open redirect)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return None
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else None


def uploads_page() -> Any:
    return redirect(url_for("bl_backoffice.listuploads"), 303)


@bp.route("/signup", methods=["GET", "POST"])
@signup_view
def signup() -> Any:
    if current_user.is_authenticated:
        return uploads_page()
    form = SignupForm()
    if form.validate_on_submit():
        email = form.email.data or ""
        if find_user(email) is not None:
            form.email.errors.append(TAKEN)
        else:
            user = User(email=email, password_hash=hash_password(form.password.data or ""))
            db.session.add(user)
            try:
                db.session.commit()  # also queues the confirmation email (signup_view)
            except (IntegrityError, AddressError) as exc:
                db.session.rollback()
                form.email.errors.append(
                    TAKEN if isinstance(exc, IntegrityError) else "That address cannot be used."
                )
            else:
                login_user(user)
                flash(f"Welcome to CatLoader! We sent a confirmation link to {email}.", "success")
                return uploads_page()
    status = 400 if form.errors else 200
    return render_template("auth/signup.html", form=form), status


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    if current_user.is_authenticated:
        return uploads_page()
    form = LoginForm()
    if form.validate_on_submit():
        user = find_user(form.email.data or "")
        password = form.password.data or ""
        method = current_app.config["CATLOADER_PASSWORD_HASH_METHOD"]
        stored = user.password_hash if user is not None else _decoy_hash(method)
        # The hash is checked for unknown addresses too: both answers take as long.
        if check_password_hash(stored, password) and user is not None:
            login_user(user)
            target = safe_next(request.args.get("next"))
            return redirect(target, 303) if target else uploads_page()
        form.password.errors = [BAD_LOGIN]
    status = 400 if form.errors else 200
    return render_template("auth/login.html", form=form), status


@bp.get("/logout")
def logout() -> Any:
    logout_user()
    flash("You are logged out. See you soon!", "info")
    return redirect(url_for("bl_home.index"), 303)


@bp.route("/profile", methods=["GET", "POST"])
@login_required
def profile() -> Any:
    form = ChangeEmailForm()
    user: User = current_user._get_current_object()
    if form.validate_on_submit():
        new_email = form.email.data or ""
        owner = find_user(new_email)
        if owner is not None and owner.id != user.id:
            form.email.errors.append("That address belongs to another account.")
        else:
            try:
                changed = change_email(user, new_email)
                db.session.commit()
            except AddressError:
                db.session.rollback()
                form.email.errors.append("That address cannot be used.")
            else:
                if changed:
                    flash(
                        f"We sent a confirmation link to {new_email}. Until you open it, "
                        f"you keep logging in with {user.email}.",
                        "success",
                    )
                else:
                    flash("That is already your address.", "info")
                return redirect(url_for("bl_auth.profile"), 303)
    status = 400 if form.errors else 200
    return render_template("auth/profile.html", form=form), status
