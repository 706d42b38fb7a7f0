"""What the scenarios share: the run's sizes, the SMTP sink, child processes, the table."""

from __future__ import annotations

import asyncio
import email
import email.policy
import math
import multiprocessing
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).absolute().parent.parent
#: A link token as the emails carry it: ``/confirm/<header>.<payload>.<signature>``.
LINK = re.compile(r"/confirm/([\w-]+\.[\w-]+\.[\w-]+)")


def log(message: str) -> None:
    """Progress, on standard error."""
    print(f"  .. {message}", file=sys.stderr, flush=True)


def percentile(values: Sequence[float], p: float) -> float:
    """The nearest-rank ``p``-th percentile (of 100 values, p99 is the second largest)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:.0f} s for {what}")
        time.sleep(0.01)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- the run --------------------------------------------------------------------------------


@dataclass
class Guard:
    """One guard of issue 33: ``ok`` is ``None`` when it could not be measured."""

    name: str
    figure: str
    rule: str
    ok: bool | None

    def line(self) -> str:
        verdict = {True: "PASS", False: "FAIL", None: "SKIP"}[self.ok]
        return f"{verdict}  {self.name}: {self.figure} (guard: {self.rule})"


@dataclass
class Run:
    """The run's size, its work directory and the PostgreSQL server (if any)."""

    quick: bool
    workdir: Path
    postgres: str | None = None
    postgres_missing: str = "not asked for"
    _names: int = field(default=0, repr=False)

    def size(self, full: Any, quick: Any) -> Any:
        return quick if self.quick else full

    def path(self, name: str) -> Path:
        self._names += 1
        return self.workdir / f"{self._names:02d}-{name}"

    def sqlite(self, name: str) -> str:
        return f"sqlite:///{self.path(name)}.db"

    def postgresql(self, name: str) -> str | None:
        """A fresh, empty database on the run's server, or ``None`` without one."""
        if self.postgres is None:
            return None
        import psycopg

        self._names += 1
        name = f"bench_{self._names:02d}_{name}"
        with psycopg.connect(self.postgres, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        base = self.postgres.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
        return f"{base}/{name}"


def print_table(title: str, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """A plain text table: the first column left-aligned, the others right-aligned."""
    cells = [list(header)] + [[_cell(value) for value in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    print(f"\n{title}")
    for number, row in enumerate(cells):
        first = row[0].ljust(widths[0])
        print(
            "  "
            + "  ".join([first] + [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)])
        )
        if number == 0:
            print("  " + "  ".join("-" * w for w in widths))
    sys.stdout.flush()


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.0f}" if value >= 100 else f"{value:.2f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


# --- the SMTP sink --------------------------------------------------------------------------


class Sink:
    """aiosmtpd in its own process, so its CPU is not the measured process's.

    Each message is answered ``250`` after ``delay`` seconds (changeable while it runs);
    :meth:`records` gives, per accepted message, when it was accepted (``time.monotonic``,
    comparable across processes on Linux), its recipient, and with ``links=True`` the
    link token it carries.
    """

    def __init__(self, run: Run, delay: float = 0.0, *, links: bool = False) -> None:
        context = multiprocessing.get_context("spawn")
        self._delay = context.Value("d", delay, lock=False)
        self._count = context.Value("q", 0)
        self._stop = context.Event()
        self._ready = context.Event()
        self.path = run.path("sink.tsv")
        self.port = free_port()
        self._process = context.Process(
            target=_serve_smtp,
            args=(self.port, self.path, links, self._delay, self._count, self._stop, self._ready),
            daemon=True,
        )

    def __enter__(self) -> Sink:
        self._process.start()
        if not self._ready.wait(30):
            raise RuntimeError("the SMTP sink did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._process.join(10)
        if self._process.is_alive():
            self._process.kill()

    @property
    def delay(self) -> float:
        return float(self._delay.value)

    @delay.setter
    def delay(self, seconds: float) -> None:
        self._delay.value = seconds

    def count(self) -> int:
        return int(self._count.value)

    def wait_for(self, count: int, timeout: float) -> None:
        wait_until(lambda: self.count() >= count, timeout, f"{count} messages at the sink")

    def records(self) -> list[tuple[float, str, str]]:
        """``(accepted_at, recipient, token)`` per message, in the order accepted."""
        with open(self.path, encoding="utf-8") as lines:
            rows = [line.rstrip("\n").split("\t") for line in lines]
        return [(float(at), rcpt, token) for at, rcpt, token in rows]

    def accepted_at(self) -> dict[str, float]:
        return {rcpt: at for at, rcpt, _ in self.records()}


def _serve_smtp(
    port: int, path: Path, links: bool, delay: Any, count: Any, stop: Any, ready: Any
) -> None:
    from aiosmtpd.controller import Controller

    out = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - closed at exit

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            if delay.value:
                await asyncio.sleep(delay.value)
            token = ""
            if links:
                message = email.message_from_bytes(envelope.content, policy=email.policy.default)
                for part in message.walk():
                    if part.get_content_maintype() == "text":
                        match = LINK.search(part.get_content())
                        if match:
                            token = match.group(1)
                            break
            with count.get_lock():
                count.value += 1
            for rcpt in envelope.rcpt_tos:
                out.write(f"{time.monotonic()}\t{rcpt}\t{token}\n")
            return "250 OK"

    controller = Controller(Handler(), hostname="127.0.0.1", port=port, ready_timeout=30)
    controller.start()
    ready.set()
    stop.wait()
    controller.stop()
    out.close()


def smtp_ceiling(sink: Sink, messages: int) -> float:
    """Messages per second over one reused smtplib connection: one connection's ceiling."""
    import smtplib

    body = b"Subject: ceiling\r\n\r\nThe floor of one SMTP connection.\r\n"
    with smtplib.SMTP("127.0.0.1", sink.port, timeout=30) as smtp:
        smtp.sendmail("noreply@app.example.com", ["ceiling@example.org"], body)
        start = time.perf_counter()
        for _ in range(messages):
            smtp.sendmail("noreply@app.example.com", ["ceiling@example.org"], body)
        return messages / (time.perf_counter() - start)


def steady_rate(times: Sequence[float], in_flight: int) -> float:
    """Messages per second once the first wave (``in_flight`` messages) is in."""
    times = sorted(times)
    skip = min(max(in_flight, 1), len(times) - 1)
    return (len(times) - skip) / (times[-1] - times[skip - 1])


# --- child processes ------------------------------------------------------------------------


def child_env(**extra: object) -> dict[str, str]:
    path = os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(ROOT)]))
    env = {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}
    env.update({key: str(value) for key, value in extra.items()})
    return env


class Child:
    """A process whose output goes to a log file; stopped with SIGTERM at exit."""

    def __init__(self, run: Run, name: str, command: list[str], ready: str, **env: object):
        self.command = command
        self.ready = ready
        self.env = child_env(**env)
        self.log_path = run.path(f"{name}.log")
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Child:
        with open(self.log_path, "wb") as out:
            self.process = subprocess.Popen(
                self.command, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        try:
            wait_until(self._is_ready, 60, f"{' '.join(self.command[1:6])} to start")
        except Exception as error:
            self.__exit__()
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{error}; its output ended with:\n{tail}") from None
        return self

    def _is_ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"{' '.join(self.command[1:6])} exited")
        return self.ready in self.log_path.read_text(errors="replace")

    def rss_mib(self) -> float:
        assert self.process is not None
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]

    def __exit__(self, *exc: object) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def worker(run: Run, database_url: str, smtp_port: int, concurrency: int = 8) -> Child:
    """One ``flask confirm-mail worker`` process on :func:`benchmarks.apps.worker_app`."""
    command = [sys.executable, "-m", "flask", "--app", "benchmarks.apps:worker_app"]
    return Child(
        run,
        "worker",
        [*command, "confirm-mail", "worker"],
        "started",
        BENCH_DATABASE_URL=database_url,
        BENCH_SMTP_PORT=smtp_port,
        BENCH_CONCURRENCY=concurrency,
    )


class Server:
    """``bash scripts/lib/<name>.sh serve``: prints the server's URL; stops when stdin closes."""

    def __init__(self, script: str) -> None:
        self.script = ROOT / "scripts" / "lib" / script
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> str | None:
        """The server's URL, or ``None`` (the script has said why on stderr)."""
        self.process = subprocess.Popen(
            ["bash", str(self.script), "serve"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        url = self.process.stdout.readline().strip()
        return url or None

    def stop(self) -> None:
        if self.process is not None:
            self.process.communicate(timeout=60)
