"""Confirm throughput: ``POST /confirm/<token>`` over the floor, a bare conditional UPDATE.

Each request confirms a different unconfirmed user, through Flask's test client, in
interleaved rounds, on a SQLite file and (when available) on PostgreSQL:

- the floor: a Flask route that makes the one-row ``UPDATE users SET email_confirmed_at
  = now WHERE id = ? AND email_confirmed_at IS NULL``, commits and answers a line;
- ours: what the button of the confirm page posts: the token checked, the conditional
  UPDATE, the commit, the signal, the HTML page. The tokens are read from the emails the
  extension sent to the sink before the clock starts.
"""

from __future__ import annotations

import time

from flask import Flask

from benchmarks.apps import FloorUser, create_floor, create_ours, dispose, enqueue, floor_db
from benchmarks.harness import Guard, Run, Sink, log, median, print_table

GUARD = 0.8


def confirmations_per_second(app: Flask, paths: list[str]) -> float:
    client = app.test_client()
    start = time.perf_counter()
    for path in paths:
        response = client.post(path)
        if response.status_code != 200:
            raise RuntimeError(f"{app.name}: POST {path[:40]}... answered {response.status_code}")
    return len(paths) / (time.perf_counter() - start)


def measure(run: Run, database: str, url: str, floor_url: str) -> Guard:
    rounds, per_round = run.size(5, 2), run.size(200, 40)
    count = (rounds + 1) * per_round  # a warm-up round, then the measured ones
    with Sink(run, links=True) as sink:
        ours = create_ours(url, smtp_port=sink.port)
        enqueue(ours, [f"confirm{i}@example.org" for i in range(count)])
        log(f"confirm ({database}): waiting for {count} emails")
        sink.wait_for(count, 300)
        tokens = [f"/confirm/{token}" for _, _, token in sink.records()]
    floor = create_floor(floor_url)
    with floor.app_context():
        users = [FloorUser(email=f"confirm{i}@example.org") for i in range(count)]
        floor_db.session.add_all(users)
        floor_db.session.commit()
        ids = [f"/confirm/{user.id}" for user in users]
    rates: dict[str, list[float]] = {"floor": [], "ours": []}
    log(f"confirm ({database}): {rounds} rounds of {per_round} confirmations")
    for number in range(rounds + 1):
        batch = slice(number * per_round, (number + 1) * per_round)
        floor_rate = confirmations_per_second(floor, ids[batch])
        ours_rate = confirmations_per_second(ours, tokens[batch])
        if number:
            rates["floor"].append(floor_rate)
            rates["ours"].append(ours_rate)
    dispose(ours)
    dispose(floor)
    ratio = median([o / f for o, f in zip(rates["ours"], rates["floor"], strict=True)])
    print_table(
        f"Confirmations per second, {database} (median of {rounds} rounds of {per_round})",
        ["", "confirm/s", "ratio"],
        [
            ["floor: bare conditional UPDATE", median(rates["floor"]), 1.0],
            ["ours: POST /confirm/<token>", median(rates["ours"]), ratio],
        ],
    )
    return Guard(
        f"confirm throughput over the floor, {database}", f"{ratio:.2f}", ">= 0.8", ratio >= GUARD
    )


def run(run: Run) -> list[Guard]:
    guards = [measure(run, "SQLite", run.sqlite("confirm"), run.sqlite("confirm-floor"))]
    url, floor_url = run.postgresql("confirm"), run.postgresql("confirm_floor")
    if url is None or floor_url is None:
        print(f"\nConfirm throughput on PostgreSQL: skipped ({run.postgres_missing})")
        guards.append(Guard("confirm throughput over the floor, PostgreSQL", "-", ">= 0.8", None))
    else:
        guards.append(measure(run, "PostgreSQL", url, floor_url))
    return guards
