"""The home page (``bl_home``)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template

bp = Blueprint("bl_home", __name__)


@bp.get("/")
def index() -> Any:
    return render_template("home.html")
