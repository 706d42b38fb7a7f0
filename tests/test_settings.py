"""init_app: settings checked, unsafe ones refused with a clear message."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from flask import Flask

from flask_confirm_mail import ConfigurationError, ConfirmMail, NotInitializedError
from flask_confirm_mail.confirmation import get_flow
from flask_confirm_mail.settings import OPTIONS, derive_link_secret
from tests.apps import EXTERNAL_URL, LINK_SECRET, SECRET_KEY, User, db


def bare_app(**config: Any) -> Flask:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=SECRET_KEY,
        SQLALCHEMY_DATABASE_URI="sqlite://",
        MAIL_DEFAULT_SENDER="noreply@app.example.com",
        CONFIRM_MAIL_EXTERNAL_URL=EXTERNAL_URL,
        CONFIRM_MAIL_DELIVERY="sync",
    )
    app.config.update(config)
    return app


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"CONFIRM_MAIL_SECRET": "short"}, "CONFIRM_MAIL_SECRET is too short"),
        ({"CONFIRM_MAIL_SECRET": "x" * 31}, "at least 32"),
        ({"CONFIRM_MAIL_SECRET": SECRET_KEY}, "must differ from SECRET_KEY"),
        ({"CONFIRM_MAIL_SECRET": [LINK_SECRET, "old"]}, "CONFIRM_MAIL_SECRET is too short"),
        ({"CONFIRM_MAIL_SECRET": []}, "at least one key"),
        ({"CONFIRM_MAIL_LIFETIME": 0}, "LIFETIME must be a positive"),
        ({"CONFIRM_MAIL_LIFETIME": timedelta(seconds=-5)}, "LIFETIME must be a positive"),
        ({"CONFIRM_MAIL_LIFETIME": "soon"}, "LIFETIME must be a number"),
        ({"CONFIRM_MAIL_DELIVERY": "carrier-pigeon"}, "DELIVERY must be one of"),
        ({"CONFIRM_MAIL_EXTERNAL_URL": None}, "Set CONFIRM_MAIL_EXTERNAL_URL"),
        ({"CONFIRM_MAIL_EXTERNAL_URL": "javascript:alert(1)"}, "http(s) URL"),
        ({"SECRET_KEY": None}, "Set CONFIRM_MAIL_SECRET"),
        ({"MAIL_DEFAULT_SENDER": None}, "From address"),
    ],
)
def test_unsafe_settings_are_refused(config: dict[str, Any], message: str) -> None:
    app = bare_app(**config)
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ConfirmMail(app, db=db, user_model=User)
    assert "confirm_mail" not in app.extensions


def test_secrets_never_appear_in_errors() -> None:
    with pytest.raises(ConfigurationError) as info:
        ConfirmMail(bare_app(CONFIRM_MAIL_SECRET="hunter2"), db=db, user_model=User)
    assert "hunter2" not in str(info.value)


def test_second_init_app_is_refused() -> None:
    app = bare_app()
    extension = ConfirmMail(app, db=db, user_model=User)
    with pytest.raises(ConfigurationError, match="already called"):
        extension.init_app(app)


def test_missing_init_app_is_a_clear_error() -> None:
    with Flask(__name__).app_context(), pytest.raises(NotInitializedError, match="init_app"):
        get_flow()


def test_derived_secret_is_not_secret_key() -> None:
    app = bare_app()
    ConfirmMail(app, db=db, user_model=User)
    [secret] = get_flow(app).settings.secret
    assert secret == derive_link_secret(SECRET_KEY)
    assert secret != SECRET_KEY.encode() and len(secret) == 32


def test_secret_key_fallbacks_give_the_older_link_keys() -> None:
    old = "an-older-secret-key-0123456789abcdef"
    app = bare_app(SECRET_KEY_FALLBACKS=[old, "too-short"])
    ConfirmMail(app, db=db, user_model=User)
    assert get_flow(app).settings.secret == (
        derive_link_secret(SECRET_KEY),
        derive_link_secret(old),
    )


def test_constructor_options_win_over_config() -> None:
    app = bare_app(CONFIRM_MAIL_LIFETIME=3600)
    ConfirmMail(app, db=db, user_model=User, lifetime=timedelta(minutes=5), resend_cooldown=0)
    settings = get_flow(app).settings
    assert settings.lifetime == timedelta(minutes=5)
    assert settings.resend_cooldown == timedelta(0)
    assert app.config["CONFIRM_MAIL_LIFETIME"] == 3600


def test_unknown_option_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="lifetme"):
        ConfirmMail(db=db, user_model=User, lifetme=5)


def test_defaults_are_set_in_config() -> None:
    app = bare_app()
    ConfirmMail(app, db=db, user_model=User)
    for option in OPTIONS:
        assert option.key in app.config
    assert app.config["CONFIRM_MAIL_LIFETIME"] == timedelta(hours=48)
    assert get_flow(app).settings.link_prefix == "https://app.example.com/confirm/"


def test_app_name_defaults_to_the_site_host_not_the_module_name() -> None:
    app = bare_app()
    ConfirmMail(app, db=db, user_model=User)
    assert get_flow(app).settings.app_name == "app.example.com"

    named = bare_app(CONFIRM_MAIL_APP_NAME="Cat Loader")
    ConfirmMail(named, db=db, user_model=User)
    assert get_flow(named).settings.app_name == "Cat Loader"


@pytest.mark.parametrize("name", ["Cats\nBcc: x@evil.example", "Cats\r"])
def test_app_name_must_be_one_line(name: str) -> None:
    with pytest.raises(ConfigurationError, match="APP_NAME must be one line"):
        ConfirmMail(bare_app(CONFIRM_MAIL_APP_NAME=name), db=db, user_model=User)


def test_server_name_gives_the_link_base() -> None:
    app = bare_app(
        CONFIRM_MAIL_EXTERNAL_URL=None, SERVER_NAME="cats.example.net", PREFERRED_URL_SCHEME="https"
    )
    ConfirmMail(app, db=db, user_model=User, url_prefix="/email/confirm/")
    assert get_flow(app).settings.link_prefix == "https://cats.example.net/email/confirm/"


def test_user_model_columns_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="no column attribute 'mail'"):
        ConfirmMail(bare_app(), db=db, user_model=User, email_attribute="mail")
    with pytest.raises(ConfigurationError, match="Boolean or DateTime"):
        ConfirmMail(bare_app(), db=db, user_model=User, confirmed_attribute="name")


def test_delivery_is_sync_under_testing_unless_set() -> None:
    app = bare_app(TESTING=True)
    del app.config["CONFIRM_MAIL_DELIVERY"]
    ConfirmMail(app, db=db, user_model=User)
    assert get_flow(app).settings.delivery == "sync"
    live = bare_app()
    del live.config["CONFIRM_MAIL_DELIVERY"]
    ConfirmMail(live, db=db, user_model=User)
    assert get_flow(live).settings.delivery == "thread"
    chosen = bare_app(TESTING=True, CONFIRM_MAIL_DELIVERY="worker")
    ConfirmMail(chosen, db=db, user_model=User)
    assert get_flow(chosen).settings.delivery == "worker"
