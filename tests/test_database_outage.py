"""Real database faults answer 503 with ``Retry-After``, never a 500, leave no half
sign-up, and the app serves again by itself once the database is back.

- PostgreSQL cut for 15 s (tests/support/tcp_proxy.py) under a steady stream of
  sign-ups to gunicorn, counting answers by status;
- a full SQLite file (``PRAGMA max_page_count`` on each connection);
- a read-only SQLite file under a server started on it; the server runs without
  ``CAP_DAC_OVERRIDE`` (``setpriv``) when the tests run as root, so the file mode binds.
"""

from __future__ import annotations

import http.client
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from tests.apps import SECRET_KEY, User, db
from tests.apps import create_app as create_test_app
from tests.mailer.process import _gunicorn_has_control_socket, free_port
from tests.support.fixtures import POSTGRES_URL_ENV, require_ci_or_skip
from tests.support.postgres import fresh_database_url
from tests.support.tcp_proxy import TCPProxy

ROOT = Path(__file__).resolve().parents[1]
OUTAGE_SECONDS = 15.0
LOAD_THREADS = 6
#: Capabilities that let root write a file whatever its mode; the read-only server drops them.
ROOT_OVERRIDES = "-dac_override,-dac_read_search"


# --- a served app: gunicorn running tests.worker_app ----------------------------------------


class Answer:
    def __init__(self, status: int, retry_after: str | None, body: str) -> None:
        self.status = status
        self.retry_after = retry_after
        self.body = body


def post(port: int, path: str, form: dict[str, str], accept: str = "text/html") -> Answer:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": accept}
        connection.request("POST", path, urllib.parse.urlencode(form), headers)
        response = connection.getresponse()
        body = response.read().decode(errors="replace")
        return Answer(response.status, response.getheader("Retry-After"), body)
    finally:
        connection.close()


@contextmanager
def served(database_url: str, log: Path, *, prefix: list[str] | None = None) -> Iterator[int]:
    """gunicorn (2 threads a worker) serving tests/apps.py's app on ``database_url``."""
    port = free_port()
    command = [
        *(prefix or []), sys.executable, "-m", "gunicorn", "-w", "2", "--threads", "4",
        "-b", f"127.0.0.1:{port}", "tests.worker_app:create_app()",
    ]  # fmt: skip
    if _gunicorn_has_control_socket():
        command.append("--no-control-socket")
    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        TEST_DATABASE_URL=database_url,
        TEST_SMTP_PORT="9",  # delivery is left to workers: nothing is sent
        FLASK_SECRET_KEY=SECRET_KEY,
        FLASK_TEST_SQLITE_TUNING="true",  # tune_sqlite: read-only connections are dropped
    )
    with log.open("wb") as output:
        server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=output, stderr=output)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, log.read_text()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            try:
                connection.request("GET", "/confirm/resend")
                connection.getresponse().read()
                break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
            finally:
                connection.close()
        yield port
    finally:
        server.terminate()
        server.wait(timeout=30)


def create_tables(database_url: str) -> None:
    """Create the test app's tables, as a deploy does before its web workers start: two
    gunicorn workers creating them at once on an empty database race (DuplicateTable)."""
    app = create_test_app(database_url, config={"MAIL_PORT": 9, "CONFIRM_MAIL_DELIVERY": "worker"})
    with app.app_context():
        db.engine.dispose()


def saved_state(database_url: str) -> tuple[set[str], Counter[str]]:
    """The users' addresses, and how many outbox rows each address has."""
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as connection:
            emails = set(connection.execute(sa.text("SELECT email FROM users")).scalars())
            rows = connection.execute(sa.text("SELECT recipient FROM confirm_mail_outbox"))
            return emails, Counter(rows.scalars())
    finally:
        engine.dispose()


def assert_no_half_sign_up(database_url: str, answered: set[str], in_flight: int) -> None:
    """Every sign-up answered 201 is saved with its one outbox row, every saved user has
    one, and only sign-ups whose commit was under way when the fault came are saved
    without a 201 (their answer was the 503 of a commit whose outcome was lost)."""
    emails, outbox_rows = saved_state(database_url)
    assert answered <= emails
    assert all(outbox_rows[email] == 1 for email in emails), outbox_rows
    assert set(outbox_rows) == emails
    assert len(emails - answered) <= in_flight


# --- PostgreSQL down for 15 s under load ------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.slow
def test_postgresql_down_under_load_is_503_never_500_and_recovers(
    tmp_path: Path, worker_id: str
) -> None:
    server_url = os.environ.get(POSTGRES_URL_ENV)
    if not server_url:
        require_ci_or_skip("PostgreSQL not available: run scripts/test, which starts one")
    direct = fresh_database_url(server_url, f"cm_outage_{worker_id}")
    create_tables(direct)  # once, before the workers start (docs/production.rst)
    target = sa.engine.make_url(direct)
    with TCPProxy(target.host or "127.0.0.1", target.port or 5432) as proxy:
        through_proxy = target.set(port=proxy.port).render_as_string(hide_password=False)
        answers: list[tuple[str, str, Answer]] = []
        phase = ["before"]
        stop = threading.Event()

        def sign_up_in_a_loop(n: int, port: int) -> None:
            i = 0
            while not stop.is_set():
                email = f"load{n}-{i}@example.org"
                accept = "application/json" if i % 2 else "text/html"
                current = phase[0]
                answers.append((current, email, post(port, "/signup", {"email": email}, accept)))
                i += 1
                time.sleep(0.05)

        with served(through_proxy, tmp_path / "gunicorn.log") as port:
            load = [
                threading.Thread(target=sign_up_in_a_loop, args=(n, port), daemon=True)
                for n in range(LOAD_THREADS)
            ]
            for thread in load:
                thread.start()
            time.sleep(2)
            phase[0] = "outage"
            proxy.cut()
            time.sleep(OUTAGE_SECONDS)
            phase[0] = "after"
            proxy.restore()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                recovered = [a for p, _, a in answers if p == "after" and a.status == 201]
                if len(recovered) >= 30:
                    break
                time.sleep(0.2)
            stop.set()
            for thread in load:
                thread.join(timeout=40)
        log = (tmp_path / "gunicorn.log").read_text()

    by_phase = {p: Counter(a.status for q, _, a in answers if q == p) for p in phase_names()}
    print(f"answers by phase: {by_phase}")  # shown with -s; e.g. outage: {503: 1500}
    errors = [line for line in log.splitlines() if "Error" in line or "Exception" in line]
    assert all(a.status in (201, 503) for _, _, a in answers), (by_phase, errors[-20:])
    assert by_phase["before"][201] > 0
    assert by_phase["outage"][503] > 0 and by_phase["outage"][500] == 0
    # A 503 says "try again" (Retry-After) unless the sign-up had committed before the fault
    # (reading the new user back failed): then it says the sign-up went through.
    saved = {email for _, email, a in answers if a.status == 503 and a.retry_after is None}
    assert all(
        a.retry_after == "30" or "went through" in a.body or '"saved":true' in a.body
        for _, _, a in answers if a.status == 503
    )  # fmt: skip
    assert by_phase["after"][201] >= 30, f"no recovery without a restart: {by_phase}"
    assert "Traceback" not in log and "Database unavailable on POST /signup" in log
    answered = {email for _, email, a in answers if a.status == 201} | saved
    assert_no_half_sign_up(direct, answered, in_flight=2 * 4)


def phase_names() -> tuple[str, ...]:
    return ("before", "outage", "after")


# --- a full SQLite file -----------------------------------------------------------------------


@pytest.fixture
def full_disk_app(build_app: Callable[..., Flask], tmp_path: Path) -> tuple[Flask, list[bool]]:
    """An app on a SQLite file that cannot grow while ``full[0]`` is true."""
    app = build_app(
        f"sqlite:///{tmp_path / 'app.db'}",
        config={"CONFIRM_MAIL_DELIVERY": "worker", "TEST_SQLITE_TUNING": True},
    )
    full = [False]

    def limit_growth(dbapi_connection: Any, record: Any) -> None:
        if full[0]:
            cursor = dbapi_connection.cursor()
            pages = cursor.execute("PRAGMA page_count").fetchone()[0]
            cursor.execute(f"PRAGMA max_page_count = {pages}")
            cursor.close()

    with app.app_context():
        sa.event.listen(db.engine, "connect", limit_growth)
        db.engine.dispose()
    return app, full


def _saved(app: Flask, email: str) -> tuple[int, int]:
    with app.app_context():
        users = db.session.query(User).filter_by(email=email).count()
        rows = db.session.execute(
            sa.text("SELECT count(*) FROM confirm_mail_outbox WHERE recipient = :e"), {"e": email}
        ).scalar_one()
        db.session.remove()
        return users, rows


def test_a_full_sqlite_file_is_a_503_with_nothing_half_saved_then_recovers(
    full_disk_app: tuple[Flask, list[bool]], caplog: pytest.LogCaptureFixture
) -> None:
    app, full = full_disk_app
    client = app.test_client()
    full[0] = True
    # The last pages still have room for a few rows; the first sign-up that needs a new
    # page finds the file full.
    for i in range(200):
        email = f"filler{i}@example.org"
        response = client.post("/signup", data={"email": email})
        if response.status_code != 201:
            break
    assert response.status_code == 503 and response.headers["Retry-After"] == "30"
    assert "Back in a minute" in response.get_data(as_text=True)
    assert _saved(app, email) == (0, 0)  # neither the user nor its email
    answer = client.post("/signup", data={"email": email}, headers={"Accept": "application/json"})
    assert answer.status_code == 503 and answer.json == {
        "status": "error",
        "error": "service unavailable",
        "saved": False,
    }
    assert any("Database unavailable on POST /signup" in r.getMessage() for r in caplog.records)

    full[0] = False  # space is freed: the pool dropped the connection that hit the limit
    assert client.post("/signup", data={"email": email}).status_code == 201
    assert _saved(app, email) == (1, 1)


@pytest.fixture
def small_volume(tmp_path: Path) -> Iterator[Path]:
    """A 600 KB file system of its own (tmpfs): a disk that really fills up."""
    volume = tmp_path / "volume"
    volume.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(volume)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if mounted.returncode != 0:
        require_ci_or_skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield volume
    finally:
        subprocess.run(["umount", "-l", str(volume)], check=False)


def test_a_full_volume_recovers_once_space_is_freed(
    build_app: Callable[..., Flask], small_volume: Path
) -> None:
    # The WAL keeps every page written since its last checkpoint: on a full volume it
    # holds the space, and without a checkpoint it fills any space freed again.
    app = build_app(
        f"sqlite:///{small_volume / 'app.db'}",
        config={"CONFIRM_MAIL_DELIVERY": "worker", "TEST_SQLITE_TUNING": True},
    )
    client = app.test_client()
    ballast = small_volume / "ballast"
    ballast.write_bytes(b"x" * 200_000)
    for i in range(500):
        if client.post("/signup", data={"email": f"filler{i}@example.org"}).status_code != 201:
            break
    else:
        pytest.fail("the volume never filled up")
    database = small_volume / "app.db"
    size_when_full = database.stat().st_size
    ballast.unlink()  # the operator frees space
    statuses = [
        client.post("/signup", data={"email": f"after{i}@example.org"}).status_code
        for i in range(10)
    ]
    assert statuses == [201] * 10
    assert database.stat().st_size > size_when_full, "the WAL was copied into the database"
    with app.app_context():
        db.engine.dispose()
    for path in small_volume.glob("app.db*"):  # room for the teardown's DROP TABLE
        path.unlink()


@pytest.fixture
def gone_database(database_that_goes_away: Callable[..., Any]) -> Any:
    """An app with a logged-in, unconfirmed user, and a switch that takes the file away."""
    return database_that_goes_away()


@pytest.mark.parametrize("accept", ["text/html", "application/json"])
def test_confirmed_required_answers_503_when_it_cannot_read_the_user(
    gone_database: Any, accept: str
) -> None:
    app, go_down = gone_database
    client = app.test_client()
    assert client.post("/signup", data={"email": "cat@example.org"}).status_code == 201
    assert client.get("/members", headers={"Accept": accept}).status_code in (302, 403)  # control
    go_down()
    response = client.get("/members", headers={"Accept": accept})
    assert response.status_code == 503 and response.headers["Retry-After"] == "30"
    if accept == "application/json":
        assert response.json == {"status": "error", "error": "service unavailable", "saved": False}


def test_an_apps_own_outage_handler_answers_for_signup_view(
    build_app: Callable[..., Flask], tmp_path: Path
) -> None:
    folder = tmp_path / "db"
    folder.mkdir()
    app = build_app(
        f"sqlite:///{folder / 'app.db'}",
        config={"CONFIRM_MAIL_DELIVERY": "worker", "TEST_SQLITE_TUNING": True},
    )

    @app.errorhandler(sa.exc.OperationalError)
    def own_page(error: Exception) -> Any:
        return "our own outage page", 503, {"Retry-After": "120"}

    with app.app_context():
        db.engine.dispose()
    shutil.rmtree(folder)
    try:
        response = app.test_client().post("/signup", data={"email": "dog@example.org"})
    finally:
        folder.mkdir()
    assert response.status_code == 503 and response.headers["Retry-After"] == "120"
    assert response.get_data(as_text=True) == "our own outage page"


# --- a read-only SQLite file, and a server started on it -------------------------------------


def test_a_server_started_on_a_read_only_file_serves_once_its_mode_is_restored(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "db"
    folder.mkdir()
    database = folder / "app.db"
    url = f"sqlite:///{database}"
    with served(url, tmp_path / "first.log") as port:  # creates the tables
        assert post(port, "/signup", {"email": "before@example.org"}).status == 201
    files = sorted(folder.glob("app.db*"))
    for path in files:
        path.chmod(0o444)
    prefix = ["setpriv", f"--bounding-set={ROOT_OVERRIDES}"] if os.geteuid() == 0 else []
    with served(url, tmp_path / "second.log", prefix=prefix) as port:  # the restart
        refused = post(port, "/signup", {"email": "during@example.org"})
        assert refused.status == 503 and refused.retry_after == "30", refused.body
        for path in folder.glob("app.db*"):  # what an operator restores: the file and its WAL
            path.chmod(0o644)
        accepted = [post(port, "/signup", {"email": f"after{i}@example.org"}) for i in range(8)]
        statuses = [a.status for a in accepted]  # each worker thread recovered
        assert statuses == [201] * 8, (tmp_path / "second.log").read_text()[-3000:]
    log = (tmp_path / "second.log").read_text()
    assert "Traceback" not in log and "Database unavailable on POST /signup" in log
    assert_no_half_sign_up(
        url, {"before@example.org"} | {f"after{i}@example.org" for i in range(8)}, in_flight=0
    )


_WRITE_AFTER_RESTORE = """
import os, sys
import sqlalchemy as sa
from flask_confirm_mail.sqlite import tune_sqlite

path = sys.argv[1]
engine = sa.create_engine(f"sqlite:///{path}", pool_size=1, max_overflow=0)
tune_sqlite(engine)
with engine.connect() as connection:  # opened while the WAL files are read-only
    connection.exec_driver_sql("SELECT count(*) FROM t").scalar()
for name in (f"{path}-wal", f"{path}-shm"):
    os.chmod(name, 0o644)
with engine.begin() as connection:
    connection.exec_driver_sql("INSERT INTO t VALUES (2)")
print("written")
"""


def test_a_connection_opened_while_only_the_wal_was_read_only_is_not_handed_out_after(
    tmp_path: Path,
) -> None:
    # An operator restoring modes file by file: the database is writable, its WAL and
    # shared-memory files not yet. SQLite keeps such a connection read-only for good.
    database = tmp_path / "app.db"
    leave_wal = (
        "import os, sqlite3, sys\n"
        "c = sqlite3.connect(sys.argv[1])\n"
        "c.execute('PRAGMA journal_mode = WAL'); c.execute('CREATE TABLE t (x)')\n"
        "c.execute('INSERT INTO t VALUES (1)'); c.commit()\n"
        "os._exit(0)\n"  # no close: the WAL and shared-memory files stay, as after a kill
    )
    subprocess.run([sys.executable, "-c", leave_wal, str(database)], check=True, timeout=30)
    for name in ("app.db-wal", "app.db-shm"):
        (tmp_path / name).chmod(0o444)
    prefix = ["setpriv", f"--bounding-set={ROOT_OVERRIDES}"] if os.geteuid() == 0 else []

    result = subprocess.run(
        [*prefix, sys.executable, "-c", _WRITE_AFTER_RESTORE, str(database)],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip

    assert result.stdout.strip() == "written", result.stderr
