"""The CatLoader flow in headless Chromium (Debian's), driven by Playwright.

Each test serves CatLoader over real HTTP with ``thread`` delivery and saves a
screenshot of every step under ``test-artifacts/catloader/<test>/``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from example_catloader.extensions import db
from example_catloader.models import Picture, User
from tests.catloader.live_server import LiveServer, wait_for_mail
from tests.catloader.pictures import picture_bytes
from tests.catloader.web_client import CatLoaderClient
from tests.support.smtp_server import SMTPSink

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "catloader"
PASSWORD = "purr-purr-purr"
CONFIRMED = "Your email address is confirmed."
INVALID = "This confirmation link is not valid."
NOTICE_SUBJECT = "Your email address is being changed"


@pytest.fixture
def serve(make_catloader: Callable[..., Flask]) -> Iterator[Callable[..., LiveServer]]:
    """Start CatLoader on a free loopback port: ``serve(config)``; stopped after the test."""
    servers: list[LiveServer] = []

    def start(config: dict[str, Any] | None = None) -> LiveServer:
        def build(url: str) -> Flask:
            return make_catloader(
                {
                    "TESTING": False,
                    "CONFIRM_MAIL_DELIVERY": "thread",
                    "CONFIRM_MAIL_EXTERNAL_URL": url,
                    "CATLOADER_PASSWORD_HASH_METHOD": None,
                    **(config or {}),
                }
            )

        server = LiveServer(build)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
        assert server.errors == [], "the server raised while serving the test"


class Steps:
    """Screenshots of a test's steps, numbered in order."""

    def __init__(self, page: Any, name: str) -> None:
        self.page = page
        self.folder = ARTIFACTS / name
        self.count = 0
        if self.folder.exists():
            for old in self.folder.glob("*.png"):
                old.unlink()
        self.folder.mkdir(parents=True, exist_ok=True)

    def shot(self, step: str) -> None:
        self.count += 1
        self.page.screenshot(path=str(self.folder / f"{self.count:02d}-{step}.png"), full_page=True)


@pytest.fixture
def page(chromium: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    context = chromium.new_context(viewport={"width": 1100, "height": 800})
    context.set_default_timeout(15_000)
    tab = context.new_page()
    yield tab
    context.close()


@pytest.fixture
def steps(page: Any, request: pytest.FixtureRequest) -> Steps:
    return Steps(page, re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name))


def expect(locator: Any) -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def sign_up(page: Any, server: LiveServer, email: str) -> None:
    page.goto(server.url + "/")
    page.get_by_role("link", name="Create an account").click()
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.get_by_role("button", name="Sign up").click()
    expect(page).to_have_url(server.url + "/backoffice/uploads")


def row_of(app: Flask, email: str) -> User | None:
    with app.app_context():
        user = db.session.execute(
            sa.select(User).where(sa.or_(User.email == email, User.pending_email == email))
        ).scalar_one_or_none()
        if user is not None:
            db.session.expunge(user)
        return user


def pictures_of(app: Flask) -> list[str]:
    with app.app_context():
        return [p.original_name for p in db.session.execute(sa.select(Picture)).scalars()]


def press_confirm(page: Any, server: LiveServer, steps: Steps) -> None:
    """On the link's page, press the button; land on the uploads page, confirmed."""
    expect(page.get_by_role("heading", name="Confirm your email address")).to_be_visible()
    steps.shot("confirm-page")
    page.get_by_role("button", name="Confirm my email address").click()
    expect(page).to_have_url(server.url + "/backoffice/uploads")
    expect(page.locator(".flash--success")).to_have_text(CONFIRMED)


def test_signup_mailbox_confirm_upload(
    page: Any, steps: Steps, serve: Callable[..., LiveServer], tmp_path: Path
) -> None:
    server = serve()
    page.goto(server.url + "/")
    steps.shot("home")

    sign_up(page, server, "kitty@example.com")
    banner = page.locator("#confirm-banner")
    expect(banner).to_contain_text("Please confirm your email address.")
    expect(banner.get_by_role("button", name="Resend the link")).to_be_visible()
    steps.shot("signed-up-banner")

    wait_for_mail(CatLoaderClient(server.app).mailbox, 1)
    banner.get_by_role("link", name="Open the local mailbox").click()
    expect(page.locator("#mail-list")).to_contain_text("Confirm and access CatLoader")
    steps.shot("mailbox")
    page.locator(".mail-list__open").first.click()
    expect(page.locator("#mail-to")).to_have_text("kitty@example.com")
    frame = page.frame_locator("#mail-frame")
    expect(frame.get_by_text("Please confirm your email address for CatLoader")).to_be_visible()
    steps.shot("mail")

    # The link inside the rendered email opens the confirm page in the whole window.
    frame.get_by_role("link", name="Confirm my email address").click()
    expect(page).to_have_url(re.compile(re.escape(server.url) + r"/confirm/[\w.-]+$"))
    press_confirm(page, server, steps)
    expect(page.locator("#confirm-banner")).to_have_count(0)
    steps.shot("confirmed")
    user = row_of(server.app, "kitty@example.com")
    assert user is not None and user.email_confirmed

    cat = tmp_path / "whiskers.jpg"
    cat.write_bytes(picture_bytes("JPEG", (320, 240)))
    page.set_input_files("#picture", str(cat))
    page.get_by_role("button", name="Upload").click()
    expect(page.locator(".flash--success")).to_contain_text("whiskers.jpg is in your collection")
    picture = page.locator("#gallery img")
    expect(picture).to_have_count(1)
    expect(page.locator("#gallery")).to_contain_text("whiskers.jpg")
    # The picture is served and decodes: wait for the browser to finish loading it.
    page.wait_for_function(
        "img => img.complete && img.naturalWidth === 320", arg=picture.element_handle()
    )
    steps.shot("uploaded")
    assert pictures_of(server.app) == ["whiskers.jpg"]


def test_signup_confirm_with_a_real_smtp_server(
    page: Any, steps: Steps, serve: Callable[..., LiveServer], smtp_server: SMTPSink
) -> None:
    server = serve({"MAIL_SERVER": smtp_server.host, "MAIL_PORT": smtp_server.port})
    sign_up(page, server, "smtp-kitty@example.com")
    expect(page.locator("#confirm-banner")).to_contain_text("smtp-kitty@example.com")
    expect(page.get_by_role("link", name="Open the local mailbox")).to_have_count(0)
    steps.shot("signed-up")

    [mail] = smtp_server.wait_for(1)
    assert mail.rcpt_tos == ["smtp-kitty@example.com"]
    assert mail.message["Subject"] == "Confirm and access CatLoader"
    text = mail.message.get_body(("plain",)).get_content()
    [link] = [w for w in text.split() if w.startswith(server.url + "/confirm/")]

    page.goto(link)
    press_confirm(page, server, steps)
    steps.shot("confirmed")
    user = row_of(server.app, "smtp-kitty@example.com")
    assert user is not None and user.email_confirmed


def test_unconfirmed_user_cannot_upload(
    page: Any, steps: Steps, serve: Callable[..., LiveServer], tmp_path: Path
) -> None:
    server = serve()
    sign_up(page, server, "tom@example.com")
    expect(page.locator("#picture")).to_be_disabled()
    expect(page.locator("#upload-form")).to_contain_text("Confirm your email address to upload.")
    steps.shot("upload-disabled")

    # Even with the form switched back on, the server refuses.
    page.locator("#upload-form fieldset").evaluate("fieldset => fieldset.disabled = false")
    cat = tmp_path / "tom.png"
    cat.write_bytes(picture_bytes("PNG"))
    page.set_input_files("#picture", str(cat))
    page.get_by_role("button", name="Upload").click()
    expect(page.locator(".flash--warning")).to_have_text("Please confirm your email address first.")
    expect(page.locator("#gallery")).to_have_count(0)
    steps.shot("upload-refused")
    assert pictures_of(server.app) == []


def test_tampered_link_shows_the_problem(
    page: Any, steps: Steps, serve: Callable[..., LiveServer]
) -> None:
    server = serve({"CONFIRM_MAIL_RESEND_COOLDOWN": 0})  # else felix is told to wait
    sign_up(page, server, "felix@example.com")
    client = CatLoaderClient(server.app)
    [mail] = wait_for_mail(client.mailbox, 1)
    link = client.link_in(mail)
    tampered = link[:-3] + ("AAA" if not link.endswith("AAA") else "BBB")

    page.goto(tampered)
    expect(page.locator(".cm-error")).to_have_text(INVALID)
    steps.shot("tampered-link")
    page.fill("main #confirm-mail-email", "felix@example.com")
    page.get_by_role("button", name="Send a new link").click()
    expect(page.locator(".cm-notice")).to_contain_text("a new link is on its way")
    steps.shot("resend-requested")
    user = row_of(server.app, "felix@example.com")
    assert user is not None and not user.email_confirmed


def test_changing_the_email_reconfirms(
    page: Any, steps: Steps, serve: Callable[..., LiveServer]
) -> None:
    server = serve()
    client = CatLoaderClient(server.app)
    sign_up(page, server, "old@example.com")
    [first] = wait_for_mail(client.mailbox, 1)
    page.goto(client.link_in(first))
    press_confirm(page, server, steps)

    page.get_by_role("link", name="Profile").click()
    page.fill("#email", "new@example.com")
    page.get_by_role("button", name="Change email").click()
    expect(page.locator(".flash--success")).to_contain_text(
        "We sent a confirmation link to new@example.com"
    )
    expect(page.locator("#confirm-banner")).to_contain_text("Confirm your new address.")
    expect(page.locator("#pending-email")).to_contain_text("new@example.com")
    steps.shot("change-requested")

    # Two new mails: the link to the new address, the change notice to the old one.
    newest = wait_for_mail(client.mailbox, 3)[:2]
    assert sorted(m.recipients for m in newest) == [["new@example.com"], ["old@example.com"]]
    page.get_by_role("link", name="Mailbox", exact=True).click()
    page.locator(".mail-list__open", has_text=NOTICE_SUBJECT).click()
    expect(page.locator(".mail__subject")).to_have_text(NOTICE_SUBJECT)
    expect(page.locator("#mail-to")).to_have_text("old@example.com")
    expect(page.frame_locator("#mail-frame").locator("body")).to_contain_text("n***@e***.com")
    expect(page.locator("#mail-link")).to_contain_text("/confirm/cancel/")  # it confirms nothing
    steps.shot("change-notice")
    page.get_by_role("link", name="Mailbox", exact=True).click()
    page.locator(".mail-list__open", has_text="Confirm changed email/login").click()
    expect(page.locator(".mail__subject")).to_have_text("Confirm changed email/login")
    steps.shot("change-mail")
    page.frame_locator("#mail-frame").get_by_role("link", name="Confirm my new address").click()
    press_confirm(page, server, steps)
    steps.shot("new-address-confirmed")

    page.get_by_role("link", name="Profile").click()
    expect(page.locator("#current-email")).to_contain_text("new@example.com")
    expect(page.locator("#current-email .badge--ok")).to_have_text("confirmed")
    expect(page.locator("#pending-email")).to_have_count(0)
    steps.shot("profile")
    user = row_of(server.app, "new@example.com")
    assert user is not None and user.email == "new@example.com" and user.pending_email is None
