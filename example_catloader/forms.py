"""CatLoader's forms (Flask-WTF: each carries a CSRF token)."""

from __future__ import annotations

from typing import Any

from flask_wtf import FlaskForm
from flask_wtf.file import FileField
from wtforms import EmailField, PasswordField
from wtforms.validators import DataRequired, Length, ValidationError

from flask_confirm_mail import AddressError, normalize_address

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 128
MAX_ADDRESS_LENGTH = 254


def plain_address(form: Any, field: Any) -> None:
    """One plain ASCII address, as the extension mails to; kept lower-cased, so logins and
    look-ups ignore case."""
    try:
        field.data = normalize_address((field.data or "").lower())
    except AddressError:
        raise ValidationError("Enter one plain email address, like kitty@example.com.") from None


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
