"""A signed-up user and the genuine link mailed to them: what every attack aims at."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from flask import Flask
from werkzeug.test import TestResponse

from flask_confirm_mail.addresses import normalize_address
from tests.apps import db
from tests.conftest import link_from
from tests.security.outcomes import JSON, assert_refused, count_queries, unchanged
from tests.support.smtp_server import SMTPSink

VICTIM = "victim@example.org"


@dataclass
class Victim:
    """An app with one signed-up, unconfirmed user and the link mailed to them."""

    app: Flask
    sink: SMTPSink
    uid: int
    email: str
    link: str

    @property
    def path(self) -> str:
        """The link's path: ``/confirm/<token>``."""
        return urlsplit(self.link).path

    @property
    def token(self) -> str:
        return self.path.rsplit("/", 1)[1]

    def row(self) -> Any:
        """The user's row as it is now (detached)."""
        state = self.app.extensions["confirm_mail"]
        with self.app.app_context():
            user = db.session.get(state.columns.model, self.uid)
            db.session.expunge_all()
            return user

    def is_confirmed(self) -> bool:
        state = self.app.extensions["confirm_mail"]
        return bool(state.columns.is_confirmed(self.row()))

    def attack(
        self, token: str, *, status: int = 400, queries: bool = False, leaks: tuple[str, ...] = ()
    ) -> list[TestResponse]:
        """Send ``token`` to the confirm route every way (GET page, POST form, POST JSON).

        Asserts the safe outcome of each: ``status``, no row changed, no email sent,
        neither the token (when long enough to be recognisable) nor ``leaks`` nor a
        secret in the answer, and, unless ``queries``, not one SQL statement run.
        """
        path = "/confirm/" + quote(token, safe="")
        client = self.app.test_client()
        echo = (token,) if len(token) >= 16 else ()
        responses = []
        with unchanged(self.app, self.sink), count_queries(self.app) as statements:
            for method, headers in (("GET", {}), ("POST", {}), ("POST", JSON)):
                response = client.open(path, method=method, headers=headers)
                assert_refused(response, *echo, *leaks, status=status)
                responses.append(response)
        if not queries:
            assert statements == [], "the database was queried for a refused token"
        assert responses[2].json["status"] == ("expired" if status == 410 else "invalid")
        assert not self.is_confirmed()
        return responses


def sign_up(app: Flask, sink: SMTPSink, email: str = VICTIM) -> Victim:
    """Sign ``email`` up through the app's view; return it with the link from its email."""
    before = len(sink.messages)
    response = app.test_client().post("/signup", data={"email": email})
    assert response.status_code == 201, response.data
    mail = sink.wait_for(before + 1)[-1]
    canonical = normalize_address(email)
    assert mail.rcpt_tos == [canonical]
    return Victim(app, sink, int(response.json["id"]), canonical, link_from(mail))
