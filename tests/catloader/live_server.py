"""CatLoader served over real HTTP on a free loopback port, in a thread of the test process."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, got_request_exception
from werkzeug.serving import BaseWSGIServer, make_server

from example_catloader.mailbox import Mailbox, StoredMail

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Any]


class LiveServer:
    """A threaded werkzeug server; the app is built once the port is known.

    ``build(base_url)`` returns the app to serve, so links in its emails can point at
    the server's real address. Exceptions inside requests are collected in
    :attr:`errors`.
    """

    def __init__(self, build: Callable[[str], Flask]) -> None:
        self._app: Flask | None = None
        self.server: BaseWSGIServer = make_server("127.0.0.1", 0, self._dispatch, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.app = build(self.url)
        self._app = self.app
        self.errors: list[BaseException] = []
        got_request_exception.connect(self._record_error, self.app)
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def _dispatch(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        assert self._app is not None
        return self._app(environ, start_response)

    def _record_error(self, sender: Flask, exception: BaseException, **_: Any) -> None:
        self.errors.append(exception)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(10)


def wait_for_mail(mailbox: Mailbox, count: int, timeout: float = 15.0) -> list[StoredMail]:
    """The mailbox's messages once it holds ``count``, newest first (delivery is async)."""
    deadline = time.monotonic() + timeout
    while True:
        messages = mailbox.messages()
        if len(messages) >= count:
            return messages
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(messages)} mail(s) in the mailbox after {timeout}s")
        time.sleep(0.02)
