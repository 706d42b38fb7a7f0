"""Template overrides, Flask-Login integration, the email's content."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask
from flask_login import LoginManager, login_user

from tests.apps import db, user_model
from tests.conftest import link_from
from tests.support.smtp_server import SMTPSink


def test_app_templates_override_the_email(
    make_app: Any, smtp_server: SMTPSink, tmp_path: Path
) -> None:
    app = make_app()
    folder = tmp_path / "templates" / "confirm_mail" / "email"
    folder.mkdir(parents=True)
    (folder / "signup.txt").write_text("Meow! Confirm here: {{ link }} ({{ lifetime }})")
    app.template_folder = str(tmp_path / "templates")
    app.jinja_env.cache = {}
    app.test_client().post("/signup", data={"email": "override@example.org"})
    [mail] = smtp_server.wait_for(1)
    text = mail.message.get_body(("plain",)).get_content()
    assert text.startswith("Meow! Confirm here: https://app.example.com/confirm/")
    assert link_from(mail) in text


def test_email_content_is_escaped_and_has_one_link(make_app: Any, smtp_server: SMTPSink) -> None:
    app = make_app(config={"CONFIRM_MAIL_APP_NAME": '<a href="https://evil">Verify</a>'})
    app.test_client().post("/signup", data={"email": "escape@example.org"})
    [mail] = smtp_server.wait_for(1)
    html = mail.message.get_body(("html",)).get_content()
    assert '<a href="https://evil">' not in html
    assert "&lt;a href=&#34;https://evil&#34;&gt;Verify&lt;/a&gt;" in html
    assert html.count("<a ") == 1 and f'href="{link_from(mail)}"' in html


def test_confirmed_required_with_flask_login(make_app: Any, smtp_server: SMTPSink) -> None:
    app: Flask = make_app()
    app.extensions["confirm_mail"].user_getter = None
    manager = LoginManager(app)
    model = user_model("mixin")
    model.is_authenticated = True  # minimal Flask-Login user protocol for the test model
    model.is_active = True
    model.get_id = lambda self: str(self.id)

    @manager.user_loader
    def load(uid: str) -> Any:
        return db.session.get(model, int(uid))

    @app.post("/flask-login/<int:uid>")
    def flask_login_view(uid: int) -> str:
        login_user(db.session.get(model, uid))
        return "ok"

    client = app.test_client()
    assert client.get("/members").status_code == 401  # no login_view: Flask-Login's 401
    uid = client.post("/signup", data={"email": "fl@example.org"}).json["id"]
    client.post(f"/flask-login/{uid}")
    assert client.get("/members").headers["Location"] == "/confirm/resend"
    client.post(link_from(smtp_server.wait_for(1)[0]).removeprefix("https://app.example.com"))
    assert client.get("/members").data == b"members only"
