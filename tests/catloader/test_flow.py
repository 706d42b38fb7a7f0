"""The CatLoader flow through the test client: sign up, mailbox, confirm, upload, change email."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask

from example_catloader.extensions import db
from example_catloader.models import Picture, User
from tests.catloader.live_server import wait_for_mail
from tests.catloader.pictures import picture_bytes
from tests.catloader.web_client import CatLoaderClient, csrf_token_in, path_of

CONFIRMED = "Your email address is confirmed."
INVALID = "This confirmation link is not valid."


def user_row(app: Flask, email: str) -> User:
    with app.app_context():
        user = db.session.execute(sa.select(User).where(User.email == email)).scalar_one()
        db.session.expunge(user)
        return user


def picture_count(app: Flask) -> int:
    with app.app_context():
        return int(db.session.execute(sa.select(sa.func.count(Picture.id))).scalar_one())


def confirm(client: CatLoaderClient, link: str) -> str:
    """Open ``link`` (GET shows a button), press the button; return the landing page."""
    page = client.http.get(path_of(link))
    assert page.status_code == 200
    token = csrf_token_in(page.get_data(as_text=True))
    done = client.http.post(path_of(link), data={"csrf_token": token})
    assert done.status_code == 303
    assert done.headers["Location"] == "/backoffice/uploads"
    return client.page("/backoffice/uploads")


@pytest.mark.parametrize("delivery", ["sync", "thread"])
def test_signup_mailbox_confirm_upload(
    make_catloader: Callable[..., Flask], database_url: str, delivery: str
) -> None:
    app = make_catloader(
        {"SQLALCHEMY_DATABASE_URI": database_url, "CONFIRM_MAIL_DELIVERY": delivery}
    )
    client = CatLoaderClient(app)

    signed_up = client.signup("Kitty@Example.com")
    assert signed_up.status_code == 303
    assert signed_up.headers["Location"] == "/backoffice/uploads"
    uploads = client.page("/backoffice/uploads")
    assert "Please confirm your email address." in uploads
    assert 'action="/confirm/resend"' in uploads and "Resend the link" in uploads
    assert not user_row(app, "kitty@example.com").email_confirmed

    # The mail lands in the local mailbox; its page shows the mail and its link.
    [mail] = wait_for_mail(client.mailbox, 1)
    assert mail.recipients == ["kitty@example.com"]
    assert mail.subject == "Confirm and access CatLoader"
    listing = client.page("/dev/mailbox/")
    assert f"/dev/mailbox/{mail.id}" in listing
    shown = client.page(f"/dev/mailbox/{mail.id}")
    link = html.unescape(re.search(r'id="mail-link" href="([^"]+)"', shown).group(1))
    assert link == client.link_in(mail)
    assert link.startswith("http://catloader.test/confirm/")

    landing = confirm(client, link)
    assert CONFIRMED in landing
    assert "Please confirm your email address." not in landing
    assert user_row(app, "kitty@example.com").email_confirmed

    cat = picture_bytes("JPEG")
    uploaded = client.upload("garfield.jpg", cat)
    assert uploaded.status_code == 303
    listing = client.page("/backoffice/uploads")
    assert "garfield.jpg" in listing
    [src] = re.findall(r'<img src="(/backoffice/picture/\d+)"', listing)
    with client.http.get(src) as served:
        assert served.status_code == 200
        assert served.mimetype == "image/jpeg"
        assert served.get_data() == cat


def test_unconfirmed_user_cannot_upload(cat_client: CatLoaderClient, catloader: Flask) -> None:
    cat_client.signup("tom@example.com")
    page = cat_client.page("/backoffice/uploads")
    assert re.search(r'<fieldset class="upload__fields" disabled>', page)

    refused = cat_client.upload("tom.png", picture_bytes("PNG"))
    assert refused.status_code == 302
    assert refused.headers["Location"] == "/backoffice/uploads"
    assert "Please confirm your email address first." in cat_client.page("/backoffice/uploads")
    assert picture_count(catloader) == 0
    assert not Path(catloader.config["CATLOADER_UPLOAD_FOLDER"]).exists()


def test_anonymous_upload_goes_to_login(cat_client: CatLoaderClient, catloader: Flask) -> None:
    refused = cat_client.upload("tom.png", picture_bytes("PNG"))
    assert refused.status_code == 302
    assert refused.headers["Location"].startswith("/auth/login")
    assert picture_count(catloader) == 0


def _tamper_signature(token: str) -> str:
    head, payload, signature = token.split(".")
    flipped = "A" if signature[5] != "A" else "B"
    return f"{head}.{payload}.{signature[:5]}{flipped}{signature[6:]}"


def _tamper_payload(token: str) -> str:
    head, payload, signature = token.split(".")
    return f"{head}.{payload[:-2]}{'Q' if payload[-2] != 'Q' else 'R'}{payload[-1]}.{signature}"


@pytest.mark.parametrize(
    "tamper",
    [
        _tamper_signature,
        _tamper_payload,
        lambda token: token[: len(token) // 2],
        lambda token: token + "x",
        lambda token: "not-a-token",
    ],
    ids=["signature", "payload", "truncated", "extended", "garbage"],
)
def test_tampered_link_shows_problem_and_resend(
    cat_client: CatLoaderClient, catloader: Flask, tamper: Callable[[str], str]
) -> None:
    cat_client.signup("felix@example.com")
    link = cat_client.link_in(cat_client.mails_to("felix@example.com")[0])
    token = path_of(link).rsplit("/", 1)[1]
    bad_path = f"/confirm/{tamper(token)}"

    for response in (
        cat_client.http.get(bad_path),
        cat_client.post_form(bad_path, {}),
    ):
        assert response.status_code == 400
        page = response.get_data(as_text=True)
        assert INVALID in page
        assert 'action="/confirm/resend"' in page  # a way to ask for a new link
        assert "CatLoader" in page  # in CatLoader's layout
        assert token not in page
    assert not user_row(catloader, "felix@example.com").email_confirmed

    # The untouched link still works.
    assert CONFIRMED in confirm(cat_client, link)


def test_change_email_reconfirms_new_address(cat_client: CatLoaderClient, catloader: Flask) -> None:
    cat_client.signup("old@example.com")
    confirm(cat_client, cat_client.link_in(cat_client.mails_to("old@example.com")[0]))

    changed = cat_client.change_email("New@Example.com")
    assert changed.status_code == 303
    profile = cat_client.page("/auth/profile")
    assert "We sent a confirmation link to new@example.com" in profile
    assert "Confirm your new address." in profile
    user = user_row(catloader, "old@example.com")
    assert user.pending_email == "new@example.com"

    [mail] = cat_client.mails_to("new@example.com")
    assert mail.subject == "Confirm changed email/login"

    # Until the link is used, the old address stays the login.
    cat_client.logout()
    assert cat_client.login("new@example.com").status_code == 400
    assert cat_client.login("old@example.com").status_code == 303

    assert CONFIRMED in confirm(cat_client, cat_client.link_in(mail))
    profile = cat_client.page("/auth/profile")
    assert re.search(
        r'id="current-email">new@example.com\s*<span class="badge badge--ok">', profile
    )
    assert "pending-email" not in profile
    cat_client.logout()
    assert cat_client.login("old@example.com").status_code == 400
    assert cat_client.login("new@example.com").status_code == 303


def test_change_email_to_taken_or_same_address(cat_client: CatLoaderClient) -> None:
    cat_client.signup("first@example.com")
    cat_client.logout()
    cat_client.signup("second@example.com")

    taken = cat_client.change_email("first@example.com")
    assert taken.status_code == 400
    assert "That address belongs to another account." in taken.get_data(as_text=True)

    same = cat_client.change_email("second@example.com")
    assert same.status_code == 303
    assert "That is already your address." in cat_client.page("/auth/profile")
    # Only the two sign-up emails: neither refused change mailed anyone.
    assert [m.subject for m in cat_client.mailbox.messages()] == [
        "Confirm and access CatLoader"
    ] * 2


def test_resend_button_sends_a_new_link(make_catloader: Callable[..., Flask]) -> None:
    app = make_catloader({"CONFIRM_MAIL_RESEND_COOLDOWN": 0})
    client = CatLoaderClient(app)
    client.signup("luna@example.com")
    page = client.page("/backoffice/uploads")
    banner = re.search(r'<section class="banner".*?</section>', page, re.S).group(0)
    email = re.search(r'name="email" value="([^"]+)"', banner).group(1)
    assert email == "luna@example.com"

    resent = client.post_form("/confirm/resend", {"email": email}, buffered=True)
    assert resent.status_code == 202
    answer = resent.get_data(as_text=True)
    assert "a new link is on its way" in answer
    assert 'class="topbar"' in answer  # the extension's page in CatLoader's layout
    first, second = sorted(client.mails_to("luna@example.com"), key=lambda m: m.id)
    assert client.link_in(first) != client.link_in(second)
    assert CONFIRMED in confirm(client, client.link_in(first))


@pytest.mark.parametrize(
    ("email", "password", "message"),
    [
        ("not-an-address", "purr-purr-purr", "Enter one plain email address"),
        ("a@b.example, c@d.example", "purr-purr-purr", "Enter one plain email address"),
        ("Kitty <kitty@example.com>", "purr-purr-purr", "Enter one plain email address"),
        ("kitty@example.com\r\nBcc: x@example.com", "purr-purr-purr", "Enter one plain"),
        ("", "purr-purr-purr", "Enter your email address."),
        ("kitty@example.com", "short", "Use 8 to 128 characters."),
        ("kitty@example.com", "x" * 129, "Use 8 to 128 characters."),
    ],
)
def test_signup_refuses_bad_input(
    cat_client: CatLoaderClient, catloader: Flask, email: str, password: str, message: str
) -> None:
    response = cat_client.signup(email, password)
    assert response.status_code == 400
    assert message in html.unescape(response.get_data(as_text=True))
    with catloader.app_context():
        assert db.session.execute(sa.select(sa.func.count(User.id))).scalar_one() == 0
    assert cat_client.mailbox.messages() == []


def test_signup_twice_with_one_address(cat_client: CatLoaderClient) -> None:
    assert cat_client.signup("twin@example.com").status_code == 303
    cat_client.logout()
    again = cat_client.signup("TWIN@example.com")
    assert again.status_code == 400
    assert "already has a CatLoader account" in again.get_data(as_text=True)
    assert len(cat_client.mails_to("twin@example.com")) == 1


def test_forms_refuse_a_missing_csrf_token(cat_client: CatLoaderClient, catloader: Flask) -> None:
    response = cat_client.http.post(
        "/auth/signup", data={"email": "csrf@example.com", "password": "purr-purr-purr"}
    )
    assert response.status_code == 400
    assert "This form has expired" in response.get_data(as_text=True)
    with catloader.app_context():
        assert db.session.execute(sa.select(sa.func.count(User.id))).scalar_one() == 0


def test_login_logout(cat_client: CatLoaderClient) -> None:
    cat_client.signup("mimi@example.com")
    cat_client.logout()
    assert cat_client.http.get("/backoffice/uploads").status_code == 302

    wrong = cat_client.login("mimi@example.com", "wrong-password")
    unknown = cat_client.login("nobody@example.com")
    for response in (wrong, unknown):
        assert response.status_code == 400
        assert "Wrong email or password." in response.get_data(as_text=True)

    ok = cat_client.login("MIMI@example.com")
    assert ok.status_code == 303
    assert cat_client.http.get("/backoffice/uploads").status_code == 200
    assert cat_client.logout().status_code == 303
    assert cat_client.http.get("/backoffice/uploads").status_code == 302


@pytest.mark.parametrize(
    ("next_url", "expected"),
    [
        ("/auth/profile", "/auth/profile"),
        ("https://evil.example/", "/backoffice/uploads"),
        ("//evil.example/", "/backoffice/uploads"),
        ("/\\evil.example/", "/backoffice/uploads"),
    ],
)
def test_login_next_stays_on_site(
    cat_client: CatLoaderClient, next_url: str, expected: str
) -> None:
    cat_client.signup("next@example.com")
    cat_client.logout()
    response = cat_client.http.post(
        "/auth/login",
        query_string={"next": next_url},
        data={
            "csrf_token": cat_client.csrf(),
            "email": "next@example.com",
            "password": "purr-purr-purr",
        },
    )
    assert response.status_code == 303
    assert response.headers["Location"] == expected


def test_pages_carry_security_headers(cat_client: CatLoaderClient) -> None:
    for path in ("/", "/auth/signup", "/auth/login", "/nowhere"):
        response = cat_client.http.get(path)
        assert "script-src 'none'" in response.headers["Content-Security-Policy"]
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"
    assert cat_client.http.get("/nowhere").status_code == 404
