"""The ``flask confirm-mail`` commands."""

from __future__ import annotations

import json
import signal
from collections import defaultdict
from datetime import datetime, time, timedelta
from functools import partial
from typing import Any

import click
import sqlalchemy as sa
from flask import current_app
from flask.cli import AppGroup

from . import outbox, signals
from .addresses import canonical_or_none, normalize_address
from .confirmation import ConfirmationFlow, get_flow
from .delivery import POLL_INTERVAL, DeliveryLoop
from .errors import AddressError, ConfigurationError, DeliveryError
from .outbox import Purpose
from .reminders import SCAN_INTERVAL, queue_reminders, remind_when_due
from .settings import parse_age
from .transport import ConfirmationEmail, load_email_templates

cli_group = AppGroup("confirm-mail", help="Email confirmation: send links, confirm, run delivery.")
_TIME = "%Y-%m-%d %H:%M:%S"
_WITHIN = {"confirmed_1h": timedelta(hours=1), "confirmed_24h": timedelta(days=1),
           "confirmed_7d": timedelta(days=7)}  # fmt: skip
_FUNNEL = ("signed_up", "delivered", "bounced", *_WITHIN, "never_confirmed")


def _user_by_address(email: str) -> tuple[ConfirmationFlow, Any, Purpose]:
    try:
        address = normalize_address(email)
    except AddressError as exc:
        raise click.BadParameter(str(exc), param_hint="EMAIL") from None
    flow = get_flow()
    user, which = flow.columns.find(flow.db.session, address)
    if user is None or which is None:
        raise click.ClickException("No user has that address.")
    return flow, user, which


def _settle(yes: bool, session: Any, done: str, would: str) -> None:
    """With --yes, commit and say ``done``; else roll back and say ``would``."""
    (session.commit if yes else session.rollback)()
    click.echo(done if yes else f"{would}; run again with --yes.")


@cli_group.command("send")
@click.argument("email")
def send_command(email: str) -> None:
    """Send (or send again) the confirmation email for EMAIL."""
    flow, user, which = _user_by_address(email)
    if which == Purpose.SIGNUP and flow.columns.is_confirmed(user):
        raise click.ClickException("That address is already confirmed.")
    row = flow.enqueue(user, which)
    flow.db.session.commit()  # in sync and thread modes, delivers before it returns
    flow.db.session.refresh(row)
    click.echo(f"Confirmation email {row.id} for {row.recipient}: {row.status}.")


@cli_group.command("confirm")
@click.argument("email", required=False)
@click.option("--all-existing", is_flag=True, help="Every unconfirmed user it never mailed.")
@click.option("--yes", is_flag=True, help="Confirm them; without it, only list them.")
def confirm_command(email: str | None, all_existing: bool, yes: bool) -> None:
    """Mark EMAIL confirmed by hand; or, with --all-existing, each unconfirmed user without a row
    in the extension's tables (older accounts; its sign-ups must confirm). Dry run unless --yes."""
    if (email is None) == (not all_existing):
        raise click.UsageError("Give one EMAIL or --all-existing.")
    if email is not None:
        flow, user, _ = _user_by_address(email)
        changed = flow.confirm_user(user)
        flow.db.session.commit()
        return click.echo("Confirmed." if changed else "Already confirmed.")
    flow = get_flow()
    columns, session, t, s = flow.columns, flow.db.session, flow.outbox_table, flow.state_table
    known = set(session.scalars(sa.union(sa.select(t.c.user_id), sa.select(s.c.user_id))))
    users = session.scalars(sa.select(columns.model).where(columns.unconfirmed())).all()
    existing = [user for user in users if columns.id_of(user) not in known]
    for user in existing:
        click.echo(f"{'Confirming' if yes else 'Would confirm'} user {columns.id_of(user)}")
        setattr(user, columns.confirmed_attribute, columns.confirmed_value(outbox.utcnow()))
    n = len(existing)
    _settle(yes, session, f"Confirmed {n} existing user(s).", f"{n} user(s) would be confirmed")


@cli_group.command("status")
@click.argument("email")
def status_command(email: str) -> None:
    """Show whether EMAIL is confirmed and its latest emails."""
    flow, user, which = _user_by_address(email)
    columns, user_id = flow.columns, flow.columns.id_of(user)
    if which == Purpose.CHANGE:
        click.echo(f"Pending change to this address for user {user_id}: unconfirmed.")
    else:
        state = "confirmed" if columns.is_confirmed(user) else "unconfirmed"
        click.echo(f"User {user_id}: {state}.")
        if pending := columns.pending_of(user):
            click.echo(f"Pending change to {pending}: unconfirmed.")
    model = flow.outbox_model
    latest = sa.select(model).where(model.user_id == user_id).order_by(model.id.desc()).limit(5)
    for row in flow.db.session.scalars(latest):
        sent = f", sent {row.sent_at:{_TIME}}" if row.sent_at else ""
        error = f", last error: {row.last_error}" if row.last_error else ""
        click.echo(
            f"  email {row.id} to {row.recipient} ({row.purpose}): {row.status}, "
            f"{row.attempts} attempt(s){sent}{error}"
        )


@cli_group.command("worker")
@click.option("--once", is_flag=True, help="Deliver what is due, then exit.")
@click.option(
    "--poll-interval", default=POLL_INTERVAL, show_default=True, help="Seconds between idle polls."
)
@click.option(
    "--remind-every",
    type=float,
    default=SCAN_INTERVAL,
    show_default=True,
    help="Seconds between looks for due reminders (with CONFIRM_MAIL_REMINDERS).",
)
def worker_command(once: bool, poll_interval: float, remind_every: float) -> None:
    """Deliver outbox messages until stopped, and queue the CONFIRM_MAIL_REMINDERS due.
    SIGTERM or Ctrl-C let the emails on the wire finish and give the rest back at once."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    flow = get_flow()
    remind = partial(remind_when_due, flow, remind_every)
    loop = DeliveryLoop(app, flow.deliverer, poll_interval=poll_interval, before_poll=remind)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: loop.stop())
    try:
        load_email_templates(app)
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"confirm-mail worker {loop.worker_id} started.", err=True)
    total = loop.run(until_idle=once)
    click.echo(
        f"confirm-mail worker {loop.worker_id} stopped: {total.sent} sent, "
        f"{total.retried} to retry, {total.dead} dead, {total.given_back} given back.",
        err=True,
    )


@cli_group.command("check")
@click.option(
    "--to", metavar="EMAIL",
    help="Also send EMAIL a sign-up email (its link works for nobody), built as users' are.",
)  # fmt: skip
def check_command(to: str | None) -> None:
    """Try the delivery connection now (SMTP: connect, TLS, login, NOOP); warn when worker
    mode has emails waiting over a minute that no worker took."""
    flow = get_flow()
    transport, settings = flow.transport, flow.settings
    try:
        reached = transport.check()
        if to is not None:
            recipient = normalize_address(to)
            transport.send(ConfirmationEmail(
                outbox_id=0, user_id="0", recipient=recipient, purpose=Purpose.SIGNUP.value,
                message_id=outbox.new_message_id(settings.host), link_prefix=settings.link_prefix,
                link_token="check", expires_at=None, lifetime=settings.lifetime,
            ))  # fmt: skip
    except (DeliveryError, AddressError) as exc:
        raise click.ClickException(f"Delivery check failed: {exc}") from None
    finally:
        transport.close()
    click.echo(reached or f"{type(transport).__name__} has no connection to check.")
    if to is not None:
        click.echo(f"Sent a test email to {recipient}.")
    if settings.delivery == "worker":
        with flow.db.engine.connect() as conn:
            waiting = outbox.waiting_unclaimed(conn, flow.outbox_table, timedelta(minutes=1))
        if waiting:
            raise click.ClickException(
                f"{waiting} email(s) have waited over a minute and no worker took them: "
                "is `flask confirm-mail worker` running?"
            )


@cli_group.command("outbox")
def outbox_command() -> None:
    """Count messages per status, show the last delivery error, and list the dead ones:
    ``refused`` (the server said no for good), ``outcome unknown`` (the connection broke after
    sending: it may have arrived) or ``undelivered``."""
    flow = get_flow()
    with flow.db.engine.connect() as conn:
        counts = outbox.status_counts(conn, flow.outbox_table)
        last = outbox.last_failure(conn, flow.outbox_table)
        dead = outbox.dead_messages(conn, flow.outbox_table)
    for status, count in counts.items():
        click.echo(f"{status:8} {count}")
    if last is not None:
        click.echo(
            f"last error: {last.last_error} (email {last.id} to {last.recipient}, "
            f"{last.failed_at:{_TIME}} UTC, now {last.status})"
        )
    for row in dead:
        unknown = f", {row.unknown_outcomes} with outcome unknown" if row.unknown_outcomes else ""
        click.echo(
            f"dead {row.id}: to {row.recipient} ({row.purpose}), {outbox.dead_verdict(row)}, "
            f"{row.attempts} attempt(s){unknown}, last error: {row.last_error or '-'}"
        )


@cli_group.command("stats")
@click.option("--days", type=click.IntRange(min=1), default=14, show_default=True,
              help="How many days of sign-ups, today (UTC) included.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="A JSON list, one object per day.")
def stats_command(days: int, as_json: bool) -> None:
    """Per UTC day of sign-up (through the sign-up views), the accounts that signed up, whose
    sign-up email was delivered, whose sign-up email bounced (dead after the receiving server
    refused it; bounces reported later, to the bounces part, are not counted), that confirmed
    within 1 h, 24 h and 7 d of signing up (each count includes the shorter ones; ``-`` for a
    boolean confirmation column, which keeps no time) and that are not confirmed (yet)."""
    flow = get_flow()
    columns, session = flow.columns, flow.db.session
    since = datetime.combine(outbox.utcnow().date() - timedelta(days=days - 1), time())
    signups = outbox.signups_since(session.connection(), flow.outbox_table, flow.state_table, since)
    confirmed = columns.confirmed_values(session, [row.user_id for row in signups])
    timed = not columns.confirmed_is_boolean
    blank = {key: None if key in _WITHIN and not timed else 0 for key in _FUNNEL}
    per_day: dict[str, dict[str, Any]] = {}
    for row in signups:
        at = confirmed.get(row.user_id)
        day = per_day.setdefault(row.signed_up_at.date().isoformat(), dict(blank))
        counts = {"signed_up": True, "delivered": row.delivered, "bounced": row.refused,
                  "never_confirmed": at in (None, False)}  # fmt: skip
        if timed and at is not None:
            counts.update({key: at - row.signed_up_at <= span for key, span in _WITHIN.items()})
        for key, value in counts.items():
            day[key] += int(bool(value))
    rows = [{"date": date, **counts} for date, counts in sorted(per_day.items())]
    if as_json:
        return click.echo(json.dumps(rows, indent=2))
    total = {key: None if blank[key] is None else sum(r[key] for r in rows) for key in _FUNNEL}
    labels = ("signed up", "delivered", "bounced", "in 1 h", "in 24 h", "in 7 d", "unconfirmed")
    click.echo("date (UTC) " + " ".join(f"{label:>11}" for label in labels))
    for row in [*rows, {"date": "total", **total}]:
        cells = ("-" if row[key] is None else row[key] for key in _FUNNEL)
        click.echo(f"{row['date']:10} " + " ".join(f"{cell:>11}" for cell in cells))


@cli_group.command("retry")
@click.argument("message_id", type=int, required=False)
@click.option("--all", "all_dead", is_flag=True, help="Requeue every dead message.")
def retry_command(message_id: int | None, all_dead: bool) -> None:
    """Requeue the dead message MESSAGE_ID, or all of them with --all; never one to an
    address marked undeliverable (a bounce or complaint: clear the mark first)."""
    if (message_id is None) == (not all_dead):
        raise click.UsageError("Give one MESSAGE_ID or --all.")
    flow = get_flow()
    with flow.db.engine.connect() as conn:
        dead = outbox.dead_recipients(conn, flow.outbox_table)
    marked = {address for address in dead if flow.blocked(address) is not None}
    flow.db.session.rollback()
    with flow.db.engine.begin() as conn:
        count = outbox.requeue_dead(conn, flow.outbox_table, message_id, skip=marked)
    if message_id is not None and not count:
        msg = f"No dead message has the id {message_id} (or its address is marked)."
        raise click.ClickException(msg)
    left_out = f"; {len(marked)} marked address(es) left out" if marked else ""
    click.echo(f"Requeued {count} message(s){left_out}.")


@cli_group.command("prune")
@click.option("--older-than", required=True, help="Age of the sign-up, e.g. 14d.")
@click.option("--yes", is_flag=True, help="Delete them; without it, only list them.")
def prune_command(older_than: str, yes: bool) -> None:
    """Delete accounts that signed up more than --older-than ago and never confirmed (address
    unconfirmed, no change asked), each after the ``unconfirmed_account_pruned`` signal, on
    which apps delete what hangs off the user. A dry run unless --yes."""
    try:
        cutoff = outbox.utcnow() - parse_age(older_than)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--older-than") from None
    flow = get_flow()
    columns, session = flow.columns, flow.db.session
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    conn, tables = session.connection(), (flow.outbox_table, flow.state_table)
    candidates = outbox.signed_up_before(conn, *tables, cutoff)
    users = [session.get(columns.model, columns.parse_id(uid)) for uid in candidates]
    doomed = [user for user in users if user is not None and not columns.is_confirmed(user)]
    n = 0
    for user in doomed:
        if yes:  # each re-read under a row lock: it may have confirmed since
            session.refresh(user, with_for_update=True)
            if columns.is_confirmed(user):
                continue
        user_id, email = columns.id_of(user), columns.email_of(user)
        click.echo(f"{'Deleting' if yes else 'Would delete'} user {user_id} <{email}>")
        n += 1
        if yes:
            signals.unconfirmed_account_pruned.send(app, user=user, email=email)
            outbox.delete_for_user(session.connection(), *tables, user_id)
            session.delete(user)
    _settle(
        yes, session, f"Deleted {n} never-confirmed account(s).", f"{n} account(s) would be deleted"
    )


@cli_group.command("remind")
@click.option("--yes", is_flag=True, help="Queue and send them; without it, only list them.")
def remind_command(yes: bool) -> None:
    """Send the CONFIRM_MAIL_REMINDERS due now to sign-ups that never confirmed, each once per
    account however often this runs (from cron, say) and beside any worker. A dry run unless
    --yes."""
    flow = get_flow()
    if not flow.settings.reminders:
        raise click.ClickException("No reminders are configured (CONFIRM_MAIL_REMINDERS).")
    due = queue_reminders(flow, dry_run=not yes)  # with --yes, delivered before it returns
    for reminder in due:
        label = f"user {reminder.user_id} <{reminder.email}> (reminder {reminder.number})"
        click.echo(f"{'Reminded' if yes else 'Would remind'} {label}")
    _settle(yes, flow.db.session, f"Queued {len(due)} reminder(s).", f"{len(due)} reminder(s) due")


@cli_group.command("canonicalize")
@click.option("--yes", is_flag=True, help="Rewrite them; without it, only list them.")
def canonicalize_command(yes: bool) -> None:
    """Rewrite addresses stored as typed in the canonical form that lookups compare
    (``Cat@Example.ORG`` is ``cat@example.org``). Accounts that share one canonical address
    are listed and left as they are, for a person to decide. A dry run unless --yes."""
    flow = get_flow()
    columns, session = flow.columns, flow.db.session
    addresses = [c for c in (columns.email_column, columns.pending_column) if c is not None]
    rows = session.connection().execute(sa.select(columns.id_column, *addresses)).all()
    holders: defaultdict[tuple[int, str | None], list[Any]] = defaultdict(list)
    for row in rows:
        for slot, value in enumerate(row[1:]):
            holders[slot, canonical_or_none(value)].append(row[0])
    changed = shared = 0
    for user_id, *values in rows:
        updates: dict[Any, str] = {}
        for slot, (column, value) in enumerate(zip(addresses, values, strict=True)):
            canonical = canonical_or_none(value)
            if canonical is None or canonical == value:
                continue
            if others := ", ".join(str(i) for i in holders[slot, canonical] if i != user_id):
                shared += 1
                click.echo(f"Left as is: user {user_id} {column.key}, shared with user(s) {others}")
                continue
            updates[column] = canonical
        if updates:
            changed += 1
            click.echo(f"{'Rewriting' if yes else 'Would rewrite'} user {user_id}")
            if yes:
                rewrite = sa.update(columns.model.__table__).values(updates)
                session.connection().execute(rewrite.where(columns.id_column == user_id))
    left = f"{shared} address(es) left as is"
    would = f"{changed} account(s) would be rewritten; {left}"
    _settle(yes, session, f"Rewrote {changed} account(s); {left}.", would)
