"""Driving CatLoader through Flask's test client, the way a browser's forms would."""

from __future__ import annotations

import io
import re
from typing import Any
from urllib.parse import urlsplit

from flask import Flask
from werkzeug.test import TestResponse

from example_catloader.mailbox import Mailbox, StoredMail, first_link, mailbox_of
from flask_confirm_mail import link_base_url

PASSWORD = "purr-purr-purr"
_CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')


def csrf_token_in(html: str) -> str:
    match = _CSRF.search(html)
    assert match is not None, "no CSRF token in the page"
    return match.group(1)


class CatLoaderClient:
    """A test client with CatLoader's forms as methods; the CSRF token comes from a page."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.http = app.test_client()

    def csrf(self) -> str:
        page = self.http.get("/auth/login")
        if page.status_code == 303:  # logged in: the profile page has a form too
            page = self.http.get("/auth/profile")
        return csrf_token_in(page.get_data(as_text=True))

    def post_form(self, path: str, data: dict[str, Any], **kwargs: Any) -> TestResponse:
        return self.http.post(path, data={"csrf_token": self.csrf(), **data}, **kwargs)

    def signup(self, email: str, password: str = PASSWORD) -> TestResponse:
        return self.post_form("/auth/signup", {"email": email, "password": password})

    def login(self, email: str, password: str = PASSWORD) -> TestResponse:
        return self.post_form("/auth/login", {"email": email, "password": password})

    def logout(self) -> TestResponse:
        return self.http.get("/auth/logout")

    def upload(self, filename: str, content: bytes) -> TestResponse:
        return self.post_form(
            "/backoffice/upload",
            {"picture": (io.BytesIO(content), filename)},
            content_type="multipart/form-data",
        )

    def upload_raw(self, filename_parameter: str, content: bytes) -> TestResponse:
        """Upload with ``filename=<filename_parameter>`` written into the request as given.

        Werkzeug's test client quotes file names itself (a backslash would be read back
        as an escape); this writes the multipart body by hand, as any HTTP client can.
        """
        boundary = "catloader-boundary-7d1f"
        parts = [
            f'--{boundary}\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\n'
            f"{self.csrf()}\r\n".encode(),
            f'--{boundary}\r\nContent-Disposition: form-data; name="picture"; '
            f"filename={filename_parameter}\r\nContent-Type: image/png\r\n\r\n".encode(),
            content,
            f"\r\n--{boundary}--\r\n".encode(),
        ]
        return self.http.post(
            "/backoffice/upload",
            data=b"".join(parts),
            content_type=f"multipart/form-data; boundary={boundary}",
        )

    def change_email(self, email: str) -> TestResponse:
        return self.post_form("/auth/profile", {"email": email})

    def page(self, path: str, **kwargs: Any) -> str:
        response = self.http.get(path, **kwargs)
        assert response.status_code == 200, (path, response.status_code)
        return response.get_data(as_text=True)

    # --- mail ---------------------------------------------------------------------------

    @property
    def mailbox(self) -> Mailbox:
        mailbox = mailbox_of(self.app)
        assert mailbox is not None, "the local mailbox is off"
        return mailbox

    def mails_to(self, address: str) -> list[StoredMail]:
        return [m for m in self.mailbox.messages() if address in m.recipients]

    def link_in(self, mail: StoredMail) -> str:
        link = first_link(mail.text, link_base_url(self.app))
        assert link is not None, mail.text
        assert link in mail.html
        return link


def path_of(link: str) -> str:
    """The path of a link, for the test client."""
    return urlsplit(link).path
