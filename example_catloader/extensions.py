"""The extension objects CatLoader uses, created once and bound to each app in ``create_app``."""

from __future__ import annotations

from flask import request, session
from flask_babel import Babel
from flask_login import LoginManager
from flask_wtf.csrf import CSRFProtect

from flask_confirm_mail import ConfirmMail
from flask_confirm_mail.bounces import Bounces
from flask_confirm_mail.i18n import LANGUAGES

from .models import User, db

__all__ = ["babel", "bounces", "confirm_mail", "csrf", "db", "login_manager", "select_locale"]

login_manager = LoginManager()
login_manager.login_view = "bl_auth.login"
login_manager.login_message = "Please log in to see that page."
login_manager.login_message_category = "info"

csrf = CSRFProtect()

#: Translations: the extension's pages and emails follow the locale chosen here
#: (CatLoader's own pages stay English).
babel = Babel()


def select_locale() -> str | None:
    """The language picked in the footer (``/language/<code>``), else the browser's."""
    chosen = session.get("language")
    if chosen in LANGUAGES:
        return str(chosen)
    return request.accept_languages.best_match(LANGUAGES)


#: The email-confirmation flow; its settings come from ``CONFIRM_MAIL_*`` in app.config.
confirm_mail = ConfirmMail(db=db, user_model=User)
#: Bounces: addresses that cannot receive mail are marked and no longer mailed (the
#: mailbox page can simulate a bounce).
bounces = Bounces(confirm_mail)


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    if not (user_id.isascii() and user_id.isdigit()) or len(user_id) > 18:
        return None
    return db.session.get(User, int(user_id))
