"""CatLoader's local mailbox can simulate a bounce, so the demo shows the whole path."""

from __future__ import annotations

from tests.bounces.conftest import mark_of
from tests.catloader.conftest import *  # noqa: F401,F403
from tests.catloader.web_client import CatLoaderClient, csrf_token_in


def test_the_mailbox_simulates_a_bounce_and_the_owner_is_told(
    cat_client: CatLoaderClient,
) -> None:
    client = cat_client
    client.signup("whiskers@example.org")
    [mail] = client.mailbox.messages()
    assert mail.message_id_header.startswith("<")
    page = client.page(f"/dev/mailbox/{mail.id}")
    assert 'id="mail-bounce"' in page
    response = client.http.post(
        f"/dev/mailbox/{mail.id}/bounce", data={"csrf_token": csrf_token_in(page)}
    )
    assert response.status_code == 303
    assert "now marked undeliverable" in client.page(f"/dev/mailbox/{mail.id}")
    mark = mark_of(client.app, "whiskers@example.org")
    assert mark is not None and mark.source == "mailbox"
    resend = client.page("/confirm/resend")
    assert "Mail to your address bounced" in resend
    assert 'href="/auth/profile"' in resend
    again = client.http.post(
        f"/dev/mailbox/{mail.id}/bounce", data={"csrf_token": csrf_token_in(page)}
    )
    assert again.status_code == 303
    assert "already applied" in client.page(f"/dev/mailbox/{mail.id}")


def test_an_unknown_mailbox_message_cannot_bounce(cat_client: CatLoaderClient) -> None:
    page = cat_client.page("/auth/signup")
    response = cat_client.http.post(
        "/dev/mailbox/20260101T000000000000-00000000/bounce",
        data={"csrf_token": csrf_token_in(page)},
    )
    assert response.status_code == 404
