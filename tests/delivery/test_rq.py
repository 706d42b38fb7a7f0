"""RQ delivery as docs/recipes/rq.rst shows it: the page's module (docs/recipes/rq_app.py,
imported as ``rq_app`` by the tests and by real ``rq worker`` processes on redis-server),
SMTP to a sink, the app on a SQLite file. The periodic step is the page's cron command,
``flask --app rq_app confirm-mail worker --once``. Each test counts emails requested,
delivered, duplicated and lost (issue 36)."""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import uuid
import zlib
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from redis import Redis
from rq import Queue
from rq.job import Job, JobStatus

from flask_confirm_mail.confirmation import get_flow
from flask_confirm_mail.outbox import SENT, utcnow
from tests.apps import SECRET_KEY
from tests.delivery.test_faults import tally, wait_until
from tests.support.redis_server import free_port
from tests.support.smtp_server import SMTPSink
from tests.test_outbox import ROOT

pytestmark = pytest.mark.slow

#: Where the recipe's module is: the workers and the cron command run from there.
RECIPES = ROOT / "docs" / "recipes"


class RQRig:
    """The recipe's app in-process (it signs users up), and ``rq worker`` processes and the
    cron command beside it, all configured through the same ``FLASK_*`` variables."""

    def __init__(
        self, monkeypatch: pytest.MonkeyPatch, directory: Path, smtp: SMTPSink, redis_url: str
    ) -> None:
        self.directory = directory
        self.redis_url = redis_url
        self.queue_name = f"cm-test-{uuid.uuid4().hex}"  # tests share the Redis server
        self.env = {
            "FLASK_SECRET_KEY": SECRET_KEY,
            "FLASK_SQLALCHEMY_DATABASE_URI": f"sqlite:///{directory / 'app.db'}",
            "FLASK_MAIL_SERVER": smtp.host,
            "FLASK_MAIL_PORT": str(smtp.port),
            "FLASK_RQ_REDIS_URL": redis_url,
            "FLASK_RQ_QUEUE": self.queue_name,
        }
        for name, value in self.env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.syspath_prepend(str(RECIPES))
        # The name the workers import it by: the jobs name their function rq_app.deliver_emails.
        self.module: ModuleType = importlib.import_module("rq_app")
        self.app: Flask = self.module.create_app()
        self.workers: list[tuple[subprocess.Popen[bytes], Path]] = []

    def queue(self) -> Queue:
        return Queue(self.queue_name, connection=Redis.from_url(self.redis_url))

    def _env(self) -> dict[str, str]:
        # This checkout's package first, whatever the virtualenv installed.
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        return dict(os.environ, **self.env, PYTHONPATH=path)

    def start_worker(self, worker_class: str = "rq.Worker") -> None:
        """``rq worker`` on the queue, from the recipe's directory as a deployment runs it."""
        name = f"w{len(self.workers)}-{self.queue_name}"
        log = self.directory / f"{name}.log"
        command = [
            sys.executable, "-m", "rq.cli", "worker", "--url", self.redis_url,
            "--worker-class", worker_class, "--name", name, self.queue_name,
        ]  # fmt: skip
        with log.open("wb") as output:
            process = subprocess.Popen(
                command, cwd=RECIPES, env=self._env(), stdout=output, stderr=subprocess.STDOUT
            )
        self.workers.append((process, log))
        wait_until(lambda: b"Listening on" in log.read_bytes() or process.poll() is not None, 60)
        assert process.poll() is None, log.read_text()

    def stop_workers(self) -> str:
        """Warm shutdown (SIGTERM): a running job finishes. Returns the workers' logs."""
        for process, _ in self.workers:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process, _ in self.workers:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        return "\n".join(log.read_text() for _, log in self.workers)

    def periodic_step(self) -> str:
        """The recipe's cron command, once; returns its output."""
        command = [sys.executable, "-m", "flask", "--app", "rq_app", "confirm-mail", "worker"]
        result = subprocess.run(
            [*command, "--once"], cwd=RECIPES, env=self._env(), capture_output=True,
            text=True, timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout + result.stderr

    def sign_up(self, addresses: list[str]) -> None:
        client = self.app.test_client()
        for address in addresses:
            assert client.post("/signup", data={"email": address}).status_code == 201

    def rows(self) -> list[Any]:
        with self.app.app_context():
            flow = get_flow()
            model = flow.outbox_model
            return list(flow.db.session.scalars(sa.select(model).order_by(model.id)))

    def make_retries_due(self) -> None:
        """As if the retries' backoff had passed."""
        with self.app.app_context():
            flow = get_flow()
            model = flow.outbox_model
            due = utcnow() - timedelta(seconds=1)
            flow.db.session.execute(sa.update(model).where(model.status != SENT).values(due_at=due))
            flow.db.session.commit()

    def wait_until_sent(self, count: int, timeout: float) -> None:
        def all_sent() -> bool:
            rows = self.rows()
            return len(rows) == count and {row.status for row in rows} == {SENT}

        try:
            wait_until(all_sent, timeout)
        except AssertionError:
            rows = [(row.id, row.status, row.attempts) for row in self.rows()]
            raise AssertionError(f"not all sent: {rows}\n{self.stop_workers()}") from None

    def close(self) -> None:
        self.stop_workers()
        with self.app.app_context():
            db = get_flow().db
            db.session.remove()
            db.engine.dispose()


@pytest.fixture
def rig(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, smtp_server: SMTPSink
) -> Iterator[Callable[[str], RQRig]]:
    rigs: list[RQRig] = []

    def build(redis_url: str) -> RQRig:
        rigs.append(RQRig(monkeypatch, tmp_path, smtp_server, redis_url))
        return rigs[-1]

    yield build
    for each in rigs:
        each.close()


def addresses(count: int, prefix: str = "cat") -> list[str]:
    return [f"{prefix}{i}@example.org" for i in range(count)]


def wait_until_finished(jobs: list[Job], timeout: float = 60) -> None:
    ended = {JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED}
    wait_until(lambda: all(job.get_status() in ended for job in jobs), timeout)
    assert [job.get_status() for job in jobs] == [JobStatus.FINISHED] * len(jobs)


def test_sign_ups_handed_to_rq_are_delivered_once_each(
    rig: Any, redis_url: str, smtp_server: SMTPSink
) -> None:
    setup = rig(redis_url)
    setup.start_worker()  # RQ's default: a work horse forked for each job
    setup.start_worker("rq.SimpleWorker")  # each job in the worker's own process
    requested = addresses(20)
    setup.sign_up(requested)
    setup.wait_until_sent(20, 90)
    logs = setup.stop_workers()
    assert tally(smtp_server, requested) == {
        "requested": 20,
        "delivered": 20,
        "duplicated": 0,
        "lost": 0,
    }, logs
    assert {row.attempts for row in setup.rows()} == {1}
    jobs_run = [log.read_text().count("Job OK") for _, log in setup.workers]
    assert sum(jobs_run) == 20 and min(jobs_run) >= 1, logs  # each kind of worker ran some


def test_a_job_run_three_times_sends_once_and_carries_only_ids(
    rig: Any, redis_url: str, smtp_server: SMTPSink
) -> None:
    setup = rig(redis_url)
    setup.sign_up(["twice@example.org"])  # no worker yet: the job waits in the queue
    [row] = setup.rows()
    queue = setup.queue()
    [first] = queue.jobs
    assert (first.func_name, first.args, first.kwargs) == ("rq_app.deliver_emails", ([row.id],), {})
    stored = queue.connection.hgetall(first.key)  # the job's hash: its pickled call compressed
    values = [zlib.decompress(stored.pop(b"data")), *stored.values()]
    assert not any(b"twice" in value or b"example.org" in value for value in values)

    second = queue.enqueue(setup.module.deliver_emails, [row.id])  # a second copy
    smtp_server.delay = 1.0  # two workers: the second copy mostly runs while the first sends
    setup.start_worker()
    setup.start_worker("rq.SimpleWorker")
    wait_until_finished([first, second])
    third = queue.enqueue(setup.module.deliver_emails, [row.id])  # and one once it has gone
    wait_until_finished([third])
    logs = setup.stop_workers()
    assert sorted(job.return_value() for job in (first, second, third)) == [0, 0, 1], logs
    assert tally(smtp_server, ["twice@example.org"])["duplicated"] == 0
    assert len(smtp_server.messages) == 1
    assert [(row.status, row.attempts) for row in setup.rows()] == [(SENT, 1)]


def test_lost_jobs_and_due_retries_are_sent_by_the_periodic_step(
    rig: Any, redis_url: str, smtp_server: SMTPSink
) -> None:
    setup = rig(redis_url)
    requested = addresses(10)
    setup.sign_up(requested)
    queue = setup.queue()
    assert queue.count == 10
    queue.empty()  # every job is lost, as in a Redis restart without persistence
    setup.start_worker()  # a worker on the empty queue sends nothing
    smtp_server.fail_next(2, code=451)  # two of them fail once, to be retried
    output = setup.periodic_step()
    assert "8 sent, 2 to retry, 0 dead" in output, output
    setup.make_retries_due()
    output = setup.periodic_step()
    assert "2 sent, 0 to retry, 0 dead" in output, output
    logs = setup.stop_workers()
    assert tally(smtp_server, requested) == {
        "requested": 10,
        "delivered": 10,
        "duplicated": 0,
        "lost": 0,
    }, logs
    assert sorted(row.attempts for row in setup.rows()) == [1] * 8 + [2] * 2
    assert "Job OK" not in logs


def test_a_sign_up_while_redis_is_down_is_saved_and_sent_by_the_periodic_step(
    rig: Any, smtp_server: SMTPSink, caplog: pytest.LogCaptureFixture
) -> None:
    setup = rig(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    setup.sign_up(["offline@example.org"])
    assert "Could not enqueue 1 confirmation email(s)" in caplog.text
    assert [row.status for row in setup.rows()] == ["pending"]
    assert "1 sent, 0 to retry, 0 dead" in setup.periodic_step()
    assert tally(smtp_server, ["offline@example.org"])["delivered"] == 1
