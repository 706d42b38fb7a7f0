"""A tiny scripted HTTP server: records requests, answers what a test queued."""

from __future__ import annotations

import json
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Reply:
    status: int = 200
    body: bytes = b'{"error": 0, "msg": "All ok"}'
    #: Close the socket after answering, without saying so (a server dropping keep-alive).
    drop_after: bool = False
    #: Never answer (the client's read timeout must fire).
    hang: bool = False


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class StubState:
    replies: list[Reply] = field(default_factory=list)
    requests: list[Recorded] = field(default_factory=list)
    connections: set[tuple[str, int]] = field(default_factory=set)
    release: threading.Event = field(default_factory=threading.Event)

    def reply(self, status: int = 200, payload: object = None, **options: bool) -> None:
        body = json.dumps(payload if payload is not None else {"error": 0, "msg": "All ok"})
        self.replies.append(Reply(status, body.encode(), **options))


def _handler(state: StubState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _answer(self) -> None:
            state.connections.add(self.client_address)
            state.requests.append(Recorded(self.command, self.path, dict(self.headers)))
            reply = state.replies.pop(0) if state.replies else Reply()
            if reply.hang:
                state.release.wait(10)
                self.close_connection = True
                return
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)
            self.wfile.flush()
            if reply.drop_after:
                self.close_connection = True

        do_GET = do_POST = _answer

    return Handler


@contextmanager
def stub_http_server(
    tls: tuple[str, str] | None = None,
) -> Iterator[tuple[str, StubState]]:
    """Yield ``(base_url, state)`` of a running stub on 127.0.0.1.

    :param tls: ``(cert_path, key_path)``: serve https with that certificate.
    """
    state = StubState()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    scheme = "http"
    if tls is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*tls)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"{scheme}://127.0.0.1:{server.server_address[1]}/", state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()


def closed_port() -> int:
    """A loopback port nobody listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port
