"""The caller's transaction: in a sign-up view each new user gets an outbox row in the same
flush (a rollback drops both), and the rows a commit saved go to the delivery mode."""

from __future__ import annotations

import logging
from typing import Any

from flask import Response, current_app, g, has_app_context, has_request_context
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import event
from sqlalchemy.orm import Session

from . import outbox
from .confirmation import EXTENSION_KEY, ConfirmationFlow, get_flow
from .outbox import Purpose

logger = logging.getLogger("flask_confirm_mail")

_SYNC_QUEUE = "_confirm_mail_sync_ids"
#: Set on ``g`` while a resend runs after its response: ``thread`` mode still wakes the sender.
AFTER_RESPONSE = "_confirm_mail_after_response"
_NEW_USERS = "confirm_mail_new_users"
_QUEUED = "confirm_mail_queued_ids"
_SIGNUP_DEPTH = "_confirm_mail_signup_depth"
#: Set on ``g`` once the request's session committed: a later fault saved something.
COMMITTED = "_confirm_mail_committed"


def listen_to_session(db: SQLAlchemy) -> None:
    """Put this module's hooks on ``db.session`` (once per ``db``)."""
    if not event.contains(db.session, "after_commit", _after_commit):
        hooks = _before_flush, _after_flush, _after_flush_postexec, _after_commit, _after_rollback
        for hook in hooks:
            event.listen(db.session, hook.__name__[1:], hook)  # e.g. "after_commit"


def begin_signup() -> None:
    """From now on in this request, new users get a confirmation email."""
    setattr(g, _SIGNUP_DEPTH, g.get(_SIGNUP_DEPTH, 0) + 1)


def end_signup() -> None:
    setattr(g, _SIGNUP_DEPTH, max(g.get(_SIGNUP_DEPTH, 0) - 1, 0))


def _flow_of(session: Session) -> ConfirmationFlow | None:
    """The current app's flow, if ``session`` is the session of its ``db``."""
    if not has_app_context():
        return None
    flow: ConfirmationFlow | None = current_app.extensions.get(EXTENSION_KEY)
    registry = flow.db.session.registry if flow is not None else None
    return flow if registry is not None and registry.has() and registry() is session else None


def _before_flush(session: Session, flush_context: Any, instances: Any) -> None:
    """Store users' addresses in canonical form (one mailbox, one account); in a sign-up,
    refuse invalid ones."""
    flow = _flow_of(session)
    if flow is not None:
        new, signup = session.new, bool(g.get(_SIGNUP_DEPTH, 0))
        for obj in (*new, *session.dirty):
            if isinstance(obj, flow.columns.model):
                flow.columns.canonicalize(obj, strict=signup and obj in new)


def _after_flush(session: Session, flush_context: Any) -> None:
    flow = _flow_of(session)
    if flow is None:
        return
    new, signup = session.new, bool(g.get(_SIGNUP_DEPTH, 0))
    for obj in (*new, *session.dirty):
        if isinstance(obj, flow.columns.model):
            flow.columns.void_claims_of(session, obj)
            if signup and obj in new:
                session.info.setdefault(_NEW_USERS, []).append(obj)
        elif isinstance(obj, flow.outbox_model) and obj in new:
            session.info.setdefault(_QUEUED, []).append(obj.id)


def _after_flush_postexec(session: Session, flush_context: Any) -> None:
    users = session.info.pop(_NEW_USERS, None)
    flow = _flow_of(session)
    if users and flow is not None:
        for user in users:
            row = flow.enqueue(user, Purpose.SIGNUP)
            key = flow.columns.id_of(user)
            outbox.note_signup(session.connection(), flow.state_table, key, row.recipient)


def _after_commit(session: Session) -> None:
    if session.get_nested_transaction() is not None:
        return  # a savepoint was released: the messages are saved only by the outer commit
    ids = session.info.pop(_QUEUED, None)
    flow = _flow_of(session)
    if flow is not None and has_request_context():
        setattr(g, COMMITTED, True)
    if ids and flow is not None:
        dispatch(flow, ids)


def _after_rollback(session: Session) -> None:
    if session.get_nested_transaction() is None:  # a savepoint's keeps the outer queue
        session.info.pop(_NEW_USERS, None)
        session.info.pop(_QUEUED, None)


def dispatch(flow: ConfirmationFlow, ids: list[int]) -> None:
    """Hand messages just committed to the outbox to the delivery mode. Outside a request
    ``thread`` delivers at once, as ``sync`` does (the process may exit mid-send); so does
    ``sync`` after a resend's response, when no ``after_request`` is left to run."""
    mode, after_response = flow.settings.delivery, g.get(AFTER_RESPONSE, False)
    if mode == "queue" and flow.handoff is not None:
        flow.handoff(ids)
    elif mode == "queue":
        logger.error(
            "CONFIRM_MAIL_DELIVERY is 'queue' but no handoff is registered: the emails "
            "wait for deliver_due()"
        )
    elif mode == "thread" and (has_request_context() or after_response):
        flow.sender.wake(current_app._get_current_object())  # type: ignore[attr-defined]
    elif mode == "sync" and has_request_context() and not after_response:
        g.setdefault(_SYNC_QUEUE, []).extend(ids)
    elif mode in ("thread", "sync"):
        flow.deliverer.deliver_now(ids)


def deliver_after_request(response: Response) -> Response:
    """``sync`` mode: deliver what this request committed to the outbox."""
    ids = g.pop(_SYNC_QUEUE, None)
    if ids:
        get_flow().deliverer.deliver_now(ids)
    return response
