"""Celery delivery: the tasks, on the app's Celery.

Flask's Celery pattern keeps the app's Celery instance in ``app.extensions["celery"]``.
With ``CONFIRM_MAIL_DELIVERY = "queue"``, :func:`install_celery_delivery` registers two
tasks on it (so ``celery -A ... worker`` knows them as soon as it has built the Flask
app) and hands each commit's outbox ids to the first:

- :data:`DELIVER` is sent after each commit that queued emails, with their outbox ids
  only (never an address or a token), and delivers them through
  :meth:`Deliverer.deliver_batch <flask_confirm_mail.delivery.Deliverer.deliver_batch>`,
  the same claim and lease as every other mode (:func:`flask_confirm_mail.deliver`);
- :data:`DELIVER_DUE` delivers everything due: retries, and emails whose task was lost
  (a broker restart, a failed publish, a killed worker). :func:`schedule_delivery` adds
  it to the beat schedule.

The outbox stays the source of truth: a task only says "look at these rows now". A task
run twice finds the rows claimed or sent and sends nothing; a task lost leaves its rows
due for the periodic task. Celery's own retries and result storage are not used.
"""

from __future__ import annotations

import logging
import weakref
from typing import Any

from flask import Flask

from ..confirmation import deliver, deliver_due, get_flow
from ..errors import ConfigurationError

logger = logging.getLogger("flask_confirm_mail")

#: The task that delivers the outbox ids it is given.
DELIVER = "flask_confirm_mail.deliver"
#: The periodic task that delivers every due message.
DELIVER_DUE = "flask_confirm_mail.deliver_due"
#: The name of the beat schedule entry that :func:`schedule_delivery` adds.
SCHEDULE_ENTRY = "flask-confirm-mail: deliver due emails"
#: Where Flask's Celery pattern keeps the app's Celery instance.
CELERY_EXTENSION_KEY = "celery"

# The Flask app each Celery app delivers for. Celery has no typing (no py.typed), so its
# objects are ``Any`` here, and the module imports nothing of it.
_flask_apps: weakref.WeakKeyDictionary[Any, Flask] = weakref.WeakKeyDictionary()


def install_celery_delivery(app: Flask) -> None:
    """Register the tasks on ``app``'s Celery and send committed ids to it; call it after
    ``ConfirmMail.init_app(app)``.

    :raises ConfigurationError: ``CONFIRM_MAIL_DELIVERY`` is not ``"queue"``,
        ``app.extensions["celery"]`` is missing, or that Celery app already delivers for
        another Flask app.
    """
    flow = get_flow(app)
    if flow.settings.delivery != "queue":
        raise ConfigurationError("Celery delivery needs CONFIRM_MAIL_DELIVERY = 'queue'.")
    celery_app = app.extensions.get(CELERY_EXTENSION_KEY)
    if celery_app is None:
        raise ConfigurationError(
            "Celery delivery needs the app's Celery instance in app.extensions['celery'] "
            "(Flask's Celery pattern, celery_init_app(app)); install it with "
            "pip install 'flask-confirm-mail[celery]'."
        )
    known = _flask_apps.get(celery_app)
    if known is not None and known is not app:
        raise ConfigurationError(
            "This Celery app already delivers confirmation emails for another Flask app: "
            "give each Flask app its own Celery instance."
        )
    _flask_apps[celery_app] = app
    from celery.signals import worker_process_init

    worker_process_init.connect(_forget_parent_connections, weak=False, dispatch_uid=DELIVER)
    deliver = celery_app.task(name=DELIVER, bind=True, ignore_result=True)(_deliver)
    celery_app.task(name=DELIVER_DUE, bind=True, ignore_result=True)(_deliver_due)
    chunk_size = flow.settings.concurrency  # what one task claims

    def hand_off(ids: list[int]) -> None:
        for start in range(0, len(ids), chunk_size):
            chunk = ids[start : start + chunk_size]
            try:
                deliver.apply_async((chunk,))
            except Exception as exc:  # noqa: BLE001 - the rows stay due for DELIVER_DUE
                logger.warning(
                    "Could not hand %s outbox message(s) to Celery (%s); the periodic "
                    "task %s will deliver them",
                    len(chunk),
                    type(exc).__name__,
                    DELIVER_DUE,
                )

    flow.handoff = hand_off


def schedule_delivery(celery_app: Any, every: float = 10.0) -> None:
    """Add the beat entry that runs :data:`DELIVER_DUE` every ``every`` seconds.

    Call it once where the Celery app is built; ``celery beat`` (or a worker started with
    ``-B``) then sends the task. A run that could not start within ``every`` seconds is
    dropped (``expires``), so sweeps never pile up behind a busy worker.

    :param celery_app: the app's Celery instance.
    :param every: seconds between two runs: the longest a lost task's emails, or a due
        retry, wait for the next attempt.
    """
    celery_app.add_periodic_task(
        every, celery_app.signature(DELIVER_DUE), name=SCHEDULE_ENTRY, expires=every
    )


def _forget_parent_connections(**_: Any) -> None:
    """In a child of Celery's prefork pool: drop the database connections inherited from
    the parent (SQLAlchemy's advice for forked processes), so no two processes share one."""
    for app in list(_flask_apps.values()):
        with app.app_context():
            for engine in get_flow(app).db.engines.values():
                engine.dispose(close=False)


def _flask_app_of(celery_app: Any) -> Flask:
    app = _flask_apps.get(celery_app)
    if app is None:
        raise ConfigurationError(
            "No Flask app installed Celery delivery on this Celery "
            "app in this process: the worker must import the module that builds the app."
        )
    return app


def _deliver(task: Any, ids: list[int]) -> int:
    """:data:`DELIVER`: claim and send these outbox messages; return how many were sent."""
    app = _flask_app_of(task.app)
    with app.app_context():
        return deliver(ids)


def _deliver_due(task: Any) -> int:
    """:data:`DELIVER_DUE`: deliver every due message until none is left; return how
    many were sent."""
    app = _flask_app_of(task.app)
    with app.app_context():
        return deliver_due()
