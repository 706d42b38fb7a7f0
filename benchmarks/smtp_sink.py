"""The benchmarks' SMTP server: answers like a provider that takes ``delay`` seconds per
message, counts what it accepts and keeps nothing, in its own process.

In its own process the server's work does not compete for the interpreter lock of the
process being measured. It is a small asyncio protocol rather than the tests' aiosmtpd
server (``tests/support/smtp_server.py``), which cost three times its CPU per message on
the two cores the measured processes share with it (``--cpu`` below).

Run directly, ``python -m benchmarks.smtp_sink --delay 0.3`` prints ``port <n>``, then
answers ``count`` with the number of messages received so far, takes ``delay <seconds>``,
and stops when its standard input closes. ``python -m benchmarks.smtp_sink --cpu``
prints the CPU per message of this server and of aiosmtpd with a counting handler, 2,000
messages from 8 connections each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import smtplib
import subprocess
import sys
import threading
import time
from types import TracebackType
from typing import Any

from benchmarks.processes import REPO_ROOT, child_environment

_EHLO_ANSWER = (
    b"250-localhost\r\n250-PIPELINING\r\n250-SIZE 33554432\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n"
)


class _CountingSession(asyncio.Protocol):
    """One client's SMTP session: every command answered from a table, DATA read up to
    its terminating dot, counted and answered ``250`` after the sink's delay. It offers
    PIPELINING, as Gmail, Amazon SES, SendGrid and Postmark do, and writes the answers to
    a group of commands (``MAIL``, ``RCPT``, ``DATA``) together.

    Written for the benchmarks instead of aiosmtpd (which the tests keep): on the two
    cores that the measured processes share with it, aiosmtpd took 0.62 ms of CPU per
    message and this 0.22 ms (``python -m benchmarks.smtp_sink --cpu``), and a sink's CPU
    is no part of what a sender costs against a remote provider.
    """

    def __init__(self, sink: CountingSink) -> None:
        self._sink = sink
        self._buffer = b""
        self._in_data = False
        self._waiting = False
        self._quitting = False
        self._recipients: list[str] = []
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        transport.write(b"220 localhost ESMTP benchmark sink\r\n")

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        self._process()

    def _process(self) -> None:
        transport = self._transport
        while transport is not None and not self._waiting and not transport.is_closing():
            if self._in_data:
                end = self._buffer.find(b"\r\n.\r\n")
                if end < 0 and not self._buffer.startswith(b".\r\n"):
                    return
                self._buffer = self._buffer[end + 5 if end >= 0 else 3 :]
                self._in_data = False
                self._waiting = True
                asyncio.get_running_loop().call_later(self._sink.delay, self._accepted)
                return
            answers = []
            while not self._in_data and not self._quitting:
                line, found, rest = self._buffer.partition(b"\r\n")
                if not found:
                    break
                self._buffer = rest
                answers.append(self._answer(line.decode("utf-8", "replace")))
            if answers:
                transport.write(b"".join(answers))
            if self._quitting:
                transport.close()
            if not self._in_data:
                return

    def _answer(self, line: str) -> bytes:
        verb = line[:4].upper()
        if verb in ("EHLO", "HELO"):
            return _EHLO_ANSWER
        if verb == "MAIL":
            self._recipients = []
            return b"250 OK\r\n"
        if verb == "RCPT":
            self._recipients.append(line.partition("<")[2].partition(">")[0])
            return b"250 OK\r\n"
        if verb == "DATA":
            self._in_data = True
            return b"354 End data with <CR><LF>.<CR><LF>\r\n"
        if verb in ("RSET", "NOOP"):
            return b"250 OK\r\n"
        if verb == "QUIT":
            self._quitting = True  # closed once this answer, after the group's, is written
            return b"221 Bye\r\n"
        return b"502 Command not implemented\r\n"

    def _accepted(self) -> None:
        sink = self._sink
        with sink._lock:
            sink.count += 1
            if sink.arrivals is not None:
                for recipient in self._recipients:
                    sink.arrivals[recipient] = time.monotonic()
        self._waiting = False
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(b"250 2.0.0 OK: queued\r\n")
            self._process()


class CountingSink:
    """An SMTP server on 127.0.0.1 that counts the messages it accepts and keeps none;
    its event loop runs in a thread of this process.

    :param delay: seconds to wait before answering each message's DATA.
    """

    def __init__(self, *, delay: float = 0.0) -> None:
        self.delay = delay
        self.count = 0
        #: ``time.monotonic()`` (one clock for every process of the machine) at which
        #: each recipient's last message was accepted, once ``arrivals`` was asked for.
        self.arrivals: dict[str, float] | None = None
        self.port = 0
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self) -> None:
        server = asyncio.run_coroutine_threadsafe(self._serve(), self._loop)
        self._thread.start()
        self.port = server.result(10)

    async def _serve(self) -> int:
        server = await self._loop.create_server(
            lambda: _CountingSession(self), "127.0.0.1", 0, backlog=1024
        )
        port: int = server.sockets[0].getsockname()[1]
        return port

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


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

    def start(self, *, server: str = "lean") -> SinkProcess:
        """Start the child; ``server="aiosmtpd"`` runs aiosmtpd instead (``--cpu``)."""
        command = [sys.executable, "-m", "benchmarks.smtp_sink", "--delay", repr(self.delay)]
        command += ["--server", server]
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


class _AiosmtpdCounting:
    """aiosmtpd's handler for ``--server aiosmtpd``: counts, keeps nothing."""

    def __init__(self, sink: Any) -> None:
        self._sink = sink

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self._sink.delay > 0:
            await asyncio.sleep(self._sink.delay)
        with self._sink._lock:
            self._sink.count += 1
        return "250 2.0.0 OK: queued"


def _aiosmtpd_sink(delay: float) -> Any:
    from tests.support.smtp_server import SMTPSink

    class Counting(SMTPSink):
        handler_class = _AiosmtpdCounting

        def __init__(self) -> None:
            super().__init__(delay=delay)
            self.count = 0
            self.arrivals: dict[str, float] | None = None

    return Counting()


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def compare_cpu(count: int = 2000, connections: int = 8) -> None:
    """Print each server's CPU per message for the same load."""
    from concurrent.futures import ThreadPoolExecutor

    head = b"Subject: x\r\nFrom: a@example.org\r\nTo: b@example.org\r\n\r\n"
    message = head + (b"x" * 70 + b"\r\n") * 40
    print(f"SMTP sink CPU per message ({count} messages over {connections} connections):")
    for server in ("aiosmtpd", "lean"):
        sink = SinkProcess().start(server=server)
        try:
            assert sink._process is not None
            before = _cpu_seconds(sink._process.pid)

            def send(index: int, port: int = sink.port) -> None:
                with smtplib.SMTP("127.0.0.1", port) as client:
                    for number in range(count // connections):
                        recipient = f"c{index}-{number}@example.org"
                        client.sendmail("a@example.org", [recipient], message)

            with ThreadPoolExecutor(connections) as pool:
                list(pool.map(send, range(connections)))
            if sink.count() != count:
                raise RuntimeError(f"{server} accepted {sink.count()} of {count}")
            cpu = (_cpu_seconds(sink._process.pid) - before) / count
        finally:
            sink.stop()
        print(f"  {server:10} {cpu * 1000:6.3f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--server", choices=("lean", "aiosmtpd"), default="lean")
    parser.add_argument("--cpu", action="store_true", help="compare the servers' CPU")
    args = parser.parse_args()
    if args.cpu:
        compare_cpu()
        return
    sink = CountingSink(delay=args.delay) if args.server == "lean" else _aiosmtpd_sink(args.delay)
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
