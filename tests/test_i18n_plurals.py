"""Every catalog's plural messages render with 1, 2 and 5, and 2 and 5 read alike.

French, Spanish, Italian and Portuguese have a third plural form for large round numbers
(``1000000 d'essais``); a catalog with its forms swapped showed "5 de intentos".
"""

from __future__ import annotations

import pytest
from babel.messages.pofile import read_po
from babel.support import Translations

from flask_confirm_mail.i18n import DOMAIN, LANGUAGES, TRANSLATIONS


def _plural_ids(language: str) -> list[tuple[str, str]]:
    with open(TRANSLATIONS / language / "LC_MESSAGES" / f"{DOMAIN}.po", "rb") as handle:
        catalog = read_po(handle)
    return [message.id for message in catalog if isinstance(message.id, tuple)]


#: How five wrong tries read in each language: the ordinary plural, not the large-number form.
FIVE_TRIES = {
    "en": "5 wrong tries",
    "de": "5 falschen Versuchen",
    "fr": "5 essais erronés",
    "es": "5 intentos fallidos",
    "it": "5 tentativi errati",
    "pt": "5 tentativas erradas",
}


@pytest.mark.parametrize("language", LANGUAGES)
def test_each_plural_message_renders_for_one_two_and_five(language: str) -> None:
    translations = Translations.load(str(TRANSLATIONS), [language], DOMAIN)
    ids = _plural_ids(language)
    assert ids, "the catalog has a plural message"
    for singular, plural in ids:
        texts = {
            n: translations.ungettext(singular, plural, n) % {"tries": n, "num": n}
            for n in (1, 2, 5)
        }
        assert all(f"{n}" in texts[n] for n in (1, 2, 5)), texts
        assert texts[2].replace("2", "5") == texts[5], f"{language}: 5 reads unlike 2: {texts}"
        assert FIVE_TRIES[language] in texts[5], texts[5]
