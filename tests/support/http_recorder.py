"""An HTTP server on 127.0.0.1 that records what is POSTed to it (the Marquez lineage API path)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.support.json_http import JsonHandler, LocalServer, running


class Recorder(LocalServer):
    def __init__(self, status: int) -> None:
        self.status = status
        self.requests: list[tuple[str, dict[str, Any]]] = []
        super().__init__(_Handler)

    def events(self, path: str = "/api/v1/lineage") -> list[dict[str, Any]]:
        return [body for request_path, body in self.requests if request_path == path]


class _Handler(JsonHandler):
    server: Recorder

    def do_POST(self) -> None:  # noqa: N802
        self.server.requests.append((self.path, self.read_json()))
        self.reply_json(self.server.status, {})


@contextmanager
def recording_server(status: int = 201) -> Iterator[Recorder]:
    with running(Recorder(status)) as server:
        yield server


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler], fake: Any) -> Iterator[Any]:
    """Serve `fake` on a free port of 127.0.0.1 through a subclass of `handler` that reaches it as
    `self.fake`; its `port` is set before it is yielded."""
    server = LocalServer(type("Handler", (handler,), {"fake": fake}))
    fake.port = server.port
    with running(server):
        yield fake


def closed_port() -> int:
    """A port on 127.0.0.1 with nothing listening."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
