"""Family 3 of security round 2: no token in gunicorn's output, at debug level with the
access log on, however the confirm route is spelled, exceptions on the route included.

gunicorn runs the test app whose confirm route raises with the token in the exception's
message (:mod:`tests.security.broken_app`), configured by CatLoader's gunicorn file, the
documented way (``docs/security.rst``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from flask_confirm_mail.tokens import LinkTokenSigner
from tests.apps import LINK_SECRET
from tests.mailer.process import free_port
from tests.security.broken_app import spellings
from tests.security.live_server import raw_request

ROOT = Path(__file__).resolve().parents[2]
ACCESS_FORMAT = '%(h)s "%(r)s" %(s)s path=%(U)s query=%(q)s ref="%(f)s"'


#: The two documented ways: CatLoader's gunicorn file, or ``redact_request_logs(app)``;
#: and neither, the positive control that shows the test can see a token.
WAYS = {
    "config-file": (["-c", "python:example_catloader.gunicorn_conf"], "0"),
    "redact_request_logs": ([], "1"),
    "neither": ([], "0"),
}


@pytest.fixture(params=list(WAYS))
def gunicorn(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Path, str]]:
    """A gunicorn server (1 worker, debug log, access log on), its output file, the way."""
    way: str = request.param
    config, redact = WAYS[way]
    port = free_port()
    log = tmp_path / "gunicorn.log"
    command = [
        sys.executable, "-m", "gunicorn", *config,
        "--bind", f"127.0.0.1:{port}", "--workers", "1", "--log-level", "debug",
        "--access-logfile", "-", "--error-logfile", "-", "--access-logformat", ACCESS_FORMAT,
        "--no-control-socket", "tests.security.broken_app:create_app()",
    ]  # fmt: skip
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
        "TEST_DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}",
        "TEST_REDACT_REQUEST_LOGS": redact,
    }
    with open(log, "wb") as out:
        server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            try:
                if raw_request(base, "GET", "/confirm/resend", {}) == 200:
                    break
            except OSError:
                time.sleep(0.05)
        yield base, log, way
    finally:
        server.terminate()
        server.wait(15)


def test_gunicorn_prints_no_token(gunicorn: tuple[str, Path, str]) -> None:
    base, log, way = gunicorn
    token = LinkTokenSigner(LINK_SECRET, lifetime=timedelta(hours=1)).issue("1", "cat@example.org")
    statuses = [raw_request(base, *spelling) for spelling in spellings("/confirm", token)]
    referred = {"Referer": f"https://app.example.com/confirm/{token}"}
    assert raw_request(base, "GET", "/confirm/resend", referred) == 200
    assert statuses.count(500) >= 7, statuses  # the route ran, and raised
    time.sleep(0.2)  # the access line of the last request is written after its answer
    output = log.read_text()
    signature = token.rsplit(".", 1)[1]
    if way == "neither":  # positive control: without a filter, gunicorn prints the token
        assert f"[DEBUG] GET /confirm/{token}" in output and f"path=/confirm/{token}" in output
        return
    # The paths, debug lines and exceptions were printed, redacted.
    assert "[DEBUG] GET /confirm/[redacted]" in output, output
    assert '"GET /confirm/[redacted] HTTP/1.1" 500' in output, output
    assert output.count("Exception on /confirm/[redacted]") == statuses.count(500), output
    assert "RuntimeError: the database went away while checking [redacted]" in output
    assert "path=/confirm/resend" in output, "route names stay readable"
    for part in (token, signature, token.split(".")[1]):
        assert part not in output, output
