"""``flask confirm-mail stats``: the sign-up funnel per day, from the database."""

from __future__ import annotations

import json
from typing import Any

from flask import Flask

from tests.conftest import link_from
from tests.support.smtp_server import SMTPSink

HOUR = 3600
#: The clock fixture starts at 2030-03-17 17:46:40 UTC.
DAY_1, DAY_2 = "2030-03-17", "2030-03-18"
KEYS = ("signed_up", "delivered", "bounced", "confirmed_1h", "confirmed_24h", "confirmed_7d",
        "never_confirmed")  # fmt: skip


def _sign_up(app: Flask, smtp_server: SMTPSink, email: str, *, refused: bool = False) -> str:
    """Sign up ``email``; its confirmation link's path, or "" when the server refused it."""
    smtp_server.clear()
    if refused:
        smtp_server.fail_next(1, code=550)
    assert app.test_client().post("/signup", data={"email": email}).status_code == 201
    if refused:
        return ""
    return link_from(smtp_server.wait_for(1)[0]).removeprefix("https://app.example.com")


def _confirm(app: Flask, path: str) -> None:
    assert app.test_client().post(path).status_code == 200


def _funnel(app: Flask, smtp_server: SMTPSink, clock: Any) -> None:
    """Day 1: confirmed after 30 min, 5 h, 40 h (its link lasts 48 h), never, bounced;
    day 2: confirmed after 30 min, never."""
    links = [_sign_up(app, smtp_server, f"{name}@example.org") for name in ("a", "b", "c", "d")]
    _sign_up(app, smtp_server, "bounced@example.org", refused=True)
    clock.shift(HOUR // 2)
    _confirm(app, links[0])
    clock.shift(4.5 * HOUR)
    _confirm(app, links[1])
    clock.shift(19 * HOUR)  # day 2 (UTC), 24 h after the first sign-ups
    quick = _sign_up(app, smtp_server, "e@example.org")
    _sign_up(app, smtp_server, "f@example.org")
    clock.shift(HOUR // 2)
    _confirm(app, quick)
    clock.shift(15.5 * HOUR)
    _confirm(app, links[2])


def _day(date: str, counts: tuple[int | None, ...]) -> dict[str, Any]:
    return {"date": date, **dict(zip(KEYS, counts, strict=True))}


def _run(app: Flask, *args: str) -> str:
    result = app.test_cli_runner().invoke(args=["confirm-mail", "stats", *args])
    assert result.exit_code == 0, result.output
    return str(result.output)


def test_stats_count_the_funnel_per_day(
    make_app: Any, shape: str, smtp_server: SMTPSink, clock: Any
) -> None:
    app = make_app(shape=shape)
    _funnel(app, smtp_server, clock)
    timed = shape == "mixin"
    day_1 = (5, 4, 1, 1, 2, 3, 2) if timed else (5, 4, 1, None, None, None, 2)
    day_2 = (2, 2, 0, 1, 1, 1, 1) if timed else (2, 2, 0, None, None, None, 1)
    total = (7, 6, 1, 2, 3, 4, 3) if timed else (7, 6, 1, None, None, None, 3)

    assert json.loads(_run(app, "--json")) == [
        _day(DAY_1, day_1),
        _day(DAY_2, day_2),
    ]
    table = [line.split() for line in _run(app).splitlines()]
    assert table[0][:2] == ["date", "(UTC)"]
    cells = [["-" if n is None else str(n) for n in row] for row in (day_1, day_2, total)]
    assert table[1:] == [[DAY_1, *cells[0]], [DAY_2, *cells[1]], ["total", *cells[2]]]

    assert json.loads(_run(app, "--json", "--days", "1")) == [], "today (UTC) had no sign-up"
    assert json.loads(_run(app, "--json", "--days", "2")) == [_day(DAY_2, day_2)]


def test_stats_refuse_zero_days(make_app: Any) -> None:
    result = make_app().test_cli_runner().invoke(args=["confirm-mail", "stats", "--days", "0"])
    assert result.exit_code == 2 and "Invalid value for '--days'" in result.output
