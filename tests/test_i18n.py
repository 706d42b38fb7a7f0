"""Emails and pages in the reader's language (Flask-Babel), and the catalogs behind them."""

from __future__ import annotations

import gettext
import io
import os
import shutil
import subprocess
from collections.abc import Callable
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import write_mo
from babel.messages.pofile import PoFileError, read_po
from flask import Flask

from flask_confirm_mail import send_confirmation
from flask_confirm_mail.i18n import DOMAIN, LANGUAGES, TRANSLATIONS, locale_of
from flask_confirm_mail.i18n import gettext as translate
from tests.apps import User, db
from tests.support.smtp_server import SMTPSink
from tests.test_outbox import _worker

try:
    from babel.messages.frontend import parse_mapping_cfg
except ImportError:  # Babel before 2.16 (the floors lane)
    from babel.messages.frontend import parse_mapping as parse_mapping_cfg

ROOT = Path(__file__).resolve().parents[1]
KEYWORDS = {"_": None, "gettext": None, "ngettext": (1, 2), "lazy_gettext": None, "N_": None}
UPDATE_COMMAND = "scripts/translations"


def code_msgids() -> set[str]:
    """Every string the code and templates mark for translation (as ``pybabel extract``)."""
    with open(ROOT / "babel.cfg", encoding="utf-8") as config:
        method_map, options_map = parse_mapping_cfg(config)
    found = extract_from_dir(ROOT, method_map, options_map, keywords=KEYWORDS)
    return {message if isinstance(message, str) else message[0] for _, _, message, *_ in found}


def outbox_rows(app: Flask) -> list[Any]:
    model = app.extensions["confirm_mail"].outbox_model
    return list(db.session.scalars(db.select(model).order_by(model.id)))


def catalog(lang: str) -> Any:
    with open(TRANSLATIONS / lang / "LC_MESSAGES" / f"{DOMAIN}.po", "rb") as po:
        return read_po(po, locale=lang)


# --- the catalogs --------------------------------------------------------------------------


@pytest.mark.parametrize("lang", LANGUAGES)
def test_every_string_in_the_code_is_in_the_catalog(lang: str) -> None:
    po = catalog(lang)
    missing = sorted(code_msgids() - {m.id if isinstance(m.id, str) else m.id[0] for m in po})
    untranslated = sorted(
        m.id if isinstance(m.id, str) else m.id[0]
        for m in po
        if m.id and lang != "en" and (not m.string or m.fuzzy or not all(m.string))
    )
    assert not missing and not untranslated, (
        f"{lang}: run {UPDATE_COMMAND}, translate, run it again.\n"
        f"missing from {lang}.po: {missing}\nuntranslated or fuzzy: {untranslated}"
    )


@pytest.mark.parametrize("lang", LANGUAGES)
def test_the_compiled_catalog_matches_its_po_file(lang: str) -> None:
    compiled = io.BytesIO()
    write_mo(compiled, catalog(lang))
    compiled.seek(0)
    expected = gettext.GNUTranslations(compiled)
    with open(TRANSLATIONS / lang / "LC_MESSAGES" / f"{DOMAIN}.mo", "rb") as mo:
        committed = gettext.GNUTranslations(mo)
    # The header ("") names the Babel that compiled it; the messages must be the same.
    messages = [{k: v for k, v in t._catalog.items() if k} for t in (committed, expected)]  # type: ignore[attr-defined]
    assert messages[0] == messages[1], f"run {UPDATE_COMMAND} to compile {lang}"


@pytest.mark.parametrize("lang", [lang for lang in LANGUAGES if lang != "en"])
def test_translations_keep_every_placeholder(lang: str) -> None:
    problems = [(m.id, [str(e) for e in errors]) for m, errors in catalog(lang).check()]
    assert problems == []


def compile_problems(po_path: Path, lang: str, *, msgfmt: bool = True) -> list[str]:
    """What compiling ``po_path`` with checks finds: the errors ``pybabel compile`` reports
    (a placeholder the message lacks), and what it lets through silently (a syntax error,
    a fuzzy entry or catalog, which it leaves out of the ``.mo``, a plural message without
    one text per form, a ``Plural-Forms`` count its own formula contradicts); and, where
    GNU gettext is installed and ``msgfmt`` is true, what ``msgfmt --check`` refuses."""
    try:
        with open(po_path, "rb") as po:
            parsed = read_po(po, locale=lang, abort_invalid=True)
    except PoFileError as error:
        return [f"syntax: {error}"]
    problems = [f"line {m.lineno}: {e}" for m, errors in parsed.check() for e in errors]
    if parsed.fuzzy:
        problems.append("the catalog is marked fuzzy")
    problems += [f"line {m.lineno}: fuzzy {m.id!r}" for m in parsed if m.id and m.fuzzy]
    problems += [  # read_po pads a plural message's missing forms with empty texts
        f"line {m.lineno}: {parsed.num_plurals} plural forms wanted: {m.string!r}"
        for m in parsed
        if isinstance(m.id, tuple) and any(m.string) and not all(m.string)
    ]
    plural = gettext.c2py(parsed.plural_expr)
    forms = {plural(n) for n in [*range(1001), 10**6, 2 * 10**6, 10**9]}
    if forms != set(range(parsed.num_plurals)):
        problems.append(f"Plural-Forms: nplurals={parsed.num_plurals} but forms {sorted(forms)}")
    command = shutil.which("msgfmt") if msgfmt else None
    if command is not None:
        checked = subprocess.run(
            [command, "--check", "-o", os.devnull, str(po_path)], capture_output=True, text=True
        )
        if checked.returncode != 0:
            problems.append(f"msgfmt --check: {checked.stderr.strip()}")
    return problems


@pytest.mark.parametrize("lang", LANGUAGES)
def test_every_catalog_compiles_with_checks(lang: str) -> None:
    po_path = TRANSLATIONS / lang / "LC_MESSAGES" / f"{DOMAIN}.po"
    assert compile_problems(po_path, lang) == []


#: Entries each of which the check must refuse, added to a copy of the German catalog.
BROKEN_ENTRIES = {
    "placeholder": '#, python-format\nmsgid "Hi %(user_name)s"\nmsgstr "Hallo %(name)s"\n',
    "plural count": (
        '#, python-format\nmsgid "%(num)d cat"\nmsgid_plural "%(num)d cats"\n'
        'msgstr[0] "%(num)d Katze"\n'
    ),
    "fuzzy": '#, fuzzy\nmsgid "A guess"\nmsgstr "Eine Vermutung"\n',
}


@pytest.mark.parametrize("kind", [*BROKEN_ENTRIES, "Plural-Forms"])
def test_the_compile_check_refuses_a_broken_catalog(kind: str, tmp_path: Path) -> None:
    source = (TRANSLATIONS / "de" / "LC_MESSAGES" / f"{DOMAIN}.po").read_text(encoding="utf-8")
    if kind == "Plural-Forms":
        assert "nplurals=2; plural=(n != 1);" in source
        broken = source.replace(
            "nplurals=2; plural=(n != 1);", "nplurals=2; plural=(n > 1 ? 2 : 0);"
        )
    else:
        broken = f"{source}\n{BROKEN_ENTRIES[kind]}"
    po_path = tmp_path / f"{DOMAIN}.po"
    po_path.write_text(broken, encoding="utf-8")
    assert compile_problems(po_path, "de", msgfmt=False), f"the {kind} entry went through"


# --- pages ---------------------------------------------------------------------------------


@pytest.fixture
def babel_app(make_app: Callable[..., Flask]) -> Flask:
    """The test app with Flask-Babel, the locale from Accept-Language."""
    return make_app(config={"TEST_BABEL": True})


PAGE_STRINGS = {
    "en": ("This confirmation link is not valid.", "Send a new link"),
    "de": ("Dieser Bestätigungslink ist ungültig.", "Neuen Link senden"),
    "fr": ("Ce lien de confirmation n'est pas valide.", "Envoyer un nouveau lien"),
    "es": ("Este enlace de confirmación no es válido.", "Enviar un enlace nuevo"),
    "it": ("Questo link di conferma non è valido.", "Invia un nuovo link"),
    "pt": ("Este link de confirmação não é válido.", "Enviar um novo link"),
}


@pytest.mark.parametrize("lang", LANGUAGES)
def test_pages_speak_the_readers_language(babel_app: Flask, lang: str) -> None:
    client = babel_app.test_client()
    headers = {"Accept-Language": f"{lang},en;q=0.5"}
    invalid, button = PAGE_STRINGS[lang]
    page = client.get("/confirm/not-a-token", headers=headers)
    assert page.status_code == 400
    html = page.get_data(as_text=True)
    assert f'<html lang="{lang}">' in html
    assert invalid in unescape(html) and button in html
    answer = client.get("/confirm/not-a-token", headers={**headers, "Accept": "application/json"})
    assert answer.get_json()["message"] == invalid
    assert answer.get_json()["status"] == "invalid"


def test_json_messages_and_flashes_are_translated(babel_app: Flask) -> None:
    client = babel_app.test_client()
    german = {"Accept-Language": "de", "Accept": "application/json"}
    answer = client.post("/confirm/resend", json={"email": "a@b"}, headers=german)
    assert answer.status_code == 400
    assert answer.get_json()["message"] == "Geben Sie eine einzelne, gültige E-Mail-Adresse ein."
    client.post("/signup", data={"email": "kater@example.com"}, headers={"Accept-Language": "de"})
    refused = client.get("/members", headers=german)
    assert refused.status_code == 403
    assert refused.get_json()["message"] == "Bitte bestätigen Sie zuerst Ihre E-Mail-Adresse."
    redirected = client.get("/members", headers={"Accept-Language": "de"})
    assert redirected.status_code == 302
    resend_page = client.get(redirected.headers["Location"], headers={"Accept-Language": "de"})
    assert "Bitte bestätigen Sie zuerst Ihre E-Mail-Adresse." in resend_page.get_data(as_text=True)


def test_error_pages_are_translated(babel_app: Flask) -> None:
    client = babel_app.test_client()
    body = {"email": "x" * 20_000}  # over the blueprint's 16 KiB
    page = client.post("/confirm/resend", data=body, headers={"Accept-Language": "it"})
    assert page.status_code == 413
    assert "<h1>Richiesta troppo grande</h1>" in page.get_data(as_text=True)


def test_an_app_without_flask_babel_speaks_english(app: Flask, smtp_server: SMTPSink) -> None:
    assert "babel" not in app.extensions
    client = app.test_client()
    page = client.get("/confirm/not-a-token", headers={"Accept-Language": "de"})
    html = page.get_data(as_text=True)
    assert '<html lang="en">' in html and "This confirmation link is not valid." in html
    client.post("/signup", data={"email": "tom@example.com"}, headers={"Accept-Language": "de"})
    [mail] = smtp_server.wait_for(1)
    assert mail.message["Subject"] == "Confirm your email address"
    assert "The link works for 48 hours." in mail.message.get_body(("plain",)).get_content()
    with app.app_context():
        assert [row.locale for row in outbox_rows(app)] == [None]


# --- settings ------------------------------------------------------------------------------


def test_the_default_subject_follows_the_locale(babel_app: Flask, smtp_server: SMTPSink) -> None:
    client = babel_app.test_client()
    client.post("/signup", data={"email": "lea@example.com"}, headers={"Accept-Language": "fr"})
    [mail] = smtp_server.wait_for(1)
    assert mail.message["Subject"] == "Confirmez votre adresse e-mail"
    text = mail.message.get_body(("plain",)).get_content()
    assert text.startswith("Bonjour,") and "Le lien est valable 48\xa0heures." in text


# --- emails from a worker process ---------------------------------------------------------


@pytest.mark.slow
def test_a_german_signup_gets_a_german_email_from_a_worker(
    make_app: Callable[..., Flask], smtp_server: SMTPSink, database_url: str
) -> None:
    app = make_app(config={"TEST_BABEL": True, "CONFIRM_MAIL_DELIVERY": "worker"})
    client = app.test_client()
    answer = client.post(
        "/signup", data={"email": "kater@example.com"}, headers={"Accept-Language": "de-DE,de"}
    )
    assert answer.status_code == 201
    with app.app_context():
        send_confirmation(db.session.get(User, answer.get_json()["id"]))  # outside a request
        db.session.commit()
        assert [row.locale for row in outbox_rows(app)] == ["de", None]

    worker = _worker(database_url, smtp_server, "--once", TEST_BABEL="true")
    output = worker.communicate(timeout=60)[0].decode()
    assert worker.returncode == 0, output
    german, default = sorted(
        smtp_server.wait_for(2), key=lambda m: "Ihre" not in m.message["Subject"]
    )
    assert german.message["Subject"] == "Bestätigen Sie Ihre E-Mail-Adresse"
    text = german.message.get_body(("plain",)).get_content().replace("\r\n", "\n")
    html = german.message.get_body(("html",)).get_content()
    assert text.startswith("Hallo,\n\nBitte bestätigen Sie Ihre E-Mail-Adresse für app.example.com")
    assert "Der Link ist 48 Stunden lang gültig." in text
    assert '<html lang="de">' in html and "Meine E-Mail-Adresse bestätigen" in html
    assert default.message["Subject"] == "Confirm your email address"
    assert "The link works for 48 hours." in default.message.get_body(("plain",)).get_content()


@pytest.mark.parametrize(
    ("seconds", "words"),
    [(60 * 3600, "60 Stunden"), (3 * 86400, "3 Tage"), (3600, "1 Stunde"), (90, "90 Sekunden")],
)
def test_the_link_lifetime_is_exact_in_words(
    make_app: Callable[..., Flask], smtp_server: SMTPSink, seconds: int, words: str
) -> None:
    app = make_app(config={"TEST_BABEL": True, "CONFIRM_MAIL_LIFETIME": seconds})
    client = app.test_client()
    client.post("/signup", data={"email": "max@example.com"}, headers={"Accept-Language": "de"})
    [mail] = smtp_server.wait_for(1)
    assert f"Der Link ist {words} lang gültig." in mail.message.get_body(("plain",)).get_content()


@pytest.mark.parametrize("stored", [None, "", "xx_NOPE", "not a locale"])
def test_an_email_without_a_usable_locale_is_in_the_default_one(
    make_app: Callable[..., Flask], stored: str | None
) -> None:
    app = make_app(config={"TEST_BABEL": True, "BABEL_DEFAULT_LOCALE": "it"})
    with app.test_request_context(headers={"Accept-Language": "de"}), locale_of(stored):
        assert translate("Hello,") == "Ciao,"


def test_a_locale_with_a_long_modifier_is_stored_without_it(
    make_app: Callable[..., Flask], smtp_server: SMTPSink
) -> None:
    # A modifier has no length bound; the outbox's locale column holds 35 characters.
    app = make_app(config={"TEST_BABEL": True})
    locale = "de_DE@" + "x" * 60
    answer = app.test_client().post(
        "/signup", data={"email": "mod@example.com"}, headers={"X-Locale": locale}
    )
    assert answer.status_code == 201
    with app.app_context():
        assert [row.locale for row in outbox_rows(app)] == ["de_DE"]
    [mail] = smtp_server.wait_for(1)
    assert mail.message["Subject"] == "Bestätigen Sie Ihre E-Mail-Adresse"
