"""Translations: the extension's strings through Flask-Babel when the app uses it, as
written when it does not.

Every string a reader sees (pages, emails, flashes, JSON messages) goes through
:func:`gettext` (``_`` in templates) or, for values fixed at import or in settings,
:func:`lazy_gettext`.

The extension's catalogs are its own: the ``flask_confirm_mail`` domain in
``flask_confirm_mail/translations/<lang>/LC_MESSAGES/``, read through a
:class:`flask_babel.Domain`, so they work beside the app's own ``messages`` catalogs
and whatever ``BABEL_TRANSLATION_DIRECTORIES`` says. The locale is the app's: its
Flask-Babel locale selector. The app's ``_`` in Jinja belongs to the app's domain, so the
extension's templates get theirs from the render context instead
(:func:`template_context`: the blueprint's context processor, and the email rendering);
a string missing from the extension's catalog is looked up in the app's, so an app that
overrides one of the templates with its own wording translates it in its own catalog.
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
    flask_babel = None
    LazyString = None

#: The gettext domain of the extension's catalogs (``flask_confirm_mail.po``/``.mo``).
DOMAIN = "flask_confirm_mail"
#: Where the catalogs live, one folder per language.
TRANSLATIONS = Path(__file__).with_name("translations")
#: The languages the extension ships catalogs for (English is the source language).
LANGUAGES = ("en", "de", "fr", "es", "it", "pt")

_domain: Any = (
    None
    if flask_babel is None
    else flask_babel.Domain(translation_directories=str(TRANSLATIONS), domain=DOMAIN)
)


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
    variables.setdefault("num", num)
    return (singular if num == 1 else plural) % variables


if LazyString is not None:

    class _LazyText(LazyString):  # type: ignore[misc]
        """A lazy string that Jinja and markupsafe escape (Flask-Babel's reads as markup)."""

        def __html__(self) -> str:
            return str(escape(str(self)))


def N_(string: str) -> str:
    """Mark ``string`` for the catalog only (``N_`` is one of ``pybabel extract``'s default
    keywords): a plain ``str`` constant, comparable and usable with ``in``, that the code
    translates with :func:`gettext` where it is used."""
    return string


def lazy_gettext(string: str, **variables: Any) -> str:
    """Like :func:`gettext`, translated each time it is used (for settings and constants)."""
    if flask_babel is None:
        return string % variables if variables else string
    return cast(str, _LazyText(gettext, string, **variables))


def current_locale() -> str | None:
    """The locale Flask-Babel chose for this request (``"de"``, ``"pt_BR"``), or ``None``
    without Flask-Babel or outside a request: stored on outbox rows."""
    if not _babel_active() or not has_request_context():
        return None
    return str(flask_babel.get_locale())


@contextmanager
def locale_of(locale: str | None) -> Iterator[None]:
    """Translate into ``locale`` inside the block (an email's, stored on its outbox row);
    the app's default locale when it is ``None`` or unknown. Nothing without Flask-Babel."""
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
    """``count`` of ``unit`` (``"day"``, ``"hour"``, ``"minute"``, ``"second"``) in words of
    the current locale through Babel ("48 hours", "48 Stunden"), or ``None`` without
    Flask-Babel. Exact, unlike ``format_timedelta``, which rounds to its largest unit."""
    if not _babel_active():
        return None
    return _duration_words(count, unit, str(flask_babel.get_locale()))


def _duration_words(count: int, unit: str, locale: str) -> str:
    from babel.units import format_unit

    return str(format_unit(count, f"duration-{unit}", length="long", locale=locale))


def _format(eval_ctx: EvalContext, translated: str, variables: dict[str, Any]) -> str:
    # As Jinja's "newstyle" gettext: in HTML the translation is markup and the variables
    # are escaped into it; in text templates both are plain.
    if eval_ctx.autoescape:
        return Markup(translated) % variables if variables else Markup(translated)
    return translated % variables if variables else translated


def template_context() -> dict[str, Any]:
    """What the extension's templates get to translate with: ``_``, ``gettext`` and
    ``ngettext`` of the extension's domain, and ``html_lang`` (``"de"``, ``"pt-BR"``)."""
    active = _babel_active()
    locale = flask_babel.get_locale() if active else None

    def translate(string: str) -> str:
        if not active:
            return string
        translated = str(_domain.gettext(string))
        # Not in the extension's catalog: the app's, for an override's own wording.
        return translated if translated != string else str(flask_babel.gettext(string))

    @pass_eval_context
    def template_gettext(eval_ctx: EvalContext, string: str, **variables: Any) -> str:
        return _format(eval_ctx, translate(string), variables)

    @pass_eval_context
    def template_ngettext(
        eval_ctx: EvalContext, singular: str, plural: str, num: int, **variables: Any
    ) -> str:
        variables.setdefault("num", num)
        if active:
            translations = _domain.get_translations()
            translated = str(translations.ungettext(singular, plural, num))
        else:
            translated = singular if num == 1 else plural
        return _format(eval_ctx, translated, variables)

    return {
        "_": template_gettext,
        "gettext": template_gettext,
        "ngettext": template_ngettext,
        "html_lang": str(locale).replace("_", "-") if locale else "en",
    }
