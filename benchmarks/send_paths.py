"""The send path's parts, measured: the figures the code's comments quote.

``python -m benchmarks.send_paths`` (about 30 s) prints, each against its alternative
measured in the same run:

- signing a link token: PyJWT's ``jwt.encode`` vs
  :class:`~flask_confirm_mail.tokens.TokenEncoder` (CPU per token);
- writing the confirmation email: :func:`~flask_confirm_mail.smtp.write_message` vs the
  standard library's ``MIMEMultipart`` built and generated (CPU per message);
- the SQLite watcher's read of ``PRAGMA data_version``: the driver's cursor vs
  SQLAlchemy's ``exec_driver_sql`` (per read);
- SMTP on loopback: a message on a kept connection vs a connection per message
  (connect, EHLO, send, QUIT), the server answering at once;
- ``MAIL FROM``/``RCPT TO`` addresses: smtplib's ``quoteaddr`` (``parseaddr`` again) for
  both, per message;
- clearing bounce marks for a batch of 32 deliveries on a SQLite file: one ``DELETE ...
  IN`` in the transaction that records them vs a transaction per message;
- the outbox statements of one email sent alone (expire, claim, store its code, record it
  sent) on a SQLite file: built for each call vs built once per table, as
  :mod:`flask_confirm_mail.outbox` does (CPU per email);
- threads vs asyncio for 32 emails in flight against a server answering after 100 ms:
  :class:`~flask_confirm_mail.smtp.SMTPSessionPool` from 32 threads (what a delivery
  process runs) vs aiosmtplib, 32 connections on one event loop: messages per second
  and this process's CPU per message.
"""

from __future__ import annotations

import argparse
import asyncio
import smtplib
import sqlite3
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any

import aiosmtplib
import jwt
import sqlalchemy as sa
from flask_sqlalchemy import SQLAlchemy

from benchmarks.smtp_sink import SinkProcess
from flask_confirm_mail import outbox
from flask_confirm_mail.smtp import SMTPSessionPool, SMTPSettings, write_message
from flask_confirm_mail.tokens import LINK_AUDIENCE, LINK_TOKEN_TYPE, TokenEncoder

SENDER = ("CatLoader", "noreply@app.example.com")
LINK = "https://app.example.com/confirm/" + "eyJhbGciOiJIUzI1NiJ9." + "x" * 200
TEXT = f"Welcome to CatLoader!\n\nConfirm your address:\n{LINK}\n\nThe link works for 24 hours.\n"
HTML = f'<p>Welcome to CatLoader!</p><p><a href="{LINK}">Confirm your address</a></p>\n'


def _cpu_per_call(action: Callable[[], object], count: int) -> float:
    """CPU seconds per call of ``action``, over ``count`` calls."""
    start = time.process_time()
    for _ in range(count):
        action()
    return (time.process_time() - start) / count


def _ours(number: int = 0) -> bytes:
    return write_message(
        subject="Confirm your email address",
        sender=SENDER,
        recipient=f"cat{number}@example.org",
        text=TEXT,
        html=HTML,
        message_id=f"<bench-{number}@app.example.com>",
    )


def _mime_multipart() -> bytes:
    message = MIMEMultipart("alternative")
    message["Subject"] = "Confirm your email address"
    message["From"] = "CatLoader <noreply@app.example.com>"
    message["To"] = "cat@example.org"
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid(domain="app.example.com")
    message.attach(MIMEText(TEXT, "plain", "utf-8"))
    message.attach(MIMEText(HTML, "html", "utf-8"))
    return message.as_bytes()


def address_quoting(count: int) -> None:
    def both() -> None:
        smtplib.quoteaddr("noreply@app.example.com")
        smtplib.quoteaddr("cat123@example.org")

    print(f"smtplib's quoteaddr of MAIL FROM and RCPT TO ({count} messages):")
    print(f"  CPU us per message                 {_cpu_per_call(both, count) * 1e6:7.1f}")


def token_signing(count: int) -> None:
    claims = {"sub": "1", "email": "cat@example.org", "aud": LINK_AUDIENCE, "iat": 1,
              "exp": 2, "jti": "0123456789abcdef"}  # fmt: skip
    key = b"k" * 32
    encoder = TokenEncoder(key, typ=LINK_TOKEN_TYPE)
    header = {"typ": LINK_TOKEN_TYPE}
    assert encoder.encode(claims) == jwt.encode(claims, key, algorithm="HS256", headers=header)
    pyjwt = _cpu_per_call(lambda: jwt.encode(claims, key, algorithm="HS256", headers=header), count)
    ours = _cpu_per_call(lambda: encoder.encode(claims), count)
    print(f"sign a link token ({count} tokens), CPU us per token:")
    print(f"  jwt.encode                         {pyjwt * 1e6:7.1f}  1.00x")
    print(f"  TokenEncoder                       {ours * 1e6:7.1f}  {ours / pyjwt:.2f}x")


def message_writing(count: int) -> None:
    ours = _cpu_per_call(_ours, count)
    stdlib = _cpu_per_call(_mime_multipart, count)
    print(f"write the email ({count} messages), CPU ms per message:")
    print(f"  MIMEMultipart built and generated  {stdlib * 1000:7.3f}  1.00x")
    print(f"  write_message                      {ours * 1000:7.3f}  {ours / stdlib:.2f}x")


def data_version_reads(directory: Path, count: int) -> None:
    path = directory / "watch.db"
    sqlite3.connect(path).close()
    engine = sa.create_engine(f"sqlite:///{path}")
    with engine.connect() as conn:
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        driver = _cpu_per_call(lambda: cursor.execute("PRAGMA data_version").fetchone(), count)
        alchemy = _cpu_per_call(
            lambda: conn.exec_driver_sql("PRAGMA data_version").fetchone(), count
        )
    engine.dispose()
    print(f"PRAGMA data_version ({count} reads), CPU us per read:")
    print(f"  SQLAlchemy exec_driver_sql         {alchemy * 1e6:7.1f}  1.00x")
    print(f"  the driver's cursor                {driver * 1e6:7.1f}  {driver / alchemy:.2f}x")


def smtp_connections(port: int, count: int) -> None:
    data = _ours()
    recipient = ["cat0@example.org"]

    def per_message() -> None:
        with smtplib.SMTP("127.0.0.1", port) as client:
            client.sendmail("noreply@app.example.com", recipient, data)

    with smtplib.SMTP("127.0.0.1", port) as kept:
        reused = _wall_per_call(
            lambda: kept.sendmail("noreply@app.example.com", recipient, data), count
        )
    fresh = _wall_per_call(per_message, count)
    print(f"SMTP on loopback, server answering at once ({count} messages), ms per message:")
    print(f"  a connection per message           {fresh * 1000:7.3f}  1.00x")
    print(f"  one kept connection                {reused * 1000:7.3f}  {reused / fresh:.2f}x")
    print(f"  the reconnection's cost            {(fresh - reused) * 1000:7.3f}")


def _wall_per_call(action: Callable[[], object], count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        action()
    return (time.perf_counter() - start) / count


def bounce_clearing(directory: Path, batches: int, batch: int = 32) -> None:
    engine = sa.create_engine(f"sqlite:///{directory / 'marks.db'}")
    metadata = sa.MetaData()
    marks = sa.Table("marks", metadata, sa.Column("address", sa.String(254), primary_key=True))
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(marks), [{"address": f"marked{i}@example.org"} for i in range(1000)])
    addresses = [f"cat{i}@example.org" for i in range(batch)]

    def one_delete() -> None:
        with engine.begin() as conn:
            conn.execute(sa.delete(marks).where(marks.c.address.in_(addresses)))

    def per_message() -> None:
        for address in addresses:
            with engine.begin() as conn:
                conn.execute(sa.delete(marks).where(marks.c.address == address))

    grouped = _wall_per_call(one_delete, batches) / batch
    separate = _wall_per_call(per_message, batches) / batch
    engine.dispose()
    print(f"clear bounce marks, SQLite file ({batches} batches of {batch}), ms per message:")
    print(f"  a transaction per message          {separate * 1000:7.3f}  1.00x")
    print(f"  one DELETE ... IN per batch        {grouped * 1000:7.3f}  {grouped / separate:.2f}x")


def outbox_statements(directory: Path, count: int) -> None:
    """The delivery statements of one email each, run on a SQLite file, rolled back."""
    engine = sa.create_engine(f"sqlite:///{directory / 'outbox.db'}")
    db = SQLAlchemy(metadata=sa.MetaData())
    table = outbox.outbox_model_for(db).__table__
    table.metadata.create_all(engine)
    now = outbox.utcnow()
    with engine.begin() as conn:
        row = {"user_id": "1", "recipient": "cat@example.org", "purpose": "signup"}
        row.update(status=outbox.PENDING, attempts=0, due_at=now, created_at=now)
        row.update(message_id="<cat@app.example.com>", locale="en")
        conn.execute(table.insert(), [row])

    def one_email(conn: sa.Connection, fresh: bool) -> None:
        if fresh:  # what every call did before: build each statement anew
            table.info.pop("confirm_mail_statements", None)
        outbox.expire_exhausted(conn, table, 5)
        fields: dict[str, Any] = {"worker_id": "w", "limit": 64, "lease": timedelta(minutes=2)}
        rows = outbox.claim(conn, table, ids=[1], max_attempts=5, **fields)
        outbox.store_codes(conn, table, {rows[0].id: "d" * 64}, now)
        outbox.mark_sent(conn, table, [rows[0].id], "w")

    figures = {}
    with engine.connect() as conn:
        for fresh in (True, False, True, False):  # interleaved, the second of each kept
            start = time.process_time()
            for _ in range(count):
                one_email(conn, fresh)
                conn.rollback()
            figures[fresh] = (time.process_time() - start) / count
    engine.dispose()
    built, prepared = figures[True], figures[False]
    print(f"outbox statements of one email, SQLite file ({count} emails), CPU ms per email:")
    print(f"  built for each call                {built * 1000:7.3f}  1.00x")
    print(f"  built once per table               {prepared * 1000:7.3f}  {prepared / built:.2f}x")


def threads_vs_asyncio(port: int, count: int, in_flight: int = 32) -> None:
    data = [_ours(i) for i in range(count)]
    sender = "noreply@app.example.com"
    pool = SMTPSessionPool(SMTPSettings("127.0.0.1", port), max_open=in_flight, max_idle=in_flight)

    def threaded() -> None:
        with ThreadPoolExecutor(in_flight) as senders:
            list(
                senders.map(
                    lambda i: pool.send(sender, f"cat{i}@example.org", data[i]), range(count)
                )
            )

    async def with_asyncio() -> None:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(count):
            queue.put_nowait(i)

        async def connection() -> None:
            client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port)
            await client.connect()
            while not queue.empty():
                i = queue.get_nowait()
                await client.sendmail(sender, [f"cat{i}@example.org"], data[i])
            await client.quit()

        await asyncio.gather(*(connection() for _ in range(in_flight)))

    results = {}
    for name, run in (
        ("threads: SMTPSessionPool", threaded),
        ("asyncio: aiosmtplib", lambda: asyncio.run(with_asyncio())),
    ):
        run()  # warm-up: connections opened, code paths loaded
        cpu, wall = time.process_time(), time.perf_counter()
        run()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        results[name] = (count / wall, cpu / count)
    pool.close()
    base_rate, base_cpu = results["threads: SMTPSessionPool"]
    print(f"{in_flight} in flight, server answering after 100 ms ({count} messages):")
    print(f"  {'':33}  msg/s  ratio  CPU ms/msg  ratio")
    for name, (rate, cpu) in results.items():
        print(
            f"  {name:33} {rate:6.1f}  {rate / base_rate:.2f}x  {cpu * 1000:10.3f}  "
            f"{cpu / base_cpu:.2f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="tiny sizes (a smoke run)")
    small = parser.parse_args().small
    with tempfile.TemporaryDirectory(prefix="bench-send-") as work:
        directory = Path(work)
        token_signing(50 if small else 5000)
        message_writing(50 if small else 2000)
        data_version_reads(directory, 200 if small else 20000)
        address_quoting(200 if small else 20000)
        bounce_clearing(directory, 2 if small else 50)
        outbox_statements(directory, 10 if small else 1000)
        with SinkProcess() as sink:
            smtp_connections(sink.port, 20 if small else 500)
        with SinkProcess(delay=0.1) as slow:
            threads_vs_asyncio(slow.port, 64 if small else 640)


if __name__ == "__main__":
    main()
