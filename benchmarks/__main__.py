"""``python -m benchmarks [NAME ...] [--quick]``: run the scenarios, print a verdict per guard.

Exit status: 0 when every guard measured held, 1 when one failed, 2 when a scenario
could not run.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import date
from pathlib import Path

from benchmarks import confirm, delivery, growth, handoff, peers, signup
from benchmarks.harness import Guard, Run, Server, log

SCENARIOS: dict[str, Callable[[Run], list[Guard]]] = {
    "signup": signup.run,
    "confirm": confirm.run,
    "delivery": delivery.per_worker,
    "scale_out": delivery.scale_out,
    "handoff": handoff.run,
    "growth": growth.growth,
    "memory": growth.memory,
    "celery": peers.celery_peer,
}
NEEDS_POSTGRES = {"confirm", "scale_out", "handoff"}
POSTGRES_URL_ENV = "CONFIRM_MAIL_TEST_POSTGRES_URL"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="NAME", help=", ".join(SCENARIOS))
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--no-postgres", action="store_true", help="skip what needs PostgreSQL")
    args = parser.parse_args(argv)
    names = args.names or list(SCENARIOS)
    if unknown := sorted(set(names) - set(SCENARIOS)):
        parser.error(f"no scenario {', '.join(unknown)}: choose from {', '.join(SCENARIOS)}")
    from flask_confirm_mail import __version__

    print(
        f"flask-confirm-mail {__version__} benchmarks, {'quick' if args.quick else 'full'} run, "
        f"{date.today()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    workdir = Path(tempfile.mkdtemp(prefix="confirm-mail-bench-"))
    run = Run(quick=args.quick, workdir=workdir)
    postgres = Server("postgres.sh")
    if args.no_postgres:
        run.postgres_missing = "--no-postgres"
    elif NEEDS_POSTGRES.intersection(names):
        run.postgres = os.environ.get(POSTGRES_URL_ENV) or postgres.start()
        run.postgres_missing = "PostgreSQL is not installed or did not start"
    guards: list[Guard] = []
    crashed = []
    started = time.perf_counter()
    try:
        for name in names:
            log(f"{name}: starting")
            try:
                guards += SCENARIOS[name](run)
            except Exception:  # noqa: BLE001 - one broken scenario must not hide the others
                traceback.print_exc()
                crashed.append(name)
    finally:
        postgres.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\nGuards ({time.perf_counter() - started:.0f} s):")
    for guard in guards:
        print(guard.line())
    for name in crashed:
        print(f"ERROR {name}: the scenario did not run (traceback above)")
    sys.stdout.flush()
    return 2 if crashed else 1 if any(guard.ok is False for guard in guards) else 0


if __name__ == "__main__":
    sys.exit(main())
