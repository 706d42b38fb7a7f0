"""CatLoader's forms (Flask-WTF: each carries a CSRF token)."""

from __future__ import annotations

import re
from typing import Any

from flask_wtf import FlaskForm
from flask_wtf.file import FileField
from wtforms import EmailField, PasswordField
from wtforms.validators import DataRequired, Length, ValidationError

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 128
MAX_ADDRESS_LENGTH = 254
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
#: One plain ASCII address, no display name or comments: what the extension mails to.
PLAIN_ADDRESS = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@(?:{_LABEL}\.)+{_LABEL}")


def normalized_address(value: str) -> str:
    """Addresses are kept lower-cased, so logins and look-ups ignore case."""
    return value.strip().lower()


def plain_address(form: Any, field: Any) -> None:
    value = normalized_address(field.data or "")
    local = value.partition("@")[0]
    if len(value) > MAX_ADDRESS_LENGTH or len(local) > 64 or not PLAIN_ADDRESS.fullmatch(value):
        raise ValidationError("Enter one plain email address, like kitty@example.com.")
    field.data = value


def email_field(label: str) -> EmailField:
    return EmailField(
        label,
        validators=[DataRequired("Enter your email address."), plain_address],
        render_kw={"autocomplete": "email", "maxlength": MAX_ADDRESS_LENGTH},
    )


class SignupForm(FlaskForm):
    email = email_field("Email")
    password = PasswordField(
        "Password",
        validators=[
            DataRequired("Choose a password."),
            Length(
                min=MIN_PASSWORD_LENGTH,
                max=MAX_PASSWORD_LENGTH,
                message=f"Use {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters.",
            ),
        ],
        render_kw={"autocomplete": "new-password", "minlength": MIN_PASSWORD_LENGTH},
    )


class LoginForm(FlaskForm):
    email = email_field("Email")
    password = PasswordField(
        "Password",
        validators=[DataRequired("Enter your password."), Length(max=MAX_PASSWORD_LENGTH)],
        render_kw={"autocomplete": "current-password"},
    )


class ChangeEmailForm(FlaskForm):
    email = email_field("New email address")


class UploadForm(FlaskForm):
    """The picture itself is checked by :func:`example_catloader.uploads.check_picture`."""

    picture = FileField("Cat picture")
