"""A Flask app delivering through Celery (``CONFIRM_MAIL_DELIVERY = "queue"``), built as
Flask's Celery pattern says.

The tests build it in-process (to sign users up) and the ``celery worker`` subprocesses
build it from the environment: ``celery -A tests.delivery.celery_app worker``, with
``TEST_DATABASE_URL``, ``TEST_SMTP_PORT``, ``TEST_BROKER_URL``, ``TEST_CELERY_QUEUE``,
optionally ``TEST_SWEEP_EVERY`` (seconds: adds the beat entry) and any ``FLASK_*`` key.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery, Task
from flask import Flask, jsonify, request

from flask_confirm_mail import ConfirmMail, signup_view
from flask_confirm_mail.queues.celery import install_celery_delivery, schedule_delivery
from tests.apps import EXTERNAL_URL, LINK_SECRET, SECRET_KEY, User, db, shorten_delivery


def celery_init_app(app: Flask) -> Celery:
    """Flask's documented pattern (patterns/celery): tasks run in the app's context."""

    class FlaskTask(Task):  # type: ignore[misc]
        def __call__(self, *args: object, **kwargs: object) -> object:
            with app.app_context():
                return self.run(*args, **kwargs)

    celery_app = Celery(app.name, task_cls=FlaskTask)
    celery_app.config_from_object(app.config["CELERY"])
    celery_app.set_default()
    app.extensions["celery"] = celery_app
    return celery_app


def create_app(
    database_url: str,
    *,
    smtp_port: int,
    broker_url: str,
    queue: str,
    sweep_every: float | None = None,
    config: dict[str, Any] | None = None,
) -> Flask:
    app = Flask(__name__)
    app.config.update(
        TESTING=True,
        SECRET_KEY=SECRET_KEY,
        SQLALCHEMY_DATABASE_URI=database_url,
        MAIL_SERVER="127.0.0.1",
        MAIL_PORT=smtp_port,
        MAIL_SUPPRESS_SEND=False,
        MAIL_DEFAULT_SENDER=("CatLoader", "noreply@app.example.com"),
        CONFIRM_MAIL_SECRET=LINK_SECRET,
        CONFIRM_MAIL_EXTERNAL_URL=EXTERNAL_URL,
        CONFIRM_MAIL_DELIVERY="queue",
        CELERY={
            "broker_url": broker_url,
            "task_default_queue": queue,
            "task_ignore_result": True,
            "broker_connection_retry_on_startup": True,
            # kombu checks its pub/sub connection this often (seconds): how a worker
            # notices a broker restart while its prefetch is full (see test_celery).
            "broker_transport_options": {"health_check_interval": 1},
        },
    )
    app.config.update(config or {})
    db.init_app(app)
    celery_app = celery_init_app(app)
    if sweep_every is not None:
        schedule_delivery(celery_app, every=sweep_every)
    ConfirmMail(db=db, user_model=User).init_app(app)
    install_celery_delivery(app)
    shorten_delivery(app)

    @app.post("/signup")
    @signup_view
    def signup() -> Any:
        user = User(email=request.form["email"])
        db.session.add(user)
        db.session.commit()
        return jsonify(id=user.id), 201

    with app.app_context():
        db.create_all()
    return app


def _from_environment() -> Flask:
    overrides = Flask("celery-worker-config")
    overrides.config.from_prefixed_env()
    config = {k: v for k, v in overrides.config.items() if f"FLASK_{k}" in os.environ}
    sweep = os.environ.get("TEST_SWEEP_EVERY")
    return create_app(
        os.environ["TEST_DATABASE_URL"],
        smtp_port=int(os.environ["TEST_SMTP_PORT"]),
        broker_url=os.environ["TEST_BROKER_URL"],
        queue=os.environ["TEST_CELERY_QUEUE"],
        sweep_every=None if sweep is None else float(sweep),
        config=config,
    )


if "TEST_CELERY_QUEUE" in os.environ:  # a worker subprocess
    flask_app = _from_environment()
    celery_app = flask_app.extensions["celery"]
