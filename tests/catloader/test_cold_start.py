"""Several gunicorn workers booting CatLoader on an empty SQLite file all come up.

Each worker creates the tables at boot; the losers of that race used to fail to boot
("table ... already exists"), and gunicorn then stopped the whole server.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BOOTS = 5
WORKERS = 4


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _env(instance: Path, port: int) -> dict[str, str]:
    return dict(
        os.environ,
        FLASK_CATLOADER_INSTANCE_PATH=str(instance),
        FLASK_CONFIRM_MAIL_EXTERNAL_URL=f"http://127.0.0.1:{port}",
        PYTHONPATH=str(ROOT),
    )


def _serves(url: str, server: subprocess.Popen[bytes], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and server.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                return bool(answer.status == 200)
        except OSError:
            time.sleep(0.1)
    return False


@pytest.mark.slow
def test_four_workers_boot_on_an_empty_database(tmp_path: Path) -> None:
    gunicorn = Path(sys.executable).with_name("gunicorn")
    for boot in range(BOOTS):
        instance = tmp_path / f"boot{boot}"
        port = _free_port()
        server = subprocess.Popen(
            [str(gunicorn), "-w", str(WORKERS), "-b", f"127.0.0.1:{port}",
             "example_catloader:create_app()"],
            cwd=ROOT, env=_env(instance, port), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            served = _serves(f"http://127.0.0.1:{port}/", server)
            time.sleep(1.0)  # let the slower workers finish booting (or fail)
            alive = server.poll() is None
        finally:
            server.terminate()
            output = server.communicate(timeout=30)[0].decode()
        assert served and alive, f"boot {boot}:\n{output}"
        assert output.count("Booting worker") == WORKERS, output
        assert "Exception in worker process" not in output, output


def test_init_db_creates_the_tables(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "flask", "--app", "example_catloader", "init-db"]
    env = _env(tmp_path, 5000)
    for _ in range(2):  # a second run finds them and changes nothing
        done = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, done.stderr
        assert "tables are ready" in done.stdout
    database = next(tmp_path.glob("*.db"))
    tables = subprocess.run(
        [sys.executable, "-c", f"import sqlite3; print(sqlite3.connect({str(database)!r})"
         ".execute(\"select group_concat(name) from sqlite_master where type='table'\")"
         ".fetchone()[0])"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "confirm_mail_outbox" in tables and "catloader_pictures" in tables
