"""Mail content and addresses: header injection, ambiguous recipients, HTML, leaky errors.

Cases 24-27 of the adversarial list (CWE-93; OWASP Injection Prevention; the email
package's header injection through encoded words, gh-121650; the original's unescaped
HTML). Nothing here may reach the SMTP server.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from email.headerregistry import AddressHeader
from html.parser import HTMLParser
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from jinja2 import ChoiceLoader, DictLoader

from flask_confirm_mail import (
    AddressError,
    ConfigurationError,
    change_email,
    delivery_failed,
    send_confirmation,
)
from flask_confirm_mail.errors import DeliveryError, TokenError
from flask_confirm_mail.outbox import utcnow
from flask_confirm_mail.settings import Settings
from flask_confirm_mail.tokens import LINK_AUDIENCE, LINK_TOKEN_TYPE, LinkTokenSigner
from flask_confirm_mail.transport import ConfirmationEmail, render_message
from tests.apps import EXTERNAL_URL, db, user_model
from tests.security.forgery import LINK_KEY, forge_link, link_header
from tests.security.outcomes import (
    JSON,
    app_log_texts,
    assert_no_leak,
    assert_refused,
    sqlite_only,
    unchanged,
)
from tests.security.victims import Victim, sign_up
from tests.support.smtp_server import SMTPSink

CRLF_ADDRESSES = [
    "a@x.com\r\nBcc: b@y.com",
    "a@x.com\nBcc: b@y.com",
    "a@x.com\rBcc: b@y.com",
    "a@x.com\r\n",
    "\r\na@x.com",
    "a@x.com%0d%0aBcc: b@y.com",
    "a@x.com%0D%0ABcc:b@y.com",
    "a@x.com\u2028Bcc: b@y.com",
    "a@x.com\x85Bcc: b@y.com",
    "a@x.com\x0bBcc: b@y.com",
    "a@x.com\x00b@y.com",
    "=?utf-8?q?a=0D=0ABcc:_b@y.com?=@x.com",
    "=?utf-8?q?a=0D=0A?=@x.com",
    "=?utf-8?b?YQ0KQmNjOiBiQHkuY29t?=@x.com",
]
AMBIGUOUS_ADDRESSES = [
    "alice@x.org(<bob@y.com>",
    "alice@x.org(comment)",
    "a@x.com, b@y.com",
    "a@x.com,b@y.com",
    "a@x.com;b@y.com",
    "a@x.com b@y.com",
    "a@x.com\tb@y.com",
    '"a@x.com"@y.com',
    '"a b"@y.com',
    "Alice <bob@y.com>",
    "<bob@y.com>",
    "bob@y.com>",
    "alice@x.org <bob@y.com>",
    "bob@[127.0.0.1]",
    "bob@y.com.",
    "@y.com",
    "bob@",
    "bob@@y.com",
    "a@b@y.com",
    "bob@y..com",
    "bøb@y.com",
    "bob@y\u00a0.com",
    "bob@\ufffd.com",
    "x" * 65 + "@y.com",
    "b@" + "y" * 250 + ".com",
]
BAD_ADDRESSES = CRLF_ADDRESSES + AMBIGUOUS_ADDRESSES


def _rows(app: Flask) -> int:
    state = app.extensions["confirm_mail"]
    with app.app_context():
        return sum(
            db.session.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
            for t in (state.columns.model.__table__, state.outbox_table)
        )


# --- 24 and 25: refused before anything is stored or sent ----------------------------------------


@pytest.mark.parametrize("address", BAD_ADDRESSES)
def test_signup_with_a_bad_address_is_a_400_and_stores_nothing(
    make_app: Callable[..., Flask], smtp_server: SMTPSink, address: str
) -> None:
    app = make_app()
    with unchanged(app, smtp_server):
        answer = app.test_client().post("/signup", data={"email": address})
    assert_refused(answer, address, status=400)
    assert b"valid email address" in answer.data
    assert _rows(app) == 0


@sqlite_only
@pytest.mark.parametrize("address", BAD_ADDRESSES)
def test_resend_with_a_bad_address_is_a_400(victim: Victim, address: str) -> None:
    client = victim.app.test_client()
    with unchanged(victim.app, victim.sink):
        form = client.post("/confirm/resend", data={"email": address})
        answer = client.post("/confirm/resend", json={"email": address})
    assert_refused(form, address, status=400)
    assert_refused(answer, address, status=400)
    assert answer.json["status"] == "invalid_address"


@sqlite_only
@pytest.mark.parametrize("address", BAD_ADDRESSES)
def test_change_email_to_a_bad_address_raises_and_queues_nothing(
    victim: Victim, address: str
) -> None:
    with unchanged(victim.app, victim.sink), victim.app.app_context():
        user = db.session.get(user_model("mixin"), victim.uid)
        with pytest.raises(AddressError) as caught:
            change_email(user, address)
        assert address not in str(caught.value)
        db.session.rollback()


@pytest.mark.parametrize("address", ["a@x.com\r\nBcc: b@y.com", "a@x.com, b@y.com"])
def test_stored_bad_address_is_refused_by_send_confirmation(victim: Victim, address: str) -> None:
    with victim.app.app_context():
        db.session.execute(
            sa.update(user_model("mixin").__table__).values(email=address)
        )  # written behind the extension's back
        db.session.commit()
    with unchanged(victim.app, victim.sink), victim.app.app_context():
        user = db.session.get(user_model("mixin"), victim.uid)
        with pytest.raises(AddressError):
            send_confirmation(user)
        db.session.rollback()


@pytest.mark.parametrize("address", ["a@x.com\r\nBcc: b@y.com", "a@x.com, b@y.com", "<b@y.com>"])
def test_a_bad_recipient_in_the_outbox_never_reaches_smtp(victim: Victim, address: str) -> None:
    """Rows written by other tools are checked again at delivery, and go dead."""
    state = victim.app.extensions["confirm_mail"]
    table = state.outbox_table
    with victim.app.app_context():
        now = utcnow()
        row_id = db.session.execute(
            table.insert()
            .values(
                user_id=str(victim.uid),
                recipient=address,
                purpose="signup",
                status="pending",
                attempts=0,
                due_at=now,
                created_at=now,
                message_id="<forged@app.example.com>",
            )
            .returning(table.c.id)
        ).scalar_one()
        db.session.commit()
        mails = len(victim.sink.messages)
        state.deliverer.deliver_now([row_id])
        row = db.session.execute(sa.select(table).where(table.c.id == row_id)).one()
    assert len(victim.sink.messages) == mails
    assert row.status == "dead"
    assert address not in (row.last_error or "")


# --- subject and sender: refused at start-up, and again at rendering -----------------------------

BAD_HEADER_TEXT = [
    "Confirm\r\nBcc: b@y.com",
    "Confirm\nBcc: b@y.com",
    "Confirm\u2028Bcc: b@y.com",
    "=?utf-8?q?Confirm=0D=0ABcc:_b@y.com?=",
    "Confirm =?utf-8?b?DQpCY2M6IGJAeS5jb20=?= now",
]
#: An encoded word glued to text: decoded in an unstructured header such as Subject, but
#: left as it is (so harmless) in a quoted display name.
GLUED_ENCODED_WORD = "x=?utf-8?q?=0A?=Bcc: b@y.com"


@sqlite_only
@pytest.mark.parametrize("name", BAD_HEADER_TEXT)
@pytest.mark.parametrize("key", ["CONFIRM_MAIL_SENDER", "MAIL_DEFAULT_SENDER"])
def test_sender_name_that_breaks_its_line_is_refused_at_start_up(
    make_app: Callable[..., Flask], key: str, name: str
) -> None:
    with pytest.raises(ConfigurationError, match="SENDER"):
        make_app(config={key: (name, "noreply@app.example.com")})


@pytest.mark.parametrize("name", [*BAD_HEADER_TEXT, GLUED_ENCODED_WORD])
def test_no_sender_name_adds_a_header_to_a_sent_email(
    make_app: Callable[..., Flask], smtp_server: SMTPSink, name: str
) -> None:
    """End to end: refused at start-up, or sent with no header added."""
    try:
        app = make_app(config={"CONFIRM_MAIL_SENDER": (name, "noreply@app.example.com")})
    except ConfigurationError:
        return
    sign_up(app, smtp_server)
    [mail] = smtp_server.messages
    _assert_no_header_added(mail)


def _assert_no_header_added(mail: Any) -> None:
    head = mail.raw.split(b"\r\n\r\n", 1)[0]
    assert mail.message["Bcc"] is None and b"\nBcc:" not in head
    assert mail.rcpt_tos == ["victim@example.org"]


def _with_subject_template(app: Flask, source: str) -> Flask:
    overrides = {"confirm_mail/email/signup_subject.txt": source}
    app.jinja_env.loader = ChoiceLoader([DictLoader(overrides), app.jinja_env.loader])
    return app


@pytest.mark.parametrize("text", [*BAD_HEADER_TEXT, GLUED_ENCODED_WORD])
def test_no_subject_template_adds_a_header_to_a_sent_email(
    make_app: Callable[..., Flask], smtp_server: SMTPSink, text: str
) -> None:
    """A subject template's line breaks are joined into one line; text that would decode
    into a line break makes the email refused for good (dead, never sent)."""
    app = _with_subject_template(make_app(), text)
    answer = app.test_client().post("/signup", data={"email": "victim@example.org"})
    assert answer.status_code == 201
    state = app.extensions["confirm_mail"]
    with app.app_context():
        [status] = db.session.execute(sa.select(state.outbox_table.c.status)).scalars()
    mails = smtp_server.messages
    assert (status, len(mails)) in (("sent", 1), ("dead", 0))
    for mail in mails:
        _assert_no_header_added(mail)
        assert mail.message["Subject"] == " ".join(text.splitlines())


@sqlite_only
@pytest.mark.parametrize("sender", ["a@x.com\r\nBcc: b@y.com", "Cat <a@x.com>\r\nBcc: b@y.com"])
def test_sender_address_that_breaks_its_line_is_refused_at_start_up(
    make_app: Callable[..., Flask], sender: str
) -> None:
    with pytest.raises(ConfigurationError, match="SENDER"):
        make_app(config={"CONFIRM_MAIL_SENDER": sender})


def _email(recipient: str = "a@example.org") -> ConfirmationEmail:
    return ConfirmationEmail(
        outbox_id=1,
        user_id="1",
        recipient=recipient,
        purpose="signup",
        link_prefix=f"{EXTERNAL_URL}/confirm/",
        link_token="t" * 40,
        expires_at=datetime(2030, 1, 1),
        lifetime=timedelta(hours=48),
        message_id="<m@app.example.com>",
    )


@sqlite_only
@pytest.mark.parametrize("text", BAD_HEADER_TEXT)
def test_rendering_refuses_what_start_up_would(app: Flask, text: str) -> None:
    """Defence in depth: values that bypassed start-up are checked again when rendering."""
    settings = app.extensions["confirm_mail"].settings
    sender = "noreply@app.example.com"

    def changed(**values: object) -> Settings:
        return Settings({**vars(settings), **values})

    with app.test_request_context():
        rendered = render_message(_email(), changed(sender=sender))
        assert rendered["Subject"] == "Confirm your email address"
        attempts = [
            lambda: render_message(_email(), changed(sender=(text, sender))),
            lambda: render_message(_email(f"a@x.com{text}"), changed(sender=sender)),
        ]
        for attempt in attempts:
            with pytest.raises(DeliveryError) as caught:
                attempt()
            assert caught.value.permanent and text not in str(caught.value)


def test_literal_percent_escapes_in_the_subject_stay_literal(
    make_app: Callable[..., Flask], smtp_server: SMTPSink
) -> None:
    """``%0d%0a`` is text, not a line break: it is sent as written, and adds no header."""
    subject = "Confirm%0d%0aBcc: b@y.com"
    sign_up(_with_subject_template(make_app(), subject), smtp_server)
    [mail] = smtp_server.messages
    assert mail.message["Subject"] == subject
    assert mail.message["Bcc"] is None and mail.rcpt_tos == ["victim@example.org"]


def test_every_email_has_exactly_one_recipient_the_stored_address(
    make_app: Callable[..., Flask], smtp_server: SMTPSink, shape: str
) -> None:
    app = make_app(shape=shape)
    victim = sign_up(app, smtp_server, "Some.One+tag@Example.org")
    [mail] = smtp_server.messages
    to = mail.message["To"]
    assert isinstance(to, AddressHeader) and len(to.addresses) == 1
    columns = app.extensions["confirm_mail"].columns
    stored = columns.email_of(victim.row())
    assert to.addresses[0].addr_spec == stored == "some.one+tag@example.org"
    assert mail.rcpt_tos == [stored]
    for name in ("Cc", "Bcc", "Reply-To"):
        assert mail.message[name] is None


# --- 26. HTML in app-supplied values -------------------------------------------------------------

EVIL_HTML = '<a href="https://evil">Verify</a>'


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.anchors = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.anchors += tag == "a"
        for name, value in attrs:
            if name in ("href", "src", "action", "background", "formaction") and value:
                self.urls.append(value)


def _assert_only_the_confirmation_link(html: str, link: str) -> None:
    parser = _Links()
    parser.feed(html)
    assert parser.urls == [link], parser.urls
    assert parser.anchors == 1
    assert EVIL_HTML not in html
    assert "&lt;a href=&#34;https://evil&#34;&gt;Verify&lt;/a&gt;" in html


def test_app_name_with_html_is_escaped(
    make_app: Callable[..., Flask], smtp_server: SMTPSink
) -> None:
    victim = sign_up(make_app(config={"CONFIRM_MAIL_APP_NAME": EVIL_HTML}), smtp_server)
    [mail] = smtp_server.messages
    _assert_only_the_confirmation_link(mail.message.get_body(("html",)).get_content(), victim.link)


def test_context_values_with_html_are_escaped_in_overridden_templates(
    make_app: Callable[..., Flask], smtp_server: SMTPSink
) -> None:
    app = make_app()
    override = (
        '{% extends "confirm_mail/email/_layout.html" %}'
        "{% block body %}<p>Hello {{ context.name }}, {{ recipient }}</p>{% endblock %}"
    )
    app.jinja_env.loader = ChoiceLoader(
        [DictLoader({"confirm_mail/email/signup.html": override}), app.jinja_env.loader]
    )
    with app.app_context():
        user = user_model("mixin")(email="cat@example.org")
        db.session.add(user)
        db.session.flush()
        send_confirmation(user, context={"name": EVIL_HTML})
        db.session.commit()
    [mail] = smtp_server.wait_for(1)
    html = mail.message.get_body(("html",)).get_content()
    assert "Hello &lt;a href" in html, "the override was not used"
    link = _urls(html)[0]
    _assert_only_the_confirmation_link(html, link)
    assert link.startswith(f"{EXTERNAL_URL}/confirm/")


def _urls(html: str) -> list[str]:
    parser = _Links()
    parser.feed(html)
    return parser.urls


def test_sender_display_name_with_html_stays_in_the_from_header(
    make_app: Callable[..., Flask], smtp_server: SMTPSink
) -> None:
    app = make_app(config={"CONFIRM_MAIL_SENDER": (EVIL_HTML, "noreply@app.example.com")})
    victim = sign_up(app, smtp_server)
    [mail] = smtp_server.messages
    sender = mail.message["From"]
    assert isinstance(sender, AddressHeader) and len(sender.addresses) == 1
    assert sender.addresses[0].addr_spec == "noreply@app.example.com"
    assert sender.addresses[0].display_name == EVIL_HTML
    assert mail.mail_from == "noreply@app.example.com"
    html = mail.message.get_body(("html",)).get_content()
    assert _urls(html) == [victim.link]


# --- 27. failures echo nothing secret ------------------------------------------------------------


@pytest.mark.parametrize("failure", ["451", "550", "outage", "bad TLS and password"])
def test_delivery_failures_echo_no_token_or_secret(
    make_app: Callable[..., Flask],
    smtp_server: SMTPSink,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    failure: str,
) -> None:
    password = "smtp-password-that-must-stay-secret"
    config: dict[str, Any] = {}
    if failure == "bad TLS and password":
        config = {"MAIL_USE_TLS": True, "MAIL_USERNAME": "cat", "MAIL_PASSWORD": password}
    app = make_app(config=config)
    signer = app.extensions["confirm_mail"].signer
    minted: list[str] = []
    issue = signer.issue

    def spy(*args: Any, **kwargs: Any) -> Any:
        token = issue(*args, **kwargs)
        minted.append(token)
        return token

    monkeypatch.setattr(signer, "issue", spy)
    if failure == "451":
        smtp_server.fail_next(1, 451)
    elif failure == "550":
        smtp_server.fail_next(1, 550)
    elif failure == "outage":
        smtp_server.stop()
    errors: list[str] = []
    caplog.set_level(logging.DEBUG)
    with delivery_failed.connected_to(lambda sender, **kw: errors.append(kw["error"]), app):
        answer = app.test_client().post("/signup", data={"email": "cat@example.org"})
    assert answer.status_code == 201
    state = app.extensions["confirm_mail"]
    with app.app_context():
        stored = db.session.execute(sa.select(state.outbox_table.c.last_error)).scalars().all()
    outbox_listing = app.test_cli_runner().invoke(args=["confirm-mail", "outbox"]).output
    assert minted and errors and stored[0]
    places = [
        *errors,
        *stored,
        *app_log_texts(caplog),
        outbox_listing,
        answer.get_data(as_text=True),
    ]
    for text in places:
        assert_no_leak(str(text), *minted, *(t.rsplit(".", 1)[1] for t in minted), password)


def _refusal_messages(uid: int, email: str) -> dict[str, str]:
    signer = LinkTokenSigner(LINK_KEY, lifetime=timedelta(hours=48))
    tokens = {
        "wrong key": forge_link(uid, email, key=b"k" * 40),
        "wrong audience": forge_link(uid, email, aud="flask-confirm-mail:reset"),
        "wrong typ": forge_link(uid, email, header=link_header(typ="JWT")),
        "expired": forge_link(uid, email, now=1_000_000_000),
        "bad sub": forge_link(uid, email, sub=["x"]),
    }
    messages = {}
    for name, token in tokens.items():
        try:
            signer.verify(token)
        except TokenError as exc:
            messages[name] = f"{exc} {exc.reason} {exc!r}"
    return messages


def test_token_refusals_name_no_expected_value() -> None:
    messages = _refusal_messages(1, "cat@example.org")
    assert len(messages) == 5
    for text in messages.values():
        assert_no_leak(text, LINK_AUDIENCE, LINK_TOKEN_TYPE, "cat@example.org", "HS256")
        assert "reset" not in text and "JWT" not in text


def test_a_link_for_another_address_does_not_reveal_the_stored_one(victim: Victim) -> None:
    victim.attack(forge_link(victim.uid, "guess@example.org"), queries=True, leaks=(victim.email,))


def test_resend_errors_do_not_echo_the_value(victim: Victim) -> None:
    value = '"><script>alert(1)</script>@x.com'
    for kwargs in ({"data": {"email": value}}, {"json": {"email": value}}):
        answer = victim.app.test_client().post("/confirm/resend", headers=JSON, **kwargs)
        assert_refused(answer, value, "<script>", status=400)
