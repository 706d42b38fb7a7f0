"""Round 2, family 8: the keys the README and docs print are refused in production."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from flask_confirm_mail import ConfigurationError, ConfirmMail
from flask_confirm_mail.settings import EXAMPLE_SECRETS
from tests.apps import EXTERNAL_URL, SECRET_KEY, User, db

ROOT = Path(__file__).resolve().parents[2]
PRINTED_KEY = re.compile(r"""(?:SECRET_KEY|CONFIRM_MAIL_SECRET)\s*=\s*["']([^"']+)["']""")


def _printed_keys() -> set[str]:
    files = [ROOT / "README.md", *(ROOT / "docs").rglob("*.rst"), *(ROOT / "docs").rglob("*.py")]
    return {key for path in files for key in PRINTED_KEY.findall(path.read_text())}


def _app(**config: Any) -> Flask:
    app = Flask(__name__)
    app.config.update(
        SQLALCHEMY_DATABASE_URI="sqlite://",
        MAIL_DEFAULT_SENDER="noreply@app.example.com",
        CONFIRM_MAIL_EXTERNAL_URL=EXTERNAL_URL,
        **config,
    )
    return app


def test_every_key_the_docs_print_is_known() -> None:
    assert _printed_keys(), "the README prints an example key"
    assert _printed_keys() <= EXAMPLE_SECRETS


@pytest.mark.parametrize("key", sorted(EXAMPLE_SECRETS))
@pytest.mark.parametrize("setting", ["SECRET_KEY", "CONFIRM_MAIL_SECRET"])
@pytest.mark.parametrize("as_bytes", [False, True])
def test_an_example_key_is_refused_in_production(key: str, setting: str, as_bytes: bool) -> None:
    config = {"SECRET_KEY": SECRET_KEY, setting: key.encode() if as_bytes else key}
    with pytest.raises(ConfigurationError, match="example key") as info:
        ConfirmMail(_app(**config), db=db, user_model=User)
    assert "secrets.token_urlsafe" in str(info.value) and key not in str(info.value)


@pytest.mark.parametrize("mode", [{"TESTING": True}, {"DEBUG": True}])
@pytest.mark.parametrize("key", sorted(EXAMPLE_SECRETS))
def test_an_example_key_works_while_developing(key: str, mode: dict[str, bool]) -> None:
    app = _app(SECRET_KEY=key, **mode)
    ConfirmMail(app, db=db, user_model=User)
    assert "confirm_mail" in app.extensions


def test_a_real_key_is_accepted_in_production() -> None:
    """Control: the same app with a key of its own starts."""
    app = _app(SECRET_KEY=SECRET_KEY)
    ConfirmMail(app, db=db, user_model=User)
    assert "confirm_mail" in app.extensions
