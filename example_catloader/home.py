"""The home page (``bl_home``)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, redirect, render_template, session, url_for

from flask_confirm_mail.i18n import LANGUAGES

bp = Blueprint("bl_home", __name__)


@bp.get("/")
def index() -> Any:
    return render_template("home.html")


@bp.get("/language/<code>")
def language(code: str) -> Any:
    """Pick the language of the confirmation pages and emails (kept in the session)."""
    if code not in LANGUAGES:
        abort(404)
    session["language"] = code
    return redirect(url_for("bl_home.index"))
