from flask import Flask, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from flask_confirm_mail import AddressError, ConfirmableMixin, ConfirmMail, find_user, signup_view

app = Flask(__name__)
app.config.from_mapping(
    SECRET_KEY="dev only: set FLASK_SECRET_KEY in production",
    SQLALCHEMY_DATABASE_URI="sqlite:///quickstart.db",
    MAIL_SERVER="127.0.0.1",
    MAIL_PORT=1025,
    MAIL_DEFAULT_SENDER=("Quickstart", "noreply@example.com"),
    CONFIRM_MAIL_EXTERNAL_URL="http://127.0.0.1:5000",
)
app.config.from_prefixed_env()  # FLASK_MAIL_PORT=2525 etc. override the values above

db = SQLAlchemy(app)


class User(ConfirmableMixin, db.Model):  # email, email_confirmed_at, pending_email
    id: Mapped[int] = mapped_column(primary_key=True)


confirm_mail = ConfirmMail(app, db=db, user_model=User)

with app.app_context():
    db.create_all()
    db.engine.dispose()  # a server that forks after loading (gunicorn --preload) shares none


@app.post("/signup")
@signup_view
def signup():
    email = request.form.get("email")
    if find_user(email) is not None:  # as typed: Bob@Example.com finds bob@example.com
        return "That address has an account already.", 400
    db.session.add(User(email=email))
    try:
        db.session.commit()  # saves the user and queues the email in one transaction
    except (AddressError, IntegrityError):  # not an address, or taken by a sign-up meanwhile
        db.session.rollback()
        return "Enter a valid address that has no account yet.", 400
    return "Check your inbox for the confirmation link.", 201
