"""The extension objects CatLoader uses, created once and bound to each app in ``create_app``."""

from __future__ import annotations

from flask_login import LoginManager
from flask_wtf.csrf import CSRFProtect

from flask_confirm_mail import ConfirmMail

from .models import User, db

__all__ = ["confirm_mail", "csrf", "db", "login_manager"]

login_manager = LoginManager()
login_manager.login_view = "bl_auth.login"
login_manager.login_message = "Please log in to see that page."
login_manager.login_message_category = "info"

csrf = CSRFProtect()

#: The email-confirmation flow; its settings come from ``CONFIRM_MAIL_*`` in app.config.
confirm_mail = ConfirmMail(db=db, user_model=User)


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    if not (user_id.isascii() and user_id.isdigit()) or len(user_id) > 18:
        return None
    return db.session.get(User, int(user_id))
