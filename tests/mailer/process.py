"""The mailer as a real HTTP server process on loopback, for the end-to-end tests."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

SERVERS = ("gunicorn", "flask")


def _gunicorn_has_control_socket() -> bool:
    """gunicorn 25.1 added a control socket at a fixed path; parallel runs would share it."""
    import gunicorn.config

    return hasattr(gunicorn.config, "ControlSocketDisable")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class MailerAnswer:
    """One HTTP answer of the mailer."""

    def __init__(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"<MailerAnswer {self.status} {self.body[:200]!r}>"


class MailerProcess:
    """``gunicorn 'flask_confirm_mail.mailer:create_app()'`` or ``flask run``, as a child.

    Its stdout and stderr (access and application logs) go to ``log_path``. Every token
    sent through :meth:`post` / :meth:`get` is remembered in :attr:`tokens`, so a test can
    check that none reached the log.
    """

    def __init__(
        self,
        env: Mapping[str, str],
        log_path: Path,
        *,
        server: str = "gunicorn",
        workers: int = 1,
        threads: int = 4,
    ):
        assert server in SERVERS
        self.workers = workers
        self.threads = threads
        self.env = dict(env)
        self.log_path = log_path
        self.server = server
        self.port = free_port()
        self.tokens: list[str] = []
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def command(self) -> list[str]:
        if self.server == "flask":
            return [
                sys.executable, "-m", "flask", "--app", "flask_confirm_mail.mailer",
                "run", "--host", "127.0.0.1", "--port", str(self.port), "--no-reload",
                "--without-threads",
            ]  # fmt: skip
        command = [
            sys.executable, "-m", "gunicorn",
            "--bind", f"127.0.0.1:{self.port}",
            "--workers", str(self.workers), "--threads", str(self.threads),
            "--access-logfile", "-", "--error-logfile", "-",
            "--access-logformat",
            '%(h)s "%(r)s" %(s)s path=%(U)s auth="%({authorization}i)s" ref="%(f)s" '
            "pid=%(p)s",
        ]  # fmt: skip
        if _gunicorn_has_control_socket():
            command.append("--no-control-socket")
        return [*command, "flask_confirm_mail.mailer:create_app()"]

    def start(self, timeout: float = 20.0) -> None:
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        env.pop("FLASK_APP", None)
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                self.command(), env=env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"The mailer exited at start-up:\n{self.log()}")
            try:
                if self.request("GET", "/v1/health").status == 200:
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"The mailer did not answer within {timeout} s:\n{self.log()}")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        # flask run exits cleanly (atexit: SMTP QUIT) on SIGINT only.
        process.send_signal(signal.SIGINT if self.server == "flask" else signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def request(
        self, method: str, path: str, headers: Mapping[str, str] | None = None
    ) -> MailerAnswer:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
        try:
            conn.request(method, path, headers=dict(headers or {}))
            response = conn.getresponse()
            return MailerAnswer(response.status, dict(response.headers), response.read())
        finally:
            conn.close()

    def post(self, token: str, path: str = "/v1/messages") -> MailerAnswer:
        """``POST /v1/messages`` with ``token`` as the bearer token."""
        self.tokens.append(token)
        return self.request("POST", path, {"Authorization": f"Bearer {token}"})

    def get(self, blueprint: str, token: str) -> MailerAnswer:
        """The original client's call: ``GET <url><blueprint>/<token>``."""
        self.tokens.append(token)
        return self.request("GET", f"/{blueprint}/{token}")

    def worker_pids(self, path: str = "/v1/messages") -> set[str]:
        """The gunicorn worker processes that answered requests to ``path`` so far."""
        return set(re.findall(rf'"[A-Z]+ {re.escape(path)} [^"]*".* pid=<?(\d+)>?', self.log()))

    def leaked_tokens(self) -> list[str]:
        """The tokens sent so far (or their signatures) found in the log: should be none."""
        text = self.log()
        leaked = []
        for token in self.tokens:
            signature = token.rpartition(".")[2]
            if token in text or (len(signature) >= 16 and signature in text):
                leaked.append(token)
        return leaked
