"""The README's first command, run from a copy of the checkout, serves CatLoader.

The copy reuses this test run's virtual environment through ``CATLOADER_VENV`` (so
nothing is installed); everything else is what a newcomer gets: no configuration, no
instance folder, no mail server.
"""

from __future__ import annotations

import html
import http.cookiejar
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.catloader.web_client import csrf_token_in

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
NOT_COPIED = shutil.ignore_patterns(
    ".git",
    ".venv",
    "instance",
    "test-artifacts",
    "__pycache__",
    "*.egg-info",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    "_build",
    "build",
    "dist",
)


def readme_first_command() -> list[str]:
    """The first command of the README's Quickstart section, as words."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "## Quickstart" in readme, "README.md has no Quickstart section"
    section = readme.split("## Quickstart", 1)[1]
    block = re.search(r"```[a-z]*\n(.*?)```", section, re.S)
    assert block is not None, "the Quickstart section has no code block"
    lines = [line for line in block.group(1).splitlines() if line.strip()]
    return shlex.split(lines[0], comments=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Visitor:
    """A tiny HTTP client with cookies, like a browser without the rendering."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )

    def get(self, path: str) -> tuple[int, str]:
        try:
            with self.opener.open(self.base + path, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def post(self, path: str, form: dict[str, str]) -> tuple[int, str]:
        data = urllib.parse.urlencode(form).encode()
        with self.opener.open(self.base + path, data=data, timeout=10) as response:
            return response.status, response.read().decode()


@pytest.fixture
def checkout_copy(tmp_path: Path) -> Path:
    """The working tree as a fresh clone would have it, without environment or data."""
    copy = tmp_path / "checkout"
    shutil.copytree(REPO, copy, ignore=NOT_COPIED, symlinks=True)
    assert not (copy / "instance").exists() and not (copy / ".venv").exists()
    return copy


@pytest.fixture
def quickstart(checkout_copy: Path) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    """Run the README's first command in the copy; yield (base URL, process, copy)."""
    command = readme_first_command()
    assert command[0] == "scripts/demo"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLASK_", "CATLOADER_"))}
    env["CATLOADER_VENV"] = sys.prefix
    log = checkout_copy.parent / "demo.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [*command, "--port", str(port)],
            cwd=checkout_copy,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield f"http://127.0.0.1:{port}", process, checkout_copy
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(15)


def wait_until_serving(visitor: Visitor, process: subprocess.Popen[bytes], log: Path) -> str:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"scripts/demo exited with {process.returncode}:\n{log.read_text()}")
        try:
            status, body = visitor.get("/")
        except OSError:
            time.sleep(0.1)
            continue
        assert status == 200
        return body
    pytest.fail(f"CatLoader did not answer within 90 s:\n{log.read_text()}")


def test_readme_first_command_serves_catloader(
    quickstart: tuple[str, subprocess.Popen[bytes], Path],
) -> None:
    base, process, copy = quickstart
    visitor = Visitor(base)

    home = wait_until_serving(visitor, process, copy.parent / "demo.log")
    assert "CatLoader" in home and "Create an account" in home
    assert (copy / "instance" / "catloader.db").is_file()
    assert (copy / "instance" / "secret_key").is_file()

    # The newcomer's path: sign up, find the mail in the local mailbox, open its link.
    _, form = visitor.get("/auth/signup")
    status, uploads = visitor.post(
        "/auth/signup",
        {"csrf_token": csrf_token_in(form), "email": "first@example.com", "password": "meow-meow"},
    )
    assert status == 200 and "Please confirm your email address." in uploads
    deadline = time.monotonic() + 30
    while "mail-list__open" not in (mailbox := visitor.get("/dev/mailbox/")[1]):
        assert time.monotonic() < deadline, "no mail in the local mailbox"
        time.sleep(0.1)
    message_path = re.search(r'class="mail-list__open" href="([^"]+)"', mailbox).group(1)
    _, message = visitor.get(message_path)
    link = html.unescape(re.search(r'id="mail-link" href="([^"]+)"', message).group(1))
    assert link.startswith(f"{base}/confirm/")  # scripts/demo points links at its port
    status, confirm_page = visitor.get(link[len(base) :])
    assert status == 200 and "Confirm my email address" in confirm_page
