"""Bounces and complaints, an optional part: addresses mail cannot reach are no longer mailed.

An app turns it on after ``ConfirmMail``::

    from flask_confirm_mail.bounces import Bounces

    confirm_mail = ConfirmMail(app, db=db, user_model=User)
    bounces = Bounces(confirm_mail, app)

It defines two tables on the app's ``db`` (the marks, and the events already applied with
the webhook tokens spent), marks an address when the SMTP server refuses it for good or a
provider's webhook reports a bounce or complaint, and tells the flow not to mail marked
addresses. The webhook routes (``<prefix>/webhooks/<provider>``) are mounted only when a
provider is configured (:class:`~flask_confirm_mail.bounces.webhooks.WebhookSettings`).
Without this part the core defines no bounce table and no webhook route.
"""

from __future__ import annotations

import click
from flask import Flask, current_app
from flask.cli import with_appcontext

from ..cli import cli_group
from ..confirmation import get_flow
from ..errors import AddressError
from ..extension import ConfirmMail
from .records import (
    BOUNCE,
    COMPLAINT,
    BounceMark,
    BounceRecords,
    bounce_models_for,
    install_bounces,
    printable,
    records_of,
)
from .webhooks import WebhookSettings, install_webhooks

__all__ = [
    "BOUNCE",
    "COMPLAINT",
    "BounceMark",
    "BounceRecords",
    "Bounces",
    "WebhookSettings",
    "records_of",
]


class Bounces:
    """The bounces part for the apps of one :class:`~flask_confirm_mail.ConfirmMail`.

    :param confirm_mail: the extension object; its ``db`` gets the two tables now, so
        ``db.create_all()`` and migrations see them.
    :param app: an app to initialize now (after ``confirm_mail.init_app(app)``).
    """

    def __init__(self, confirm_mail: ConfirmMail, app: Flask | None = None) -> None:
        self.confirm_mail = confirm_mail
        #: The marks model and the applied-events model.
        self.models = bounce_models_for(confirm_mail.db)
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Keep ``app``'s marks, refuse to mail marked addresses, mount the webhooks.

        :raises ConfigurationError: a webhook setting is unusable.
        """
        flow = get_flow(app)
        settings = WebhookSettings.load(app)
        records = install_bounces(app, flow.db, flow.outbox_table)
        flow.mail_blockers.append(records.find)
        if settings.any_provider:
            install_webhooks(app, flow.settings.url_prefix, settings, records)
        if "bounces" not in cli_group.commands:
            cli_group.add_command(bounces_command)


@click.command("bounces")
@with_appcontext
@click.option("--clear", "address", metavar="ADDRESS", help="Forget the mark of ADDRESS.")
def bounces_command(address: str | None) -> None:
    """List the addresses marked undeliverable, or clear one with --clear ADDRESS."""
    flow = get_flow()
    records = records_of(current_app)
    if records is None:
        raise click.ClickException("Bounces are not turned on for this app.")
    if address is not None:
        try:
            with flow.db.engine.begin() as conn:
                cleared = records.clear(conn, address)
        except AddressError as exc:
            raise click.BadParameter(str(exc), param_hint="--clear") from None
        if not cleared:
            raise click.ClickException("That address is not marked.")
        click.echo("Cleared; mail to that address may be sent again.")
        return
    with flow.db.engine.connect() as conn:
        marks = records.all(conn)
    if not marks:
        click.echo("No address is marked undeliverable.")
    for mark in marks:
        # Cleaned again whatever wrote the row: no escape sequence may reach the terminal.
        shown, kind, source = (printable(v) for v in (mark.address, mark.kind, mark.source))
        click.echo(
            f"{shown}: {kind} from {source}, {mark.marked_at:%Y-%m-%d %H:%M:%S} "
            f"UTC: {printable(mark.reason)}"
        )
