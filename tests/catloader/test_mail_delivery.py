"""Where CatLoader's mail goes: the local mailbox (and its page), an SMTP server, a worker."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask

from example_catloader import mailbox as mailbox_module
from example_catloader.mailbox_views import MESSAGE_PAGE_CSP
from tests.catloader.conftest import EXTERNAL_URL, TEST_CONFIG
from tests.catloader.web_client import CatLoaderClient, csrf_token_in, path_of
from tests.support.smtp_server import SMTPSink

REPO = Path(__file__).resolve().parents[2]
CONFIRMED = "Your email address is confirmed."


def test_mailbox_page_only_in_debug_or_when_enabled(make_catloader: Callable[..., Flask]) -> None:
    app = make_catloader({"CATLOADER_MAILBOX_PAGE": False})
    client = CatLoaderClient(app)
    client.signup("kitty@example.com")
    assert len(client.mailbox.messages()) == 1  # the mail is kept either way
    [message_id] = client.mailbox.ids()

    assert client.http.get("/dev/mailbox/").status_code == 404
    assert client.http.get(f"/dev/mailbox/{message_id}").status_code == 404
    home = client.page("/")
    assert "FLASK_CATLOADER_MAILBOX_PAGE=1" in home
    assert 'href="/dev/mailbox/"' not in home

    app.debug = True
    assert client.http.get("/dev/mailbox/").status_code == 200
    assert client.http.get(f"/dev/mailbox/{message_id}").status_code == 200


def test_smtp_server_instead_of_mailbox(
    make_catloader: Callable[..., Flask], smtp_server: SMTPSink
) -> None:
    app = make_catloader({"MAIL_SERVER": smtp_server.host, "MAIL_PORT": smtp_server.port})
    assert app.config["CATLOADER_MAILBOX"] is False
    client = CatLoaderClient(app)
    client.signup("smtp-cat@example.com")

    [mail] = smtp_server.wait_for(1)
    assert mail.rcpt_tos == ["smtp-cat@example.com"]
    assert mail.message["Subject"] == "Confirm and access CatLoader"
    assert mail.message["From"] == "CatLoader <noreply@catloader.localhost>"
    text = mail.message.get_body(("plain",)).get_content()
    [link] = [w for w in text.split() if w.startswith(f"{EXTERNAL_URL}/confirm/")]
    assert link in mail.message.get_body(("html",)).get_content()

    page = client.http.get(path_of(link))
    token = csrf_token_in(page.get_data(as_text=True))
    assert client.http.post(path_of(link), data={"csrf_token": token}).status_code == 303
    assert CONFIRMED in client.page("/backoffice/uploads")

    app.debug = True
    assert client.http.get("/dev/mailbox/").status_code == 404
    assert not Path(app.config["CATLOADER_MAILBOX_FOLDER"]).exists()


def test_message_page_frames_the_mail_safely(cat_client: CatLoaderClient) -> None:
    cat_client.signup("frame@example.com")
    [mail] = cat_client.mailbox.messages()
    response = cat_client.http.get(f"/dev/mailbox/{mail.id}")
    page = response.get_data(as_text=True)

    assert response.headers["Content-Security-Policy"] == MESSAGE_PAGE_CSP
    assert "frame-ancestors 'none'" in MESSAGE_PAGE_CSP and "script-src 'none'" in MESSAGE_PAGE_CSP
    frame = page[page.index('<iframe class="mail__frame"') :]
    frame = frame[: frame.index("</iframe>")]
    sandbox = frame.split('sandbox="', 1)[1].split('"', 1)[0].split()
    assert "allow-scripts" not in sandbox and "allow-same-origin" not in sandbox
    assert "allow-top-navigation-by-user-activation" in sandbox
    srcdoc = frame.split('srcdoc="', 1)[1].split('"', 1)[0]
    assert "<" not in srcdoc and "&lt;base target=&#34;_top&#34;&gt;" in srcdoc
    assert f'id="mail-link" href="{cat_client.link_in(mail)}"' in page


def test_mailbox_checks_message_ids(cat_client: CatLoaderClient) -> None:
    cat_client.signup("ids@example.com")
    for message_id in (
        "..%2Fsecret_key",
        "..%2F..%2Finstance%2Fsecret_key",
        "20260101T000000000000-deadbeef",
        "not-an-id",
        "%00",
    ):
        response = cat_client.http.get(f"/dev/mailbox/{message_id}")
        assert response.status_code == 404, message_id
        assert TEST_CONFIG["SECRET_KEY"] not in response.get_data(as_text=True)


def test_mailbox_survives_a_restart_and_can_be_emptied(
    make_catloader: Callable[..., Flask],
) -> None:
    first = CatLoaderClient(make_catloader())
    first.signup("persist@example.com")

    second = CatLoaderClient(make_catloader())
    [mail] = second.mailbox.messages()
    assert mail.recipients == ["persist@example.com"]
    assert mail.id in second.page("/dev/mailbox/")

    emptied = second.post_form("/dev/mailbox/clear", {})
    assert emptied.status_code == 303
    assert second.mailbox.messages() == []
    assert "No mail yet." in second.page("/dev/mailbox/")


def test_worker_process_delivers_to_the_shared_mailbox(
    make_catloader: Callable[..., Flask], instance: Path
) -> None:
    app = make_catloader({"CONFIRM_MAIL_DELIVERY": "worker"})
    client = CatLoaderClient(app)
    client.signup("worker@example.com")
    assert client.mailbox.messages() == []  # the web process sends nothing itself

    env = {k: v for k, v in os.environ.items() if not k.startswith("FLASK_")}
    env.update(
        FLASK_CATLOADER_INSTANCE_PATH=str(instance),
        FLASK_SECRET_KEY=TEST_CONFIG["SECRET_KEY"],
        FLASK_CONFIRM_MAIL_EXTERNAL_URL=EXTERNAL_URL,
        FLASK_CONFIRM_MAIL_DELIVERY="worker",
    )
    worker = subprocess.run(
        [
            sys.executable,
            "-m",
            "flask",
            "--app",
            "example_catloader",
            "confirm-mail",
            "worker",
            "--once",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert worker.returncode == 0, worker.stderr
    assert "1 sent" in worker.stderr

    [mail] = client.mailbox.messages()
    assert mail.recipients == ["worker@example.com"]
    link = client.link_in(mail)
    assert client.post_form(path_of(link), {}).status_code == 303
    assert CONFIRMED in client.page("/backoffice/uploads")


def test_mailbox_skips_unreadable_files_and_keeps_the_newest(
    cat_client: CatLoaderClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    cat_client.signup("kept@example.com")
    folder = cat_client.mailbox.folder
    (folder / "20000101T000000000000-00000000.json").write_text("{not json")
    (folder / "20000101T000000000001-00000000.json").write_text('{"subject": "no other keys"}')

    assert [m.recipients for m in cat_client.mailbox.messages()] == [["kept@example.com"]]
    assert cat_client.http.get("/dev/mailbox/").status_code == 200
    assert cat_client.http.get("/dev/mailbox/20000101T000000000000-00000000").status_code == 404

    monkeypatch.setattr(mailbox_module, "KEEP_MESSAGES", 3)
    for number in range(5):
        cat_client.mailbox.add(
            sender="a@example.com",
            recipients=[f"{number}@example.com"],
            subject="s",
            text="t",
            html="<p>h</p>",
        )
    assert [m.recipients[0] for m in cat_client.mailbox.messages()] == [
        "4@example.com",
        "3@example.com",
        "2@example.com",
    ]
