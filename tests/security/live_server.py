"""Running a WSGI app on a real, threaded werkzeug server on a free loopback port."""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from werkzeug.serving import make_server


def closed_before_sent(app: Any) -> Any:
    """``app``, its responses closed before their body is sent (``buffered=True`` of the
    test client): the work a response runs at close (a resend's lookup and queueing) is
    done when the client has the answer, so a test's next step sees it."""

    def buffered(environ: Any, start_response: Any) -> list[bytes]:
        iterable = app(environ, start_response)
        try:
            return list(iterable)
        finally:
            close = getattr(iterable, "close", None)
            if close is not None:
                close()

    return buffered


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Serve ``app`` (through :func:`closed_before_sent`) while the block runs; yields its
    base URL."""
    server = make_server("127.0.0.1", 0, closed_before_sent(app), threaded=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def raw_request(base: str, method: str, target: str, headers: dict[str, str]) -> int:
    """Send ``target`` exactly as spelled (urllib would normalize it)."""
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        response.read()
        return int(response.status)
    finally:
        conn.close()
