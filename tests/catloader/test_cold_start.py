"""Several gunicorn workers booting CatLoader on an empty SQLite file all come up.

Each worker creates the tables at boot; the losers of that race used to fail to boot
("table ... already exists"), and gunicorn then stopped the whole server. Left to the
scheduler, the workers rarely reached ``CREATE TABLE`` together (the test caught the
old code in about half of its runs); a barrier in gunicorn's ``post_fork`` hook now
holds every worker until all are forked, so they load the app, and create the tables,
at the same moment.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask

from example_catloader.models import db

ROOT = Path(__file__).resolve().parents[2]
BOOTS = 4
WORKERS = 6
#: A gunicorn config: each worker waits, before it loads the app, until all are forked.
BARRIER_CONFIG = """
import os, time

def post_fork(server, worker):
    folder = os.environ["COLD_START_BARRIER"]
    open(os.path.join(folder, str(os.getpid())), "w").close()
    deadline = time.monotonic() + 20
    while len(os.listdir(folder)) < int(os.environ["COLD_START_WORKERS"]):
        if time.monotonic() > deadline:
            break
        time.sleep(0.005)
"""


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
def test_workers_booting_together_on_an_empty_database_all_come_up(tmp_path: Path) -> None:
    gunicorn = Path(sys.executable).with_name("gunicorn")
    config = tmp_path / "barrier.conf.py"
    config.write_text(BARRIER_CONFIG)
    for boot in range(BOOTS):
        instance = tmp_path / f"boot{boot}"
        barrier = tmp_path / f"barrier{boot}"
        barrier.mkdir()
        port = _free_port()
        env = dict(
            _env(instance, port), COLD_START_BARRIER=str(barrier), COLD_START_WORKERS=str(WORKERS)
        )
        server = subprocess.Popen(
            [str(gunicorn), "-c", str(config), "-w", str(WORKERS), "-b", f"127.0.0.1:{port}",
             "example_catloader:create_app()"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
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


def test_a_booted_app_keeps_no_database_connection_for_its_forks(
    make_catloader: Callable[..., Flask],
) -> None:
    # gunicorn --preload loads the app once, then forks: a pooled connection would be
    # shared by every worker.
    app = make_catloader()
    with app.app_context():
        assert [engine.pool.checkedin() for engine in db.engines.values()] == [0]


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
