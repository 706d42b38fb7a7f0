"""The app's own lookups by address: ``find_user`` finds an address as typed in the canonical
form the extension stores, so an app's form check or password reset neither misses a user
nor lets a second spelling reach the unique constraint (a 500)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy.exc import IntegrityError

from flask_confirm_mail import change_email, find_user
from tests.apps import db, user_model


def _signup(app: Flask, email: str, path: str = "/signup") -> int:
    response = app.test_client().post(path, data={"email": email})
    assert response.status_code == 201, response.data
    return int(response.json["id"])


@pytest.mark.parametrize(
    ("registered", "typed"),
    [
        ("Olga.Smith@Example.com", "olga.smith@example.com"),
        ("olga.smith@example.com", "Olga.Smith@Example.com"),
        ("Olga.Smith@Example.com", " OLGA.SMITH@EXAMPLE.COM\t"),
    ],
)
def test_find_user_finds_an_address_as_typed(
    make_app: Callable[..., Flask], shape: str, registered: str, typed: str
) -> None:
    app = make_app(shape=shape)
    uid = _signup(app, registered)
    model = user_model(shape)
    columns = app.extensions["confirm_mail"].columns
    with app.app_context():
        user = find_user(typed)
        assert user is not None and columns.id_of(user) == str(uid)
        # Positive control: the app's exact-match query misses any spelling but the stored one.
        exact = db.session.execute(sa.select(model).where(columns.email_column == typed))
        assert (exact.scalar_one_or_none() is None) == (typed != "olga.smith@example.com")


@pytest.mark.parametrize(
    "typed",
    ["nobody@example.com", "not an address", "", None, 42, "a@b.example, olga@example.com"],
)
def test_find_user_is_none_for_an_unknown_or_invalid_address(
    make_app: Callable[..., Flask], shape: str, typed: Any
) -> None:
    app = make_app(shape=shape)
    _signup(app, "olga@example.com")
    with app.app_context():
        assert find_user(typed) is None
        assert find_user("OLGA@example.com") is not None, "positive control"


def test_find_user_does_not_match_a_pending_address(make_app: Callable[..., Flask]) -> None:
    """A pending address is no login: another account may still sign up with it."""
    app = make_app()
    uid = _signup(app, "old@example.com")
    model = user_model("mixin")
    with app.app_context():
        user = db.session.get(model, uid)
        assert change_email(user, "New@Example.com")
        db.session.commit()
        assert find_user("new@example.com") is None
        assert find_user("Old@Example.com") is user, "positive control"


def test_a_form_check_with_find_user_refuses_a_second_spelling(
    make_app: Callable[..., Flask], shape: str
) -> None:
    app = make_app(shape=shape)
    client = app.test_client()
    _signup(app, "bob@example.com", "/register")
    taken = client.post("/register", data={"email": "BOB@Example.com"})
    assert taken.status_code == 409, taken.data
    assert client.post("/register", data={"email": "not an address"}).status_code == 400
    _signup(app, "Alice@Example.com", "/register")
    with app.app_context():
        assert db.session.query(user_model(shape)).count() == 2
        outbox = app.extensions["confirm_mail"].outbox_model
        assert db.session.query(outbox).count() == 2, "no email for the refused sign-up"
    # Positive control: a view without the check meets the unique constraint (a 500).
    with pytest.raises(IntegrityError):
        client.post("/signup", data={"email": "BOB@Example.com"})
