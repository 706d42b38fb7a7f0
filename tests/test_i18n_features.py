"""The later features in the reader's language: the change notice, reminders, confirm by
code and the 503 page, through a real SMTP sink (Flask-Babel, German unless said)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from tests.apps import db
from tests.support.smtp_server import ReceivedMail, SMTPSink
from tests.test_change_notice import _add_change_route
from tests.test_confirm_code import code_from

GERMAN = {"Accept-Language": "de"}
DAY = 86_400


def _texts(mail: ReceivedMail) -> tuple[str, str]:
    text = mail.message.get_body(("plain",)).get_content().replace("\r\n", "\n")
    return text, mail.message.get_body(("html",)).get_content()


def _sign_up(app: Flask, email: str, language: str = "de") -> int:
    answer = app.test_client().post(
        "/signup", data={"email": email}, headers={"Accept-Language": language}
    )
    assert answer.status_code == 201
    return int(answer.json["id"])


def _locales(app: Flask, purpose: str) -> list[str | None]:
    table = app.extensions["confirm_mail"].outbox_table
    query = sa.select(table.c.locale).where(table.c.purpose == purpose).order_by(table.c.id)
    with app.app_context(), db.engine.connect() as conn:
        return list(conn.execute(query).scalars())


@pytest.fixture
def babel_app(make_app: Callable[..., Flask]) -> Flask:
    return make_app(config={"TEST_BABEL": True})


def test_a_change_asked_in_german_sends_a_german_notice_to_the_old_address(
    make_app: Callable[..., Flask], smtp_server: SMTPSink
) -> None:
    # No cooldown: the old address got its sign-up email just now.
    babel_app = make_app(config={"TEST_BABEL": True, "CONFIRM_MAIL_RESEND_COOLDOWN": 0})
    _add_change_route(babel_app)
    uid = _sign_up(babel_app, "alt@example.org")
    with babel_app.app_context():  # only a confirmed old address gets the notice
        flow = babel_app.extensions["confirm_mail"]
        assert flow.confirm_user(db.session.get(flow.columns.model, uid))
        db.session.commit()
    client = babel_app.test_client()
    assert client.post(f"/login/{uid}").status_code == 200
    answer = client.post("/change", data={"email": "neu@example.net"}, headers=GERMAN)
    assert answer.json == {"changed": True}
    _, *mails = smtp_server.wait_for(3)
    [notice] = [m for m in mails if m.rcpt_tos == ["alt@example.org"]]
    [change] = [m for m in mails if m.rcpt_tos == ["neu@example.net"]]
    assert _locales(babel_app, "change_notice") == ["de"]
    assert notice.message["Subject"] == "Ihre E-Mail-Adresse wird geändert"
    text, html = _texts(notice)
    assert text.startswith(
        "Hallo,\n\nJemand hat beantragt, die E-Mail-Adresse Ihres Kontos bei app.example.com "
        "in n***@e***.net zu ändern.\n"
        "Diese Adresse bleibt dem Konto zugeordnet, bis die neue bestätigt ist."
    )
    assert "wenden Sie sich sofort an app.example.com." in text
    assert '<html lang="de">' in html and "Jemand hat beantragt" in html
    assert change.message["Subject"] == "Bestätigen Sie Ihre neue E-Mail-Adresse"


def test_a_german_sign_up_gets_its_code_in_german_and_the_code_page_answers_in_german(
    babel_app: Flask, smtp_server: SMTPSink
) -> None:
    _sign_up(babel_app, "kater@example.org")
    [mail] = smtp_server.wait_for(1)
    code = code_from(mail)
    text, html = _texts(mail)
    asks = "Oder geben Sie diesen Code dort ein, wo app.example.com danach fragt, auf einem"
    assert f"{asks} beliebigen Gerät:\n\n    {code}\n" in text
    assert asks in html
    client = babel_app.test_client()
    page = client.get("/confirm/code", headers=GERMAN).get_data(as_text=True)
    assert '<html lang="de">' in page and "<h1>Geben Sie Ihren Bestätigungscode ein</h1>" in page
    wrong = "0000000" if code != "0000000" else "1111111"
    refused = client.post("/confirm/code", data={"email": "kater@example.org", "code": wrong},
                          headers=GERMAN)  # fmt: skip
    assert refused.status_code == 400
    assert "verfällt nach 5 falschen Versuchen" in refused.get_data(as_text=True)
    as_json = {**GERMAN, "Accept": "application/json"}
    bad_address = client.post("/confirm/code", json={"email": "a@b", "code": code}, headers=as_json)
    assert bad_address.status_code == 400
    assert bad_address.json["message"] == "Geben Sie eine einzelne, gültige E-Mail-Adresse ein."
    right = client.post(
        "/confirm/code", json={"email": "kater@example.org", "code": code}, headers=as_json
    )
    assert right.status_code == 200
    assert right.json["message"] == "Ihre E-Mail-Adresse ist bestätigt."


def test_the_tries_allowed_are_said_in_the_plural(make_app: Callable[..., Flask]) -> None:
    app = make_app(config={"TEST_BABEL": True})
    form = {"email": "nobody@example.org", "code": "123456"}
    french = app.test_client().post("/confirm/code", data=form, headers={"Accept-Language": "fr"})
    assert "cesse de fonctionner après 5 essais erronés." in french.get_data(as_text=True)


def test_reminders_are_written_in_the_language_of_each_sign_up(
    make_app: Callable[..., Flask], smtp_server: SMTPSink, clock: Any
) -> None:
    app = make_app(config={"TEST_BABEL": True, "CONFIRM_MAIL_REMINDERS": "1d"})
    _sign_up(app, "hund@example.org", "de")
    _sign_up(app, "chat@example.org", "fr")
    smtp_server.wait_for(2)
    clock.shift(DAY + 10)
    # Queued by the CLI, outside any request: each takes the locale of its sign-up's email.
    result = app.test_cli_runner().invoke(args=["confirm-mail", "remind", "--yes"])
    assert "Queued 2 reminder(s)." in result.output, result.output
    assert _locales(app, "reminder") == ["de", "fr"]
    reminders = {m.rcpt_tos[0]: m for m in smtp_server.wait_for(4)[2:]}
    german = reminders["hund@example.org"]
    assert german.message["Subject"] == "Erinnerung: Bestätigen Sie Ihre E-Mail-Adresse"
    text, html = _texts(german)
    assert text.startswith(
        "Hallo,\n\nSie haben sich bei app.example.com registriert, Ihre E-Mail-Adresse aber "
        "noch nicht bestätigt. Bestätigen Sie sie, indem Sie diesen Link öffnen:"
    )
    assert '<html lang="de">' in html and "Meine E-Mail-Adresse bestätigen" in html
    french = reminders["chat@example.org"]
    assert french.message["Subject"] == "Rappel\xa0: confirmez votre adresse e-mail"


@pytest.fixture
def gone_database(database_that_goes_away: Callable[..., Any]) -> Any:
    """A Flask-Babel app on a SQLite file, and a switch that takes the file away."""
    return database_that_goes_away({"TEST_BABEL": True})


@pytest.mark.parametrize("path", ["/confirm/code", "/members"])
def test_the_outage_page_is_in_the_readers_language(gone_database: Any, path: str) -> None:
    """The blueprint's route and an app view behind ``confirmed_required`` alike."""
    app, go_down = gone_database
    client = app.test_client()
    assert client.post("/signup", data={"email": "maus@example.org"}).status_code == 201
    go_down()
    if path == "/members":
        response = client.get(path, headers=GERMAN)
    else:
        response = client.post(
            path, data={"email": "maus@example.org", "code": "1"}, headers=GERMAN
        )
    assert response.status_code == 503 and response.headers["Retry-After"] == "30"
    page = response.get_data(as_text=True)
    assert '<html lang="de">' in page and "<title>Gleich wieder da</title>" in page
    assert "Der Dienst erreicht seine Datenbank nicht; es wurde nichts gespeichert." in page
