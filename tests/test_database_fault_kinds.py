"""Which database errors :func:`signup_view` answers 503: outages, and any driver error
SQLAlchemy took for a lost connection; errors in the data or the SQL stay errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy.exc import DatabaseError, IntegrityError, OperationalError

from flask_confirm_mail import signup_view
from flask_confirm_mail.errors import is_database_fault
from tests.apps import db


class _DriverError(Exception):
    pass


def _raising(error: Exception) -> Callable[[], str]:
    @signup_view
    def view() -> str:
        raise error

    return view


def _lost_connection() -> DatabaseError:
    return DatabaseError("INSERT ...", {}, _DriverError("lost sync"), connection_invalidated=True)


def test_a_lost_connection_of_any_class_is_a_503(app: Flask) -> None:
    app.add_url_rule("/lost", "lost", _raising(_lost_connection()), methods=["POST"])
    answer = app.test_client().post("/lost")
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "30"


def test_an_error_in_the_data_is_no_outage(app: Flask) -> None:
    app.config["PROPAGATE_EXCEPTIONS"] = True
    error = IntegrityError("INSERT ...", {}, _DriverError("duplicate key"))
    app.add_url_rule("/dup", "dup", _raising(error), methods=["POST"])
    with pytest.raises(IntegrityError):
        app.test_client().post("/dup")


def test_is_database_fault() -> None:
    assert is_database_fault(_lost_connection())
    assert not is_database_fault(DatabaseError("SELECT 1", {}, _DriverError("other")))
    assert not is_database_fault(ValueError("not a database error"))


def test_a_connection_lost_after_the_answer_leaves_the_answer(
    make_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    """The rollback that closes the request's session fails (the database went away after
    the view answered): the answer stands, the failure is logged, the next request works."""
    app = make_app()  # not pytest-flask's `app`, whose pushed context outlives each request
    broken = [True]

    def rollback_fails(connection: Any) -> None:
        if broken[0]:
            broken[0] = False
            raise OperationalError("ROLLBACK", {}, _DriverError("server closed the connection"))

    def reads() -> str:
        db.session.execute(sa.text("SELECT 1"))  # leaves a transaction open for teardown
        return "read"

    app.add_url_rule("/reads", "reads", reads)
    with app.app_context():
        sa.event.listen(db.engine, "rollback", rollback_fails)
    client = app.test_client()
    answer = client.get("/reads")
    assert answer.status_code == 200 and answer.get_data(as_text=True) == "read"
    assert "lost while closing a request's session" in caplog.text
    assert client.get("/reads").status_code == 200


def test_a_fault_after_the_sign_up_committed_says_it_went_through(
    make_app: Callable[..., Flask], smtp_server: Any
) -> None:
    app = make_app()
    client = app.test_client()
    page = client.post("/signup-then-outage", data={"email": "saved@example.org"})
    assert page.status_code == 503 and "Retry-After" not in page.headers
    text = page.get_data(as_text=True)
    assert "went through" in text and "nothing was saved" not in text
    answer = client.post(
        "/signup-then-outage", data={"email": "json@example.org"},
        headers={"Accept": "application/json"},
    )  # fmt: skip
    assert answer.status_code == 503 and answer.json["saved"] is True
    assert {m.rcpt_tos[0] for m in smtp_server.wait_for(2)} == {
        "saved@example.org", "json@example.org"
    }  # fmt: skip
    again = client.post("/signup", data={"email": "before@example.org"})
    assert again.status_code == 201


def test_a_fault_before_any_commit_says_nothing_was_saved(app: Flask) -> None:
    app.add_url_rule("/lost-early", "lost-early", _raising(_lost_connection()), methods=["POST"])
    answer = app.test_client().post("/lost-early", headers={"Accept": "application/json"})
    assert answer.status_code == 503 and answer.json["saved"] is False
    page = app.test_client().post("/lost-early")
    assert "nothing was saved" in page.get_data(as_text=True)
