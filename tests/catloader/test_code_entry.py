"""CatLoader's "enter the code instead", in headless Chromium: the code from the mailbox
page confirms, on the same device or on another one without a session."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from tests.catloader import test_browser as browser
from tests.catloader.live_server import LiveServer, wait_for_mail
from tests.catloader.test_browser import CONFIRMED, Steps, expect, row_of, sign_up
from tests.catloader.web_client import CatLoaderClient

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# The live server, the tab and the screenshots of tests/catloader/test_browser.py (the
# browser itself, one per process, is conftest.py's ``chromium``).
serve, page, steps = browser.serve, browser.page, browser.steps


def read_code_in_mailbox(page: Any, steps: Steps, server: LiveServer) -> str:
    """Open the newest mail on the local mailbox page and read the code it shows."""
    wait_for_mail(CatLoaderClient(server.app).mailbox, 1)
    page.goto(server.url + "/dev/mailbox/")
    page.locator(".mail-list__open").first.click()
    code = str(page.locator("#mail-code").inner_text())
    assert re.fullmatch(r"[0-9]{6}", code)
    expect(page.frame_locator("#mail-frame").get_by_text(code, exact=True)).to_be_visible()
    steps.shot("mail-with-code")
    return code


def enter_code(tab: Any, email: str, code: str) -> None:
    expect(tab.get_by_role("heading", name="Enter your confirmation code")).to_be_visible()
    tab.fill("#confirm-mail-code-email", email)
    tab.fill("#confirm-mail-code", code)
    tab.get_by_role("button", name="Confirm my email address").click()


def test_sign_up_read_the_code_in_the_mailbox_enter_it_confirmed(
    page: Any, steps: Steps, serve: Callable[..., LiveServer]
) -> None:
    server = serve()
    sign_up(page, server, "code-kitty@example.com")
    banner = page.locator("#confirm-banner")
    expect(banner.get_by_role("link", name="Enter the code instead")).to_be_visible()
    steps.shot("signed-up-banner")
    code = read_code_in_mailbox(page, steps, server)

    page.goto(server.url + "/backoffice/uploads")
    page.get_by_role("link", name="Enter the code instead").click()
    enter_code(page, "code-kitty@example.com", code)
    expect(page).to_have_url(server.url + "/backoffice/uploads")
    expect(page.locator(".flash--success")).to_have_text(CONFIRMED)
    expect(page.locator("#confirm-banner")).to_have_count(0)
    expect(page.locator("#picture")).to_be_enabled()
    steps.shot("confirmed")
    user = row_of(server.app, "code-kitty@example.com")
    assert user is not None and user.email_confirmed

    # The code used, the link in the same email only says "already confirmed".
    client = CatLoaderClient(server.app)
    link = client.link_in(wait_for_mail(client.mailbox, 1)[0])
    page.goto(link)
    expect(page.get_by_role("heading", name="Already confirmed")).to_be_visible()
    steps.shot("link-after-code")


def test_the_code_works_on_another_device_and_a_wrong_one_offers_a_new_email(
    chromium: Any, page: Any, steps: Steps, serve: Callable[..., LiveServer]
) -> None:
    server = serve()
    sign_up(page, server, "phone-kitty@example.com")
    code = read_code_in_mailbox(page, steps, server)

    # From the resend page (as a visitor on another device would find it), to the code page.
    device = chromium.new_context(viewport={"width": 420, "height": 800})
    device.set_default_timeout(15_000)
    try:
        tab = device.new_page()
        device_steps = Steps(tab, steps.folder.name + "-device")
        tab.goto(server.url + "/confirm/resend")
        tab.get_by_role("link", name="Have the code from the email? Enter it instead.").click()
        wrong = "000000" if code != "000000" else "111111"
        enter_code(tab, "phone-kitty@example.com", wrong)
        expect(tab.locator(".cm-error")).to_contain_text("does not confirm that address")
        expect(tab.get_by_role("link", name="Send me a new email")).to_be_visible()
        device_steps.shot("wrong-code")
        enter_code(tab, "phone-kitty@example.com", code)
        expect(tab.locator(".flash--success")).to_have_text(CONFIRMED)
        device_steps.shot("confirmed-on-device")
    finally:
        device.close()
    user = row_of(server.app, "phone-kitty@example.com")
    assert user is not None and user.email_confirmed
    page.reload()
    expect(page.locator("#confirm-banner")).to_have_count(0)
    steps.shot("first-device-confirmed")
