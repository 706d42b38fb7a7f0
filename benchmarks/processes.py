"""Child processes the scenarios run: workers, gunicorn, the mailer, the SMTP sink.

Every child gets the repository root on ``PYTHONPATH`` (so ``benchmarks`` and
``tests.support`` import), writes its output to a log file in the run's work directory,
and is stopped by its own process id: SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

REPO_ROOT = Path(__file__).resolve().parent.parent


def child_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment, with the repository importable and unbuffered output."""
    env = dict(os.environ)
    paths = [str(REPO_ROOT)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    for name in ("FLASK_APP", "FLASK_DEBUG"):
        env.pop(name, None)
    env.update(extra or {})
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def flask_command(app_factory: str, *args: str) -> list[str]:
    """``python -m flask --app <app_factory> <args>``."""
    return [sys.executable, "-m", "flask", "--app", app_factory, *args]


class ChildProcess:
    """A child process whose output goes to ``log_path``.

    :param command: the program and its arguments.
    :param log_path: where its standard output and error go.
    :param env: extra environment variables.
    """

    def __init__(
        self,
        command: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.command = list(command)
        self.log_path = log_path
        self.env = child_environment(env)
        self.process: subprocess.Popen[bytes] | None = None
        #: Peak resident set size in bytes, known once the process was stopped or exited.
        self.peak_rss: int | None = None
        self.returncode: int | None = None

    def start(self) -> ChildProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command,
                cwd=REPO_ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def running(self) -> bool:
        return self.process is not None and self.returncode is None and self._poll() is None

    def _poll(self) -> int | None:
        assert self.process is not None
        if self.returncode is not None:
            return self.returncode
        pid, status, usage = os.wait4(self.process.pid, os.WNOHANG)
        if pid == 0:
            return None
        self._reaped(status, usage)
        return self.returncode

    def _reaped(self, status: int, usage: resource.struct_rusage) -> None:
        assert self.process is not None
        self.returncode = os.waitstatus_to_exitcode(status)
        self.process.returncode = self.returncode
        # ru_maxrss is in kilobytes on Linux.
        self.peak_rss = usage.ru_maxrss * 1024

    def wait_for_output(self, text: str, timeout: float = 30.0) -> None:
        """Wait until ``text`` appears in the log; fail if the process ends first."""
        deadline = time.monotonic() + timeout
        while text not in self.output():
            if not self.running():
                raise RuntimeError(self._failure(f"exited before saying {text!r}"))
            if time.monotonic() > deadline:
                raise RuntimeError(self._failure(f"did not say {text!r} within {timeout:g} s"))
            time.sleep(0.02)

    def wait_for_port(self, port: int, timeout: float = 30.0) -> None:
        """Wait until something accepts connections on 127.0.0.1:``port``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                    return
            except OSError:
                pass
            if not self.running():
                raise RuntimeError(self._failure(f"exited before listening on port {port}"))
            if time.monotonic() > deadline:
                raise RuntimeError(self._failure(f"did not listen on port {port}"))
            time.sleep(0.05)

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit by itself; return its exit code."""
        deadline = time.monotonic() + timeout
        while self._poll() is None:
            if time.monotonic() > deadline:
                raise RuntimeError(self._failure(f"did not finish within {timeout:g} s"))
            time.sleep(0.01)
        assert self.returncode is not None
        return self.returncode

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM, wait up to ``grace`` seconds, then SIGKILL; records the peak RSS."""
        if self.process is None or self._poll() is not None:
            return
        try:
            os.kill(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + grace
        while self._poll() is None:
            if time.monotonic() > deadline:
                os.kill(self.process.pid, signal.SIGKILL)
                _, status, usage = os.wait4(self.process.pid, 0)
                self._reaped(status, usage)
                break
            time.sleep(0.02)

    def _failure(self, what: str) -> str:
        tail = "\n".join(self.output().splitlines()[-30:])
        return f"{' '.join(self.command[:6])} {what}; its output ends with:\n{tail}"

    def __enter__(self) -> ChildProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
