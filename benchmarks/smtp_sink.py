"""The tests' SMTP server (``tests/support/smtp_server.py``), run in its own process.

In its own process the server's work (aiosmtpd, parsing each message) does not compete
for the interpreter lock of the process being measured; it runs on the other core.
It counts messages instead of keeping them, so a long run does not grow it.

Run directly, ``python -m benchmarks.smtp_sink --delay 0.3`` prints ``port <n>``, then
answers ``count`` with the number of messages received so far, takes ``delay <seconds>``,
and stops when its standard input closes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import threading
import time
from types import TracebackType
from typing import Any

from benchmarks.processes import REPO_ROOT, child_environment
from tests.support.smtp_server import SMTPSink


class _CountingHandler:
    """Waits ``delay``, counts, answers 250: no parsing, so a fast sender is not held up
    by the server's own CPU (parsing each message cost the sink about 1 ms)."""

    def __init__(self, sink: CountingSink) -> None:
        self._sink = sink

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self._sink.delay > 0:
            await asyncio.sleep(self._sink.delay)
        with self._sink._lock:
            self._sink.count += 1
            if self._sink.arrivals is not None:
                for recipient in envelope.rcpt_tos:
                    self._sink.arrivals[recipient] = time.monotonic()
        return "250 2.0.0 OK: queued"


class CountingSink(SMTPSink):
    """An :class:`SMTPSink` that counts the messages it accepts and keeps none."""

    handler_class = _CountingHandler

    def __init__(self, *, delay: float = 0.0) -> None:
        super().__init__(delay=delay)
        self.count = 0
        #: ``time.monotonic()`` (one clock for every process of the machine) at which
        #: each recipient's last message was accepted, once ``arrivals`` was asked for.
        self.arrivals: dict[str, float] | None = None


class SinkProcess:
    """A :class:`CountingSink` on 127.0.0.1 in a child process.

    :param delay: seconds the server waits before answering each DATA command.
    """

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.host = "127.0.0.1"
        self.port = 0
        self._process: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()

    def start(self) -> SinkProcess:
        command = [sys.executable, "-m", "benchmarks.smtp_sink", "--delay", repr(self.delay)]
        process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=child_environment(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._process = process
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("port "):
            self.stop()
            raise RuntimeError(f"the SMTP sink did not start (said {line!r})")
        self.port = int(line.split()[1])
        return self

    def _ask(self, command: str) -> str:
        process = self._process
        assert process is not None and process.stdin is not None and process.stdout is not None
        with self._lock:
            process.stdin.write(command + "\n")
            process.stdin.flush()
            return process.stdout.readline().strip()

    def count(self) -> int:
        """How many messages the server accepted so far."""
        return int(self._ask("count"))

    def arrivals(self) -> dict[str, float]:
        """When each recipient's message was accepted (``time.monotonic()``), counted
        from the first call on; the first call returns ``{}``."""
        return {str(k): float(v) for k, v in json.loads(self._ask("arrivals")).items()}

    def set_delay(self, delay: float) -> None:
        self._ask(f"delay {delay!r}")
        self.delay = delay

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        assert process.stdin is not None
        try:
            process.stdin.close()
        except OSError:
            pass
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()

    def __enter__(self) -> SinkProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    sink = CountingSink(delay=args.delay)
    sink.start()
    try:
        print(f"port {sink.port}", flush=True)
        for line in sys.stdin:
            command, _, value = line.strip().partition(" ")
            if command == "count":
                with sink._lock:
                    count = sink.count
                print(count, flush=True)
            elif command == "arrivals":
                with sink._lock:
                    arrivals = dict(sink.arrivals or {})
                    if sink.arrivals is None:
                        sink.arrivals = {}
                print(json.dumps(arrivals), flush=True)
            elif command == "delay":
                sink.delay = float(value)
                print("ok", flush=True)
            else:
                print(f"unknown command {command!r}", flush=True)
    finally:
        sink.stop()


if __name__ == "__main__":
    main()
