"""Translations: the extension's strings through Flask-Babel when the app uses it, as
written when it does not.

Every string a reader sees (pages, emails, flashes, JSON messages) goes through
:func:`gettext` (``_`` in templates) or, for values fixed at import or in settings,
:func:`lazy_gettext`.
"""

from __future__ import annotations

from typing import Any, cast

from flask import Flask, current_app, has_app_context

try:
    import flask_babel  # type: ignore[import-untyped]
except ImportError:  # the ``babel`` extra is not installed
    flask_babel = None


def _babel_active() -> bool:
    return flask_babel is not None and has_app_context() and "babel" in current_app.extensions


def gettext(string: str, **variables: Any) -> str:
    """``string`` translated to the current locale, then ``%``-formatted with ``variables``."""
    if _babel_active():
        return str(flask_babel.gettext(string, **variables))
    return string % variables if variables else string


def ngettext(singular: str, plural: str, num: int, **variables: Any) -> str:
    """The singular or plural form for ``num`` (available as ``%(num)d``)."""
    if _babel_active():
        return str(flask_babel.ngettext(singular, plural, num, **variables))
    variables.setdefault("num", num)
    return (singular if num == 1 else plural) % variables


def lazy_gettext(string: str, **variables: Any) -> str:
    """Like :func:`gettext`, translated each time it is used (for settings and constants)."""
    if flask_babel is None:
        return string % variables if variables else string
    return cast(str, flask_babel.LazyString(gettext, string, **variables))


def install_template_gettext(app: Flask) -> None:
    """Give the app's templates ``_``, ``gettext`` and ``ngettext`` unless something (such
    as Flask-Babel) already did."""
    if "_" in app.jinja_env.globals:
        return
    app.jinja_env.add_extension("jinja2.ext.i18n")
    app.jinja_env.install_gettext_callables(  # type: ignore[attr-defined]
        gettext, ngettext, newstyle=True
    )
