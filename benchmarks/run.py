"""Run the scenarios, print a table per scenario and the summary, write the JSON.

    python -m benchmarks                  # everything (about 6 minutes on 2 cores)
    python -m benchmarks --quick          # smaller sizes, under a minute
    python -m benchmarks --only growth memory
    python -m benchmarks --no-postgres    # skip what needs PostgreSQL
    python -m benchmarks --only delivery_throughput --smtp-delay-ms 100  # a slow provider

A full run of every scenario (without ``--smtp-delay-ms``) writes
``benchmarks/results/latest.json``; other runs write ``benchmarks/results/scratch.json``
unless ``--json`` says where. PostgreSQL comes from ``CONFIRM_MAIL_TEST_POSTGRES_URL`` or
is started for the run (see :mod:`benchmarks.postgres`). Exit status 1 means a scenario
failed to run, not that a target was missed.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from benchmarks import (
    celery_peer,
    confirm_throughput,
    delivery_throughput,
    growth,
    handoff_latency,
    mailer_workers,
    memory,
    scale_out,
    served,
    signup_latency,
)
from benchmarks.context import BenchContext
from benchmarks.postgres import PostgresServer
from benchmarks.report import (
    ScenarioReport,
    render_scenario,
    render_summary,
    results_json,
    write_json,
)

#: Every scenario, in the order of the issue.
SCENARIOS: dict[str, ModuleType] = {
    module.KEY: module
    for module in (
        signup_latency,
        confirm_throughput,
        delivery_throughput,
        scale_out,
        growth,
        served,
        memory,
        mailer_workers,
        handoff_latency,
        celery_peer,
    )
}
#: Scenarios that use PostgreSQL (for all or some of their figures).
NEEDS_POSTGRES = {
    confirm_throughput.KEY,
    scale_out.KEY,
    growth.KEY,
    handoff_latency.KEY,
    celery_peer.KEY,
}
RESULTS_DIR = Path(__file__).resolve().parent / "results"
PREAMBLE = (
    "Each figure is the median of its rounds, after a warm-up; candidates run their rounds\n"
    "interleaved. ratio = the median over rounds of row / baseline in the same round.\n"
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Measure flask-confirm-mail against Flask-Security, the original design "
        "and the floor of Flask itself.",
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes, under a minute")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=list(SCENARIOS),
        metavar="SCENARIO",
        help=f"run only these scenarios: {', '.join(SCENARIOS)}",
    )
    parser.add_argument("--no-postgres", action="store_true", help="skip PostgreSQL figures")
    parser.add_argument("--json", type=Path, help="where to write the results")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    parser.add_argument(
        "--smtp-delay-ms",
        type=float,
        default=0.0,
        metavar="MS",
        help="delivery_throughput only: the SMTP server waits this long before answering "
        "each message (default 0: the loopback floor)",
    )
    return parser.parse_args(argv)


def run_scenarios(
    context: BenchContext, keys: Sequence[str], *, echo: bool = True
) -> tuple[list[ScenarioReport], bool]:
    """Run ``keys`` in order (printing each table when ``echo``); also say if any crashed."""
    reports: list[ScenarioReport] = []
    crashed = False
    for key in keys:
        module = SCENARIOS[key]
        started = time.perf_counter()
        context.log(f"{key}: starting")
        try:
            report: ScenarioReport = module.run(context)
        except Exception as exc:  # noqa: BLE001 - one broken scenario must not hide the rest
            crashed = True
            traceback.print_exc()
            report = ScenarioReport(key, module.TITLE, skipped=f"failed: {exc}")
        report.seconds = time.perf_counter() - started
        reports.append(report)
        if echo:
            print(render_scenario(report), flush=True)
    return reports, crashed


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    keys = args.only or list(SCENARIOS)
    from flask_confirm_mail import __version__

    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="confirm-mail-bench-"))
    context = BenchContext(
        quick=args.quick,
        workdir=workdir,
        verbose=not args.quiet,
        delivery_smtp_delay=args.smtp_delay_ms / 1000,
    )
    postgres: PostgresServer | None = None
    if args.no_postgres:
        context.postgres_missing = "no PostgreSQL: --no-postgres"
    elif NEEDS_POSTGRES.intersection(keys):
        postgres, where = PostgresServer.find_or_start()
        context.postgres = postgres
        context.postgres_missing = where
        context.log(where)
    mode = "quick" if args.quick else "full"
    print(f"flask-confirm-mail {__version__} benchmarks ({mode} run)", flush=True)
    print(PREAMBLE, flush=True)
    try:
        reports, crashed = run_scenarios(context, keys)
    finally:
        if postgres is not None:
            postgres.close()
        if args.keep:
            print(f"work directory kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    seconds = time.perf_counter() - started
    print(render_summary(reports))
    print(f"{mode} run took {seconds:.0f} s")
    full = not args.quick and keys == list(SCENARIOS) and not args.smtp_delay_ms
    path = args.json or RESULTS_DIR / ("latest.json" if full else "scratch.json")
    write_json(results_json(reports, quick=args.quick, version=__version__, seconds=seconds), path)
    print(f"results written to {path}")
    return 1 if crashed else 0
