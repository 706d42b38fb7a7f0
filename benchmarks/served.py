"""Scenario 6: served, the confirm page under gunicorn (2 sync workers) and load on loopback.

A bounded client (:mod:`benchmarks.load_client`, 4 connections) requests the confirm
page, ``GET /confirm/<token>``, with valid links of unconfirmed users, in turn:

- the floor: a bare Flask route reading the user row and rendering a small page;
- the benchmark app's confirm page (the extension's own templates);
- CatLoader's confirm page (``example_catloader``, its templates, CSRF and security
  headers), when the demo is there.

All run under the same gunicorn settings on a SQLite file each; the figures are
requests per second and the 99th percentile of the latency the client saw.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.apps import FloorUser, User, create_floor, create_ours, floor_db, ours_db
from benchmarks.context import BenchContext
from benchmarks.load_client import LoadResult, load
from benchmarks.measure import interleaved, percentile
from benchmarks.processes import ChildProcess, free_port
from benchmarks.report import Column, Row, ScenarioReport, Table, Target
from flask_confirm_mail import stop_delivery
from flask_confirm_mail.confirmation import get_flow

KEY = "served"
TITLE = "6. Served: the confirm page under gunicorn (2 workers), load on loopback"
WORKERS = 2
CONCURRENCY = 4


@dataclass
class Server:
    """A gunicorn serving one app factory, and the paths to request."""

    name: str
    label: str
    process: ChildProcess
    port: int
    paths: list[str]
    errors: int = 0
    requests: int = 0
    first_error: str = ""


def gunicorn(
    context: BenchContext, name: str, factory: str, env: dict[str, str]
) -> tuple[ChildProcess, int]:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "--workers",
        str(WORKERS),
        "--bind",
        f"127.0.0.1:{port}",
        "--log-level",
        "warning",
        factory,
    ]
    return ChildProcess(command, log_path=context.log_path(f"gunicorn-{name}"), env=env), port


def _users(count: int, prefix: str) -> list[str]:
    return [f"{prefix}{i}@example.org" for i in range(count)]


def _floor_paths(url: str, count: int) -> list[str]:
    app = create_floor(url)
    with app.app_context():
        users = [FloorUser(email=email) for email in _users(count, "floor")]
        floor_db.session.add_all(users)
        floor_db.session.commit()
        paths = [f"/page/{user.id}" for user in users]
        floor_db.session.remove()
        floor_db.engine.dispose()
    return paths


def _ours_paths(url: str, count: int) -> list[str]:
    app = create_ours(url, delivery="worker")
    flow = get_flow(app)
    with app.app_context():
        users = [User(email=email) for email in _users(count, "ours")]
        ours_db.session.add_all(users)
        ours_db.session.commit()
        paths = [f"/confirm/{flow.signer.issue(str(u.id), u.email)[0]}" for u in users]
        ours_db.session.remove()
        ours_db.engine.dispose()
    return paths


def catloader_available() -> str | None:
    try:
        found = importlib.util.find_spec("example_catloader") is not None
    except ImportError:
        found = False
    return None if found else "CatLoader (example_catloader) not available"


def _catloader_paths(instance: Path, count: int) -> list[str]:
    """Users in CatLoader's database and links for them, minted with its own key."""
    from example_catloader import create_app
    from example_catloader.models import User as CatUser
    from example_catloader.models import db as cat_db

    app = create_app(instance_path=str(instance))
    flow = get_flow(app)
    with app.app_context():
        users = [CatUser(email=email, password_hash="-") for email in _users(count, "cat")]
        cat_db.session.add_all(users)
        cat_db.session.commit()
        paths = [f"/confirm/{flow.signer.issue(str(u.id), u.email)[0]}" for u in users]
        stop_delivery(app)
        cat_db.session.remove()
        cat_db.engine.dispose()
    return paths


def run(context: BenchContext) -> ScenarioReport:
    seconds = context.size(4.0, 1.0, 0.5)
    rounds = context.size(5, 2, 1)
    links = 200
    report = ScenarioReport(
        KEY,
        TITLE,
        settings={
            "gunicorn_workers": WORKERS,
            "client_connections": CONCURRENCY,
            "seconds_per_round": seconds,
            "rounds": rounds,
        },
    )
    table = Table(
        f"GET of the confirm page (median of {rounds} rounds of {seconds:g} s, "
        f"{CONCURRENCY} connections)",
        [Column("rate", "req/s", 0), Column("p99", "p99 ms", 1)],
        baseline="floor",
    )
    report.tables.append(table)
    servers: list[Server] = []
    missing: list[Row] = []
    with ExitStack() as cleanup:

        def start(
            name: str, label: str, factory: str, env: dict[str, str], paths: list[str]
        ) -> None:
            process, port = gunicorn(context, name, factory, env)
            process.start()
            cleanup.callback(process.stop)
            servers.append(Server(name, label, process, port, paths))

        url = context.sqlite_url("served-floor")
        start(
            "floor",
            "floor: bare route, one-row read, small page",
            "benchmarks.apps:create_floor_from_env()",
            {"BENCH_DATABASE_URL": url},
            _floor_paths(url, links),
        )
        url = context.sqlite_url("served-ours")
        start(
            "ours",
            "benchmark app: the extension's confirm page",
            "benchmarks.apps:create_ours_from_env()",
            {"BENCH_DATABASE_URL": url},
            _ours_paths(url, links),
        )
        reason = catloader_available()
        if reason is None:
            instance = context.workdir / "catloader-instance"
            paths = _catloader_paths(instance, links)
            start(
                "catloader",
                "CatLoader's confirm page",
                "example_catloader:create_app()",
                {"FLASK_CATLOADER_INSTANCE_PATH": str(instance)},
                paths,
            )
        else:
            missing.append(Row.not_measured("catloader", "CatLoader's confirm page", reason))
        for server in servers:
            server.process.wait_for_port(server.port)

        def round_of(server: Server) -> Callable[[], LoadResult]:
            def measure() -> LoadResult:
                result = load(server.port, server.paths, seconds=seconds, concurrency=CONCURRENCY)
                server.errors += result.errors
                server.requests += result.requests
                server.first_error = server.first_error or result.first_error
                return result

            return measure

        context.log(f"{KEY}: {rounds} rounds of {seconds:g} s per server")
        results = interleaved({s.name: round_of(s) for s in servers}, rounds=rounds)
    for server in servers:
        per_round = results[server.name]
        row = Row(
            server.name,
            server.label,
            rounds={
                "rate": [r.rate for r in per_round],
                "p99": [
                    percentile(r.latencies, 99) * 1000 if r.latencies else 0.0 for r in per_round
                ],
            },
            extra={"requests": server.requests, "errors": server.errors},
        )
        if server.errors:
            row.note = f"{server.errors} errors of {server.requests} requests: {server.first_error}"
        table.rows.append(row)
    table.rows.extend(missing)
    report.targets.extend(_targets(table, servers))
    report.notes.append(
        "The load generator runs on the same 2 cores as the servers; sync workers close "
        "every connection, so each request also pays a TCP connect."
    )
    return report


def _targets(table: Table, servers: list[Server]) -> list[Target]:
    by_name: dict[str, Any] = {s.name: s for s in servers}
    targets = []
    for name, label in (("catloader", "CatLoader"), ("ours", "benchmark app")):
        server = by_name.get(name)
        if server is None:
            row_note = table.row(name).note if name == "catloader" else ""
            targets.append(
                Target(KEY, f"{label} confirm page: errors", "-", "0", None, note=row_note)
            )
            continue
        rate, p99 = table.value(name, "rate"), table.value(name, "p99")
        targets.append(
            Target(
                KEY,
                f"{label} confirm page: errors",
                f"{server.errors} of {server.requests} ({rate:.0f} req/s, p99 {p99:.1f} ms)",
                "0",
                server.errors == 0,
            )
        )
    return targets
