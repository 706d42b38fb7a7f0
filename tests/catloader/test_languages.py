"""CatLoader in the reader's language: the extension's pages follow Accept-Language or the
language picked in the footer, and the confirmation email follows the sign-up's."""

from __future__ import annotations

from flask import Flask

from tests.catloader.live_server import wait_for_mail
from tests.catloader.web_client import CatLoaderClient


def test_the_extensions_pages_follow_accept_language(cat_client: CatLoaderClient) -> None:
    page = cat_client.http.get("/confirm/resend", headers={"Accept-Language": "es-ES,es"})
    html = page.get_data(as_text=True)
    assert '<html lang="es">' in html
    assert "Enviar un enlace nuevo" in html and "Dirección de correo electrónico" in html


def test_the_footer_switcher_picks_the_language_of_pages_and_emails(
    cat_client: CatLoaderClient, catloader: Flask
) -> None:
    home = cat_client.page("/")
    assert 'href="/language/de"' in home and ">Deutsch</a>" in home
    assert cat_client.http.get("/language/xx").status_code == 404
    picked = cat_client.http.get("/language/de", headers={"Accept-Language": "fr"})
    assert picked.status_code == 302
    page = cat_client.page("/confirm/resend", headers={"Accept-Language": "fr"})
    assert "Neuen Link senden" in page

    assert cat_client.signup("kater@example.com").status_code == 303
    [mail] = wait_for_mail(cat_client.mailbox, 1)
    assert mail.subject == "Confirm and access CatLoader"  # CatLoader's own subject
    assert mail.text.startswith("Hallo,")
    assert "Bitte bestätigen Sie Ihre E-Mail-Adresse für CatLoader" in mail.text
    assert "Meine E-Mail-Adresse bestätigen" in mail.html
