"""CatLoader shows issue 16's mails and pages: the change notice, reminders, the cooldown."""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa
from flask import Flask

from tests.catloader.test_flow import CONFIRMED, confirm
from tests.catloader.web_client import CatLoaderClient

NOTICE_SUBJECT = "Your email address is being changed"
REMINDER_SUBJECT = "Reminder: confirm your email address"


def _mailbox_entry(client: CatLoaderClient, subject: str) -> str:
    """The mailbox page of the one mail with ``subject``, found from the listing."""
    listing = client.page("/dev/mailbox/")
    [mail] = [m for m in client.mailbox.messages() if m.subject == subject]
    assert f"/dev/mailbox/{mail.id}" in listing and subject in listing
    return client.page(f"/dev/mailbox/{mail.id}")


def test_the_old_address_gets_the_change_notice_in_the_mailbox(
    cat_client: CatLoaderClient, clock: Any
) -> None:
    cat_client.signup("old@example.com")
    confirm(cat_client, cat_client.link_in(cat_client.mails_to("old@example.com")[0]))
    clock.shift(61)  # the old address was mailed a minute ago: past the resend cooldown
    assert cat_client.change_email("whiskers@example.net").status_code == 303

    [notice] = [m for m in cat_client.mails_to("old@example.com") if m.subject == NOTICE_SUBJECT]
    assert "w***@e***.net" in notice.text and "whiskers" not in notice.text
    [link] = re.findall(r"https?://\S+", notice.text)
    assert "/confirm/cancel/" in link, "the notice's one link cancels; it confirms nothing"
    shown = _mailbox_entry(cat_client, NOTICE_SUBJECT)
    assert 'id="mail-to">old@example.com<' in shown
    assert 'id="mail-link" href="http://catloader.test/confirm/cancel/' in shown
    assert "w***@e***.net" in shown


def test_a_reminder_reaches_the_mailbox_and_its_link_confirms(
    catloader: Flask, cat_client: CatLoaderClient, clock: Any
) -> None:
    cat_client.signup("napping@example.com")
    runner = catloader.test_cli_runner()
    assert "0 reminder(s) due" in runner.invoke(args=["confirm-mail", "remind"]).output
    clock.shift(121)  # CatLoader's first demo reminder comes after 2 minutes
    sent = runner.invoke(args=["confirm-mail", "remind", "--yes"])
    assert sent.exit_code == 0 and "Queued 1 reminder(s)." in sent.output, sent.output

    shown = _mailbox_entry(cat_client, REMINDER_SUBJECT)
    assert 'id="mail-link"' in shown
    [reminder] = [m for m in cat_client.mails_to("napping@example.com")
                  if m.subject == REMINDER_SUBJECT]  # fmt: skip
    assert CONFIRMED in confirm(cat_client, cat_client.link_in(reminder))


def test_the_resend_page_tells_the_owner_how_long_to_wait(
    cat_client: CatLoaderClient, clock: Any
) -> None:
    cat_client.signup("luna@example.com")
    clock.shift(20)
    truth = "A link was sent 20 s ago; you can ask for another one in 40 s."
    assert truth in cat_client.page("/confirm/resend")

    uploads = cat_client.page("/backoffice/uploads")
    banner = re.search(r'<section class="banner".*?</section>', uploads, re.S)
    assert banner is not None and "Resend the link" in banner.group(0)
    pressed = cat_client.post_form("/confirm/resend", {"email": "luna@example.com"})
    assert pressed.status_code == 429 and pressed.headers["Retry-After"] == "40"
    answer = pressed.get_data(as_text=True)
    assert truth in answer and 'class="topbar"' in answer  # in CatLoader's layout
    assert len(cat_client.mails_to("luna@example.com")) == 1


def test_a_pruned_accounts_id_is_never_given_to_a_newcomer(
    catloader: Flask, cat_client: CatLoaderClient, clock: Any
) -> None:
    cat_client.signup("gone@example.com")
    clock.shift(15 * 86400)
    pruned = catloader.test_cli_runner().invoke(
        args=["confirm-mail", "prune", "--older-than", "14d", "--yes"]
    )
    assert "Deleted 1 never-confirmed account(s)." in pruned.output
    CatLoaderClient(catloader).signup("new@example.com")
    with catloader.app_context():
        from example_catloader.models import User, db

        ids = [user.id for user in db.session.scalars(sa.select(User))]
    assert ids == [2], "the newest account gets a new id, never the pruned one's"
    profile = cat_client.http.get("/auth/profile")  # the pruned account's session cookie
    assert "new@example.com" not in profile.get_data(as_text=True)
