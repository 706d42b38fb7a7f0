import functools

from flask import Flask, request
from flask_sqlalchemy import SQLAlchemy
from redis import Redis, RedisError
from rq import Queue
from sqlalchemy.orm import Mapped, mapped_column

from flask_confirm_mail import ConfirmableMixin, ConfirmMail, deliver, signup_view

db = SQLAlchemy()


class User(ConfirmableMixin, db.Model):
    id: Mapped[int] = mapped_column(primary_key=True)


def create_app() -> Flask:
    app = Flask(__name__)
    app.config.from_mapping(
        SQLALCHEMY_DATABASE_URI="sqlite:///rq_app.db",
        MAIL_DEFAULT_SENDER="noreply@example.com",
        CONFIRM_MAIL_EXTERNAL_URL="https://example.com",
        CONFIRM_MAIL_DELIVERY="queue",
        RQ_REDIS_URL="redis://127.0.0.1:6379/0",
        RQ_QUEUE="confirm-mail",
    )
    app.config.from_prefixed_env()  # FLASK_SECRET_KEY, FLASK_MAIL_SERVER, FLASK_RQ_REDIS_URL...
    db.init_app(app)
    confirm_mail = ConfirmMail(app, db=db, user_model=User)
    queue = Queue(app.config["RQ_QUEUE"], connection=Redis.from_url(app.config["RQ_REDIS_URL"]))

    @confirm_mail.handoff  # called after each commit that saved emails
    def enqueue_delivery(ids: list[int]) -> None:
        try:
            queue.enqueue(deliver_emails, ids)  # outbox ids only: no address, no token
        except RedisError:  # the commit stands; the periodic step sends them
            app.logger.warning("Could not enqueue %s confirmation email(s)", len(ids))

    @app.post("/signup")
    @signup_view
    def signup():
        db.session.add(User(email=request.form["email"]))
        db.session.commit()  # saves the user and its email, then calls enqueue_delivery
        return "Check your inbox for the confirmation link.", 201

    with app.app_context():
        db.create_all()
    return app


@functools.cache
def job_app() -> Flask:
    """The app the jobs run in: built once in each process that runs them."""
    return create_app()


def deliver_emails(ids: list[int]) -> int:
    """The RQ job: claim and send these outbox messages; returns how many it sent."""
    with job_app().app_context():
        return deliver(ids)
