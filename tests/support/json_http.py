"""What every HTTP fake of the suite shares: a server on a free port of 127.0.0.1, served on a thread,
and a request handler that reads JSON bodies and query strings and writes JSON replies."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

Server = TypeVar("Server", bound=ThreadingHTTPServer)


@dataclass
class Request:
    """A request a fake received, as the tests read it back."""

    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    authorization: str | None = None


@dataclass
class SentRequest:
    """A request a fake received, with its path as sent (query string included)."""

    method: str
    path: str
    body: Any
    authorization: str | None


class LocalServer(ThreadingHTTPServer):
    """A threading HTTP server on a free port of 127.0.0.1."""

    daemon_threads = True
    scheme = "http"

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(("127.0.0.1", 0), handler)

    @property
    def port(self) -> int:
        return self.server_address[1]

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"


@contextmanager
def running(server: Server, name: str | None = None) -> Iterator[Server]:
    """`server` served on a daemon thread until the block ends, then shut down and closed."""
    # a short poll interval: shutting a fake down at the end of a test then takes 50 ms, not 500
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=name, daemon=True
    )
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class JsonHandler(BaseHTTPRequestHandler):
    """A handler that reads JSON bodies and query strings, writes JSON replies with their length, and
    logs nothing (the tests assert on what the fakes record instead)."""

    json_content_type = "application/json"

    def log_message(self, *args: Any) -> None:
        pass

    @property
    def url_path(self) -> str:
        """The request's path, without its query string."""
        return urlsplit(self.path).path

    def query(self) -> dict[str, list[str]]:
        """The query string's parameters, each with all its values."""
        return parse_qs(urlsplit(self.path).query)

    def query_last(self) -> dict[str, str]:
        """The query string's parameters, each with its last value."""
        return {key: values[-1] for key, values in self.query().items()}

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def read_json(self, empty: Any = None, *, invalid_as_text: bool = False) -> Any:
        """The body as JSON; `empty` when there is none. A body that is not JSON raises, or with
        `invalid_as_text` comes back as text, so a fake can record what a client got wrong."""
        raw = self.read_body()
        if not raw:
            return empty
        try:
            return json.loads(raw)
        except ValueError:
            if not invalid_as_text:
                raise
            return raw.decode(errors="replace")

    def reply(
        self,
        status: int,
        data: bytes = b"",
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
        message: str | None = None,
    ) -> None:
        """`data` with its Content-Type (none when None), its Content-Length and `headers`."""
        self.send_response(status, message)
        if content_type is not None:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if data:
            self.wfile.write(data)

    def reply_json(
        self,
        status: int,
        body: Any,
        headers: Mapping[str, str] | None = None,
        *,
        indent: int | None = None,
        separators: tuple[str, str] | None = None,
    ) -> None:
        data = json.dumps(body, indent=indent, separators=separators).encode()
        self.reply(status, data, self.json_content_type, headers)

    def reply_text(self, status: int, text: str, content_type: str = "text/plain") -> None:
        self.reply(status, text.encode(), content_type)
