"""The local mailbox page, ``/dev/mailbox`` (``bl_mailbox``).

Shown only when mail stays local (no SMTP server configured) and the app runs in debug
mode or ``CATLOADER_MAILBOX_PAGE`` is on: it lists every user's confirmation links, so
it is a development tool, never for a public site.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for

from flask_confirm_mail import link_base_url
from flask_confirm_mail.bounces import BOUNCE, records_of

from .mailbox import Mailbox, first_code, first_link, mailbox_of

bp = Blueprint("bl_mailbox", __name__, url_prefix="/dev/mailbox")

_HEAD_TAG = re.compile(r"<head(?:\s[^>]*)?>", re.IGNORECASE)
#: Links in the mail open in the whole window (the confirm page refuses to be framed).
_BASE_TAG = '<base target="_top">'
#: The mail's own inline styles may apply, inside the sandboxed frame only.
MESSAGE_PAGE_CSP = (
    "default-src 'self'; script-src 'none'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; object-src 'none'; frame-ancestors 'none'; form-action 'self'"
)


def mailbox_page_enabled() -> bool:
    app = current_app
    return mailbox_of(app) is not None and bool(app.debug or app.config["CATLOADER_MAILBOX_PAGE"])


def current_mailbox() -> Mailbox:
    mailbox = mailbox_of(current_app)
    if mailbox is None or not mailbox_page_enabled():
        abort(404)
    return mailbox


def link_prefix() -> str:
    prefix = link_base_url()
    return prefix


def framed_html(html: str) -> str:
    """The mail's HTML with a ``<base target="_top">``, for the ``srcdoc`` of a frame."""
    match = _HEAD_TAG.search(html)
    if match is None:
        return _BASE_TAG + html
    return html[: match.end()] + _BASE_TAG + html[match.end() :]


def other_origin(link: str | None) -> str | None:
    """The link's origin when it differs from the one the page is browsed on."""
    if link is None:
        return None
    parts = urlsplit(link)
    origin = f"{parts.scheme}://{parts.netloc}"
    return origin if origin != request.host_url.rstrip("/") else None


@bp.app_context_processor
def mailbox_context() -> dict[str, Any]:
    return {"mailbox_page_enabled": mailbox_page_enabled}


@bp.get("/")
def index() -> Any:
    mailbox = current_mailbox()
    prefix = link_prefix()
    entries = [(mail, first_link(mail.text, prefix)) for mail in mailbox.messages()]
    return render_template("mailbox/index.html", entries=entries)


@bp.get("/<message_id>")
def message(message_id: str) -> Any:
    mail = current_mailbox().get(message_id)
    if mail is None:
        abort(404)
    link = first_link(mail.text, link_prefix())
    page = render_template(
        "mailbox/message.html",
        mail=mail,
        link=link,
        code=first_code(mail.text),
        other_origin=other_origin(link),
        srcdoc=framed_html(mail.html),
    )
    return page, 200, {"Content-Security-Policy": MESSAGE_PAGE_CSP}


@bp.post("/clear")
def clear() -> Any:
    current_mailbox().clear()
    return redirect(url_for("bl_mailbox.index"), 303)


@bp.post("/<message_id>/bounce")
def simulate_bounce(message_id: str) -> Any:
    """Feed a permanent bounce of this message to the extension, as a provider would."""
    mail = current_mailbox().get(message_id)
    records = records_of(current_app)
    if mail is None or not mail.message_id_header or records is None:
        abort(404)
    outcome = records.apply(
        current_app._get_current_object(),  # type: ignore[attr-defined]
        message_id=mail.message_id_header,
        kind=BOUNCE,
        reason="550 5.1.1 No such user (simulated in the local mailbox)",
        source="mailbox",
    )
    notices = {
        "applied": "Bounce simulated: the address is now marked undeliverable.",
        "duplicate": "This message's bounce was already applied.",
        "unknown": "The outbox has no message with this Message-ID.",
    }
    flash(notices[outcome], "info")
    return redirect(url_for("bl_mailbox.message", message_id=message_id), 303)
