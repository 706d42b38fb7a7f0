"""Translations: through Flask-Babel when the app uses it, as written when it does not.

Its own ``flask_confirm_mail`` domain sits beside the app's catalogs, in the app's locale;
the app's Jinja ``_`` is the app's, so its templates get theirs from :func:`template_context`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

from flask import current_app, has_app_context, has_request_context
from jinja2 import pass_eval_context
from jinja2.nodes import EvalContext
from markupsafe import Markup, escape

try:
    import flask_babel  # type: ignore[import-untyped]
    from flask_babel.speaklater import LazyString  # type: ignore[import-untyped]
except ImportError:  # the ``babel`` extra is not installed
    flask_babel = LazyString = None

DOMAIN = "flask_confirm_mail"
TRANSLATIONS = Path(__file__).with_name("translations")
#: The languages the extension ships catalogs for (English is the source).
LANGUAGES = ("en", "de", "fr", "es", "it", "pt")

if flask_babel is not None:
    _domain = flask_babel.Domain(translation_directories=str(TRANSLATIONS), domain=DOMAIN)

    # Flask-Babel's lazy strings read as markup in Jinja; this one is escaped.
    class _LazyText(LazyString):  # type: ignore[misc]
        def __html__(self) -> str:
            return str(escape(str(self)))


def _babel_active() -> bool:
    return flask_babel is not None and has_app_context() and "babel" in current_app.extensions


def gettext(string: str, **variables: Any) -> str:
    """``string`` translated to the current locale, then ``%``-formatted with ``variables``."""
    if _babel_active():
        return str(_domain.gettext(string, **variables))
    return string % variables if variables else string


def ngettext(singular: str, plural: str, num: int, **variables: Any) -> str:
    """The singular or plural form for ``num`` (available as ``%(num)d``)."""
    if _babel_active():
        return str(_domain.ngettext(singular, plural, num, **variables))
    return (singular if num == 1 else plural) % {"num": num, **variables}


def N_(string: str) -> str:
    """Mark ``string`` for ``pybabel extract`` only; the code translates it where it is used."""
    return string


def lazy_gettext(string: str, **variables: Any) -> str:
    """Like :func:`gettext`, translated each time it is used (for settings and constants)."""
    if flask_babel is None:
        return gettext(string, **variables)
    return cast(str, _LazyText(gettext, string, **variables))


def current_locale() -> str | None:
    """The locale Flask-Babel chose for this request (``"pt_BR"``), else ``None``; without
    an ``@modifier``, which no catalog uses and whose length has no bound."""
    if not (_babel_active() and has_request_context()):
        return None
    return str(flask_babel.get_locale()).partition("@")[0][:35] or None


@contextmanager
def locale_of(locale: str | None) -> Iterator[None]:
    """Translate into ``locale`` (or the app's default if it is ``None`` or unknown) inside."""
    if not _babel_active():
        yield
        return
    from babel.core import Locale, UnknownLocaleError  # installed with flask_babel

    default = current_app.extensions["babel"].instance.default_locale
    try:
        target = Locale.parse(locale) if locale else default
    except (ValueError, TypeError, UnknownLocaleError):
        target = default
    with flask_babel.force_locale(target):
        yield


def format_duration(count: int, unit: str) -> str | None:
    """``count`` of ``unit`` (``"hour"``) in words of the current locale, or ``None`` without
    Flask-Babel. Exact, unlike ``format_timedelta``, which rounds to its largest unit."""
    if not _babel_active():
        return None
    from babel.units import format_unit

    locale = str(flask_babel.get_locale())
    return str(format_unit(count, f"duration-{unit}", length="long", locale=locale))


def _format(eval_ctx: EvalContext, translated: str, variables: dict[str, Any]) -> str:
    # As Jinja's "newstyle" gettext: in HTML the translation is markup, the variables escaped.
    if eval_ctx.autoescape:
        translated = Markup(translated)
    return translated % variables if variables else translated


def template_context() -> dict[str, Any]:
    """The extension's ``_``, ``gettext``, ``ngettext`` and ``html_lang`` for its templates."""
    active = _babel_active()
    locale = flask_babel.get_locale() if active else None

    @pass_eval_context
    def translate(eval_ctx: EvalContext, string: str, **variables: Any) -> str:
        if active:
            found = str(_domain.gettext(string))
            # Not in the extension's catalog: the app's, for an override's own wording.
            string = found if found != string else str(flask_babel.gettext(string))
        return _format(eval_ctx, string, variables)

    @pass_eval_context
    def translate_plural(
        eval_ctx: EvalContext, singular: str, plural: str, num: int, **variables: Any
    ) -> str:
        if active:
            translated = str(_domain.get_translations().ungettext(singular, plural, num))
        else:
            translated = singular if num == 1 else plural
        return _format(eval_ctx, translated, {"num": num, **variables})

    lang = str(locale).replace("_", "-") if locale else "en"
    return {"_": translate, "gettext": translate, "ngettext": translate_plural, "html_lang": lang}
