"""The pages in the app's own layout: ``confirm_mail/base.html`` overridden in one line
carries each page's title, and a few ``set`` lines give every element the app's classes."""

from __future__ import annotations

from typing import Any

from flask import Flask
from jinja2 import ChoiceLoader, DictLoader

from tests.support.smtp_server import SMTPSink
from tests.test_confirm_route import signed_up

#: An app layout that names its blocks ``title`` and ``content``.
BLOCK_LAYOUT = (
    "<title>{% block title %}{% endblock %} · Cat app</title>"
    "<main>{% block content %}{% endblock %}</main>"
)
#: An app layout that reads the title from a variable, as its own views pass it.
VARIABLE_LAYOUT = (
    "<title>{{ title|default('Cat app') }}</title><main>{% block content %}{% endblock %}</main>"
)
BOOTSTRAP_OVERRIDE = """{% extends "layout.html" %}
{% set cm_button_class = "btn btn-primary" %}
{% set cm_input_class = "form-control" %}
{% set cm_error_class = "alert alert-danger" %}
{% set cm_notice_class = "alert alert-info" %}
"""


def _with_templates(app: Flask, templates: dict[str, str]) -> Flask:
    app.jinja_env.loader = ChoiceLoader([DictLoader(templates), app.jinja_env.loader])
    app.jinja_env.cache = {}
    return app


def test_a_bootstrap_app_gets_its_title_and_classes_on_every_page(
    make_app: Any, smtp_server: SMTPSink
) -> None:
    app = _with_templates(
        make_app(),
        {"layout.html": BLOCK_LAYOUT, "confirm_mail/base.html": BOOTSTRAP_OVERRIDE},
    )
    _, path = signed_up(app, smtp_server)
    client = app.test_client()

    pending = client.get(path).text
    assert "<title>Confirm your email address · Cat app</title>" in pending
    assert '<button class="btn btn-primary" type="submit">' in pending

    resend = client.get("/confirm/resend").text
    assert "<title>Send a new confirmation link · Cat app</title>" in resend
    assert '<button class="btn btn-primary" type="submit">Send a new link</button>' in resend
    assert '<input class="form-control" id="confirm-mail-email"' in resend

    refused = client.post("/confirm/resend", data={"email": "not an address"})
    assert refused.status_code == 400
    assert '<p class="alert alert-danger">' in refused.text

    sent = client.post("/confirm/resend", data={"email": "someone@example.org"})
    assert sent.status_code == 202
    assert '<p class="alert alert-info">' in sent.text

    code = client.post("/confirm/code", data={"email": "someone@example.org", "code": "nope"})
    assert '<p class="alert alert-danger" role="alert">' in code.text
    assert code.text.count('class="form-control"') == 2

    invalid = client.get("/confirm/not-a-token").text
    assert "<title>Link not valid · Cat app</title>" in invalid
    assert '<p class="alert alert-danger">' in invalid
    for page in (pending, resend, refused.text, sent.text, code.text, invalid):
        assert "cm-button" not in page and "cm-error" not in page and "cm-notice" not in page


def test_a_layout_that_reads_a_title_variable_gets_each_pages_title(
    make_app: Any, smtp_server: SMTPSink
) -> None:
    app = _with_templates(
        make_app(),
        {
            "layout.html": VARIABLE_LAYOUT,
            "confirm_mail/base.html": (
                '{% extends "layout.html" %}{% set title = confirm_mail_title %}'
            ),
        },
    )
    _, path = signed_up(app, smtp_server)
    client = app.test_client()
    pages = {
        path: "Confirm your email address",
        "/confirm/resend": "Send a new confirmation link",
        "/confirm/code": "Enter your confirmation code",
        "/confirm/not-a-token": "Link not valid",
    }
    for url, title in pages.items():
        text = client.get(url).text
        assert f"<title>{title}</title>" in text, url
    # Without the class variables the pages keep their own classes.
    assert '<button class="cm-button" type="submit">' in client.get(path).text
    confirmed = client.post(path)
    assert "<title>Email confirmed</title>" in confirmed.text
    assert "<title>Already confirmed</title>" in client.get(path).text
