"""Sign-up latency: the default mode (``thread``) over the floor, with the peer beside them.

Sign-ups arrive at ``RATE`` a second, as a busy site's visitors would reach one process,
through Flask's test client, each app on its own SQLite file, in interleaved rounds. The
SMTP sink answers each message after 100 ms. Rows:

- the floor: the same view with no extension (the baseline of the ratio);
- the extension in its default mode: the view commits the outbox row with the user, a
  sender thread in the same process sends it meanwhile (over its ``CONCURRENCY``
  connections, so the backlog keeps it busy for the whole run);
- Flask-Security's ``POST /register`` with ``SECURITY_CONFIRMABLE``, which sends in the
  request through Flask-Mail: its default configuration (argon2 password hashing), and
  its cheapest (1-round pbkdf2; the floor view stores no password at all).
"""

from __future__ import annotations

import time
from importlib.util import find_spec
from typing import Any

from flask import Flask
from flask_mail import Mail
from flask_sqlalchemy import SQLAlchemy

from benchmarks.apps import SENDER, create_floor, create_ours, dispose, same_sqlite_settings
from benchmarks.harness import Guard, Run, Sink, log, percentile, print_table

SMTP_DELAY = 0.1
#: Sign-ups a second to the floor and to the extension (the peers take longer than this).
RATE = 50
PASSWORD = "correct horse battery staple"
security_db = SQLAlchemy()
_security_models: list[type[Any]] = []


class Client:
    """Sign-ups with new addresses through one app's test client."""

    def __init__(
        self, label: str, app: Flask, per_round: int, path: str = "/signup", rate: float = 0
    ) -> None:
        self.label, self.app, self.per_round, self.path = label, app, per_round, path
        self.interval = 1 / rate if rate else 0.0
        self.client = app.test_client()
        self.latencies: list[float] = []
        self.number = 0

    def sign_up(self) -> float:
        self.number += 1
        address = f"{self.app.name}{self.number}@example.org"
        form = {"email": address, "password": PASSWORD, "password_confirm": PASSWORD}
        start = time.perf_counter()
        response = self.client.post(self.path, data=form)
        elapsed = (time.perf_counter() - start) * 1000
        if response.status_code not in (201, 302):
            raise RuntimeError(f"{self.label}: sign-up answered {response.status_code}")
        return elapsed

    def round(self) -> None:
        start = time.perf_counter()
        for number in range(self.per_round):
            wait = start + number * self.interval - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            self.latencies.append(self.sign_up())


def run(run: Run) -> list[Guard]:
    rounds, per_round, slow = run.size(5, 2), run.size(200, 40), run.size(6, 2)
    with Sink(run, SMTP_DELAY) as sink:
        floor = Client(
            "floor: the same view, no extension",
            create_floor(run.sqlite("f")),
            per_round,
            rate=RATE,
        )
        ours_app = create_ours(run.sqlite("ours"), smtp_port=sink.port)
        ours = Client("ours, delivery=thread (default)", ours_app, per_round, rate=RATE)
        peers = [
            Client(
                f"Flask-Security register, {kind} hashing",
                create_security(run.sqlite(f"fs-{kind}"), kind, sink.port),
                slow,
                "/register",
            )
            for kind in ("default", "cheap")
            if find_spec("flask_security")
        ]
        if not peers:
            print("\nFlask-Security is not installed (pip install -e '.[bench]'): no peer rows")
        clients = [floor, ours, *peers]
        for client in clients:
            client.sign_up()  # a warm-up
        log(f"sign-up: {rounds} rounds of {per_round} sign-ups ({slow} for Flask-Security)")
        for _ in range(rounds):
            for client in clients:
                client.round()
                # No candidate runs beside the extension's backlog: wait until it is sent.
                sink.wait_for(sum(c.number for c in clients if c is not floor), 300)
        for app in [c.app for c in clients]:
            dispose(app)
    base = {p: percentile(floor.latencies, p) for p in (50, 99)}
    rows = []
    for client in clients:
        p50, p99 = (percentile(client.latencies, p) for p in (50, 99))
        rows.append([client.label, len(client.latencies), p50, p99, p50 / base[50], p99 / base[99]])
    print_table(
        f"Sign-up latency, ms ({RATE} sign-ups a second, SMTP answers after "
        f"{SMTP_DELAY * 1000:.0f} ms; ratio: to the floor)",
        ["", "sign-ups", "p50", "p99", "p50 ratio", "p99 ratio"],
        rows,
    )
    guards = []
    for p in (50, 99):
        extra = percentile(ours.latencies, p) - base[p]
        guards.append(
            Guard(
                f"sign-up p{p}, default mode over the floor",
                f"{extra:+.2f} ms ({percentile(ours.latencies, p):.2f} vs {base[p]:.2f} ms)",
                "<= 2 ms",
                extra <= 2.0,
            )
        )
    return guards


def create_security(database_url: str, kind: str, smtp_port: int) -> Flask:
    """Flask-Security with registration and ``confirmable``: it mails in the request."""
    from flask_security import Security, SQLAlchemyUserDatastore
    from flask_security.models import fsqla_v3 as fsqla

    if not _security_models:
        fsqla.FsModels.set_db_info(security_db)  # type: ignore[attr-defined,no-untyped-call]

        class Role(security_db.Model, fsqla.FsRoleMixin):  # type: ignore[name-defined,misc]
            pass

        class SecurityUser(security_db.Model, fsqla.FsUserMixin):  # type: ignore[name-defined,misc]
            __tablename__ = "user"

        _security_models.extend([SecurityUser, Role])
    app = Flask(f"fs{kind}")
    app.config.update(
        SECRET_KEY="benchmark-security-secret-key-0123456789",
        SQLALCHEMY_DATABASE_URI=database_url,
        SECURITY_PASSWORD_SALT="benchmark-password-salt",
        SECURITY_REGISTERABLE=True,
        SECURITY_CONFIRMABLE=True,
        SECURITY_EMAIL_SENDER=SENDER[1],
        # Its default looks the domain up in DNS: off, so no run depends on the network.
        SECURITY_EMAIL_VALIDATOR_ARGS={"check_deliverability": False},
        WTF_CSRF_ENABLED=False,
        MAIL_SERVER="127.0.0.1",
        MAIL_PORT=smtp_port,
        MAIL_DEFAULT_SENDER=SENDER,
    )
    if kind == "cheap":
        app.config.update(
            SECURITY_PASSWORD_HASH="pbkdf2_sha256",
            SECURITY_PASSWORD_HASH_PASSLIB_OPTIONS={"pbkdf2_sha256__rounds": 1},
            SECURITY_HASHING_SCHEMES=["hex_md5"],
            SECURITY_DEPRECATED_HASHING_SCHEMES=[],
        )
    Mail(app)
    security_db.init_app(app)
    same_sqlite_settings(app, security_db)
    Security(app, SQLAlchemyUserDatastore(security_db, *_security_models))
    with app.app_context():
        security_db.create_all()
    return app
