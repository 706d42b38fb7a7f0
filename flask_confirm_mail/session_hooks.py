"""SQLAlchemy session events that tie the outbox to the caller's transaction.

- In a view decorated with :func:`~flask_confirm_mail.signup_view`, every new instance
  of the user model that is flushed gets an outbox message, added to the same session
  so the commit that saves the user saves the message too (a rollback drops both). Its
  address is checked before the flush writes anything: a bad one raises
  :class:`~flask_confirm_mail.errors.AddressError` with nothing sent to the database.
- After a commit, the outbox messages it saved are handed to the app's delivery mode.
"""

from __future__ import annotations

import weakref
from typing import Any

from flask import current_app, g, has_app_context
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import event
from sqlalchemy.orm import Session

_NEW_USERS = "confirm_mail_new_users"
_QUEUED = "confirm_mail_queued_ids"
_SIGNUP_FLAG = "_confirm_mail_signup_depth"

_installed: weakref.WeakSet[SQLAlchemy] = weakref.WeakSet()


def install(db: SQLAlchemy) -> None:
    """Listen on ``db.session`` (once per ``db``)."""
    if db in _installed:
        return
    _installed.add(db)
    event.listen(db.session, "before_flush", _before_flush)
    event.listen(db.session, "after_flush", _after_flush)
    event.listen(db.session, "after_flush_postexec", _after_flush_postexec)
    event.listen(db.session, "after_commit", _after_commit)
    event.listen(db.session, "after_rollback", _after_rollback)


def capturing_signups() -> bool:
    return bool(g.get(_SIGNUP_FLAG, 0))


def begin_signup_capture() -> None:
    setattr(g, _SIGNUP_FLAG, g.get(_SIGNUP_FLAG, 0) + 1)


def end_signup_capture() -> None:
    setattr(g, _SIGNUP_FLAG, max(g.get(_SIGNUP_FLAG, 0) - 1, 0))


def _state(session: Session) -> Any:
    if not has_app_context():
        return None
    state = current_app.extensions.get("confirm_mail")
    if state is None:
        return None
    registry = state.db.session.registry
    if not registry.has() or registry() is not session:
        return None
    return state


def _before_flush(session: Session, flush_context: Any, instances: Any) -> None:
    state = _state(session)
    if state is None or not capturing_signups():
        return
    from .addresses import normalize_address

    for obj in session.new:
        if isinstance(obj, state.columns.model):
            normalize_address(state.columns.email_of(obj))


def _after_flush(session: Session, flush_context: Any) -> None:
    state = _state(session)
    if state is None:
        return
    signup = capturing_signups()
    for obj in session.new:
        if isinstance(obj, state.outbox_model):
            session.info.setdefault(_QUEUED, []).append(obj.id)
        elif signup and isinstance(obj, state.columns.model):
            session.info.setdefault(_NEW_USERS, []).append(obj)


def _after_flush_postexec(session: Session, flush_context: Any) -> None:
    users = session.info.pop(_NEW_USERS, None)
    state = _state(session)
    if not users or state is None:
        return
    from .confirmation import enqueue_confirmation

    for user in users:
        enqueue_confirmation(state, user)


def _after_commit(session: Session) -> None:
    ids = session.info.pop(_QUEUED, None)
    state = _state(session)
    if ids and state is not None:
        state.dispatch(ids)


def _after_rollback(session: Session) -> None:
    session.info.pop(_NEW_USERS, None)
    session.info.pop(_QUEUED, None)
