"""Scenario 3: delivery throughput to a local SMTP server, messages per second.

The server answers at once unless ``--smtp-delay-ms`` asks it to wait before answering
each message (a real provider takes tens to hundreds of milliseconds).

- raw: :mod:`smtplib` over one connection, sending messages built before the clock
  starts: nothing but SMTP, the floor of any sender;
- ours: one delivery loop (what ``flask confirm-mail worker`` runs) draining pending
  outbox rows from a SQLite file: claiming, minting each link, rendering the templates,
  building the MIME message, sending over one connection per batch, recording;
- Flask-Mail's default: ``mail.send(message)`` per message, which opens and closes a
  connection each time (messages built before the clock starts).

Then, against servers answering in 100 ms and 300 ms (a real provider's range): one
delivery loop at ``CONFIRM_MAIL_CONCURRENCY`` 1, 8, 32 and 64, each rate shown as a share
of its ideal (concurrency / latency) and as a multiple of one connection's rate.
"""

from __future__ import annotations

import smtplib
import time
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY

from flask import Flask
from flask_mail import Mail, Message

from benchmarks.apps import SENDER, User, create_ours, ours_db
from benchmarks.context import BenchContext
from benchmarks.measure import interleaved, median
from benchmarks.report import Column, Row, ScenarioReport, Table, Target
from benchmarks.smtp_sink import SinkProcess
from flask_confirm_mail import send_confirmation
from flask_confirm_mail.confirmation import get_flow
from flask_confirm_mail.delivery import DeliveryLoop

KEY = "delivery_throughput"
TITLE = "3. Delivery throughput to a local SMTP server"
LINK = "https://app.example.com/confirm/" + "eyJhbGciOiJIUzI1NiJ9." + "x" * 200
TEXT = f"Hello,\n\nConfirm your address by opening this link:\n\n{LINK}\n\nIt works 48 hours.\n"
HTML = f'<p>Hello,</p><p><a href="{LINK}">Confirm your address</a></p><p>48 hours.</p>'


def prebuilt_message(index: int) -> bytes:
    """A confirmation-sized multipart message, as bytes."""
    message = EmailMessage(policy=SMTP_POLICY)
    message["Subject"] = "Confirm your email address"
    message["From"] = "CatLoader <noreply@app.example.com>"
    message["To"] = f"cat{index}@example.org"
    message["Message-ID"] = f"<raw{index}@app.example.com>"
    message.set_content(TEXT)
    message.add_alternative(HTML, subtype="html")
    return message.as_bytes()


class Raw:
    """smtplib over one connection; messages prebuilt, or built in the loop when ``build``."""

    def __init__(self, sink: SinkProcess, count: int, *, build: bool = False) -> None:
        self.sink = sink
        self.count = count
        self.build = build
        self.messages = [] if build else [prebuilt_message(i) for i in range(count)]
        #: This process's CPU seconds per message, one value per round.
        self.cpu: list[float] = []

    def round(self) -> float:
        start, cpu = time.perf_counter(), time.process_time()
        client = smtplib.SMTP(self.sink.host, self.sink.port, timeout=10)
        for index in range(self.count):
            data = prebuilt_message(index) if self.build else self.messages[index]
            client.sendmail("noreply@app.example.com", [f"cat{index}@example.org"], data)
        client.quit()
        self.cpu.append((time.process_time() - cpu) / self.count)
        return self.count / (time.perf_counter() - start)


class Ours:
    """One delivery loop draining ``count`` pending outbox rows per round."""

    def __init__(
        self, context: BenchContext, sink: SinkProcess, count: int, concurrency: int = 8
    ) -> None:
        self.app = create_ours(
            context.sqlite_url(f"delivery-c{concurrency}"),
            delivery="worker",
            smtp_port=sink.port,
            concurrency=concurrency,
        )
        self.deliverer = get_flow(self.app).deliverer
        self.count = count
        self.sink = sink
        self.cpu: list[float] = []
        with self.app.app_context():
            ours_db.session.add_all(User(email=f"cat{i}@example.org") for i in range(count))
            ours_db.session.commit()

    def enqueue(self) -> None:
        with self.app.app_context():
            for user in ours_db.session.query(User).all():
                send_confirmation(user)
            ours_db.session.commit()

    def round(self) -> float:
        self.enqueue()
        before = self.sink.count()
        loop = DeliveryLoop(self.app, self.deliverer)
        start, cpu = time.perf_counter(), time.process_time()
        total = loop.run(until_idle=True)
        elapsed = time.perf_counter() - start
        self.cpu.append((time.process_time() - cpu) / self.count)
        if total.sent != self.count or self.sink.count() - before != self.count:
            raise RuntimeError(f"the delivery loop sent {total.sent} of {self.count} messages")
        return self.count / elapsed

    def close(self) -> None:
        with self.app.app_context():
            ours_db.session.remove()
            ours_db.engine.dispose()


class FlaskMailDefault:
    """``mail.send`` per message: one connection each."""

    def __init__(self, sink: SinkProcess, count: int) -> None:
        self.app = Flask("bench_flask_mail")
        self.app.config.update(
            MAIL_SERVER=sink.host, MAIL_PORT=sink.port, MAIL_DEFAULT_SENDER=SENDER
        )
        self.mail = Mail(self.app)
        self.count = count

    def round(self) -> float:
        with self.app.app_context():
            messages = [
                Message(
                    "Confirm your email address",
                    recipients=[f"cat{i}@example.org"],
                    body=TEXT,
                    html=HTML,
                )
                for i in range(self.count)
            ]
            start = time.perf_counter()
            for message in messages:
                self.mail.send(message)
            return self.count / (time.perf_counter() - start)


def run(context: BenchContext) -> ScenarioReport:
    count = context.size(200, 60, 20)
    rounds = context.size(9, 3, 1)
    delay = context.delivery_smtp_delay
    report = ScenarioReport(
        KEY, TITLE, settings={"messages_per_round": count, "rounds": rounds, "smtp_delay_s": delay}
    )
    answers = f", SMTP answers after {delay * 1000:g} ms" if delay else ""
    table = Table(
        f"Messages per second (median of {rounds} rounds of {count} messages{answers})",
        [Column("rate", "msg/s", 1 if delay else 0)],
        baseline="raw",
    )
    report.tables.append(table)
    with SinkProcess(delay=delay) as sink:
        raw = Raw(sink, count)
        raw_built = Raw(sink, count, build=True)
        ours = Ours(context, sink, count)
        flask_mail = FlaskMailDefault(sink, count)
        try:
            context.log(f"{KEY}: {rounds} rounds of {count} messages")
            results = interleaved(
                {
                    "raw": raw.round,
                    "ours": ours.round,
                    "raw_built": raw_built.round,
                    "flask_mail": flask_mail.round,
                },
                rounds=rounds,
            )
        finally:
            ours.close()
    labels = {
        "raw": "raw smtplib, one connection, messages built beforehand",
        "ours": "ours: one worker (SQLite outbox)",
        "raw_built": "raw smtplib, one connection, EmailMessage built per message",
        "flask_mail": "Flask-Mail default, a connection per message",
    }
    for name, label in labels.items():
        table.rows.append(Row(name, label, rounds={"rate": results[name]}))
    ratio = table.ratio("ours", "rate")
    ours_rate, raw_rate = table.value("ours", "rate"), table.value("raw", "rate")
    report.targets.append(
        Target(
            KEY,
            "one worker / raw smtplib",
            "-" if ratio is None else f"{ratio:.2f} ({ours_rate:.0f} vs {raw_rate:.0f} msg/s)",
            ">= 0.8",
            None if ratio is None else ratio >= 0.8,
            note=_ceiling_note(raw, ours, raw_rate),
        )
    )
    report.settings["cpu_ms_per_message"] = {
        "raw": median(raw.cpu) * 1000,
        "ours": median(ours.cpu) * 1000,
    }
    for latency in (0.1, 0.3):
        _by_concurrency(context, report, latency)
    return report


CONCURRENCIES = (1, 8, 32, 64)


def _by_concurrency(context: BenchContext, report: ScenarioReport, latency: float) -> None:
    """One loop at each concurrency against a server answering in ``latency`` seconds."""
    rounds = context.size(3, 1)
    ms = f"{latency * 1000:g} ms"
    table = Table(
        f"Messages per second by CONFIRM_MAIL_CONCURRENCY, SMTP answers after {ms} "
        f"(median of {rounds} rounds; ratio: to concurrency 1)",
        [Column("rate", "msg/s", 1), Column("of_ideal", "of concurrency/latency", 2)],
        baseline="c1",
    )
    report.tables.append(table)
    cpu: dict[str, float] = {}
    with SinkProcess(delay=latency) as sink:
        for concurrency in CONCURRENCIES:
            count = max(context.size(20, 20, 5), concurrency * context.size(20, 10, 1))
            ours = Ours(context, sink, count, concurrency=concurrency)
            try:
                context.log(f"{KEY}: concurrency {concurrency} at {ms}, {count} messages")
                rates = [ours.round() for _ in range(rounds)]
            finally:
                ours.close()
            ideal = concurrency / latency
            table.rows.append(
                Row(
                    f"c{concurrency}",
                    f"concurrency {concurrency} (ideal {ideal:g} msg/s)",
                    rounds={"rate": rates, "of_ideal": [rate / ideal for rate in rates]},
                )
            )
            cpu[f"c{concurrency}"] = median(ours.cpu) * 1000
    report.settings[f"cpu_ms_per_message_at_{ms}"] = cpu
    report.targets.append(
        Target(
            KEY,
            f"CPU per message, concurrency 32 at {ms}",
            f"{cpu['c32']:.2f} ms (c1 {cpu['c1']:.2f}, c8 {cpu['c8']:.2f}, c64 {cpu['c64']:.2f})",
            "<= 1 ms",
            cpu["c32"] <= 1.0,
        )
    )
    at32 = table.value("c32", "rate")
    target = 200 if latency == 0.1 else 80
    report.targets.append(
        Target(
            KEY,
            f"concurrency 32 at {ms}",
            "-" if at32 is None else f"{at32:.0f} msg/s",
            f">= {target} msg/s",
            None if at32 is None else at32 >= target,
        )
    )


def _ceiling_note(raw: Raw, ours: Ours, raw_rate: float | None) -> str:
    """What the SMTP floor leaves: the best ratio a worker doing its work in turn can reach."""
    if not raw_rate or not raw.cpu or not ours.cpu:
        return ""
    smtp_ms = 1000 / raw_rate
    extra_ms = max(0.0, (median(ours.cpu) - median(raw.cpu)) * 1000)
    ceiling = smtp_ms / (smtp_ms + extra_ms)
    return (
        f"SMTP to the loopback server takes {smtp_ms:.2f} ms per message; the worker's own "
        f"work per message (link token, two templates, MIME, SQL) takes {extra_ms:.2f} ms of "
        f"CPU more than raw smtplib's, done in turn with SMTP: ceiling {ceiling:.2f}; 0.8 "
        f"needs at most {smtp_ms / 4:.2f} ms"
    )
