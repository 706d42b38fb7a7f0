"""``flask confirm-mail worker`` processes on the benchmark app (``worker`` delivery)."""

from __future__ import annotations

from benchmarks.context import BenchContext
from benchmarks.processes import ChildProcess, flask_command

WORKER_APP = "benchmarks.apps:create_ours_from_env()"


def worker_process(
    context: BenchContext,
    name: str,
    *,
    database_url: str,
    smtp_port: int,
    poll_interval: float | None = None,
    once: bool = False,
    concurrency: int | None = None,
) -> ChildProcess:
    """A worker draining the outbox of ``database_url`` to the SMTP server on ``smtp_port``.

    Not started yet; with ``once`` it exits when nothing is due (``--once``); with
    ``concurrency``, its ``CONFIRM_MAIL_CONCURRENCY`` (else the default).
    """
    args = ["confirm-mail", "worker"]
    if once:
        args.append("--once")
    if poll_interval is not None:
        args += ["--poll-interval", repr(poll_interval)]
    env = {"BENCH_DATABASE_URL": database_url, "BENCH_SMTP_PORT": str(smtp_port)}
    if concurrency is not None:
        env["BENCH_CONCURRENCY"] = str(concurrency)
    return ChildProcess(flask_command(WORKER_APP, *args), log_path=context.log_path(name), env=env)
